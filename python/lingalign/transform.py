"""The Transform data object and its GGUF file format.

A transform holds, per layer, an affine map (h' = h + alpha * (h @ M + b - h)), an additive
vector (h' = h + alpha * v) or a neuron clamp on the MLP activation (z_m' = z_m + alpha *
(value_m - z_m) for the listed neurons m), plus the metadata that says where it comes from and what
it may be applied to. Files are GGUF (written and read with the `gguf` package): data only, no
code. Loading validates everything and refuses a bad file with a one-line TransformFileError.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import TransformFileError
from .errors import ModelFileError
from .model import ModelFingerprint, scan_gguf

ARCH = "lingalign"
FORMAT_VERSION = 1
POSITIONS = ("all", "last", "prompt", "generated")
MAX_ALPHA = 1e4  # far beyond any useful strength; larger values only overflow float32


def check_alpha(alpha: float) -> float:
    """alpha as a float, or TransformFileError if it is NaN, Inf or absurdly large."""
    a = float(alpha)
    if not np.isfinite(a) or abs(a) > MAX_ALPHA:
        raise TransformFileError(f"alpha {a:g} is out of range (a finite number within +-{MAX_ALPHA:g})")
    return a


Q8_MAX = 127  # quantized map differences use -127..127, symmetric around 0
Q4_MAX = 7  # and -7..7 in 4 bits (the file format also reads -8)


def quantize_delta(matrix: np.ndarray, q_max: int = Q8_MAX) -> tuple[np.ndarray, np.ndarray]:
    """(q, scale) with matrix ~= I + q * scale: M - I rounded per column to the nearest of
    2 q_max + 1 steps of scale = max |column| / q_max (error at most scale / 2 per entry; q_max 127
    for q8, 7 for q4). Quantizing the difference from the identity, not M itself, keeps the steps
    small: fitted maps are near I."""
    if not 1 <= q_max <= Q8_MAX:
        raise ValueError(f"q_max must be in 1..{Q8_MAX}")
    delta = np.asarray(matrix, dtype=np.float64) - np.eye(matrix.shape[0])
    scale = (np.abs(delta).max(axis=0) / q_max).astype(np.float32)
    step = np.where(scale > 0, scale.astype(np.float64), 1.0)
    q = np.clip(np.rint(delta / step), -q_max, q_max).astype(np.int8)
    return q, scale


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """int8 values -8..7, [d, d] with d even, as the file's 4-bit layout: [d, d/2] bytes (int8,
    as GGUF stores them), byte [j, k] holding q[j, 2k] + 8 in its low nibble and q[j, 2k+1] + 8 in
    its high one."""
    u = (q.astype(np.int16) + 8).astype(np.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).view(np.int8)


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """The inverse of pack_nibbles: [d, d/2] bytes -> [d, d] int8 values -8..7."""
    u = packed.view(np.uint8)
    out = np.empty((u.shape[0], 2 * u.shape[1]), dtype=np.int8)
    out[:, 0::2] = (u & 0x0F).astype(np.int8) - 8
    out[:, 1::2] = (u >> 4).astype(np.int8) - 8
    return out


_K = "lingalign."  # metadata key prefix
# tensor name suffix -> LayerMap field
_TENSOR_PARTS = {
    "map": "matrix",
    "delta_q8": "delta_q8",
    "delta_q4": "delta_q4",
    "delta_scale": "delta_scale",
    "lr_u": "lowrank_u",
    "lr_vt": "lowrank_vt",
    "bias": "bias",
    "vector": "vector",
    "clamp_index": "clamp_index",
    "clamp_value": "clamp_value",
}
_INT_PARTS = ("clamp_index",)  # stored as I32
_BYTE_PARTS = ("delta_q8", "delta_q4")  # stored as I8 (delta_q4: two 4-bit values per byte)
_HALF_PARTS = ("map", "lr_u", "lr_vt")  # F32, or F16 for float16 maps; every other tensor is F32
PRECISIONS = ("f32", "f16", "q8", "q4")
_F16_MAX = float(np.finfo(np.float16).max)
MAX_NEURON = 1 << 24


def write_gguf(path: str | os.PathLike[str], arch: str, fill: Callable[[Any], None]) -> None:
    """Write a GGUF file with the `gguf` package: `fill(writer)` adds metadata and tensors. Written
    under a temporary name and renamed, so a failed write never leaves a partial file."""
    import gguf

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, path)


@dataclass
class LayerMap:
    """The transform of one layer: an affine map, full (`matrix`) or low-rank (M = I + U @ Vt),
    with an optional `bias`; an additive `vector`; or a clamp of the MLP neurons `clamp_index`
    (int32) to `clamp_value`.

    `matrix` and the low-rank factors may be float16 (half the memory and the bytes the hook
    reads per token; the hook accumulates in float32), and a full map may be quantized to 8
    bits: M = I + delta_q8 * delta_scale (int8 [d, d], one float32 scale per column; a quarter
    of float32's bytes) or to 4 bits: the same with values -7..7 packed two per byte in
    `delta_q4` ([d, d/2], see `pack_nibbles`; an eighth). See `to_precision`. Everything else is
    float32. Numpy users of the map should go through `dense()`, which is float32.
    """

    matrix: np.ndarray | None = None  # [d, d] float32 or float16, y = h @ matrix
    delta_q8: np.ndarray | None = None  # [d, d] int8: M - I in steps of delta_scale
    delta_q4: np.ndarray | None = None  # [d, d/2] int8 bytes: M - I in steps, two per byte
    delta_scale: np.ndarray | None = None  # [d] float32, one step per column (output coordinate)
    bias: np.ndarray | None = None  # [d] float32
    vector: np.ndarray | None = None  # [d] float32, additive
    lowrank_u: np.ndarray | None = None  # [d, r] float32 or float16
    lowrank_vt: np.ndarray | None = None  # [r, d] float32 or float16 (the same as lowrank_u)
    clamp_index: np.ndarray | None = None  # [k] int32, neurons of the FFN activation
    clamp_value: np.ndarray | None = None  # [k] float32

    @property
    def kind(self) -> str:
        if self.matrix is not None or self.delta_q8 is not None or self.delta_q4 is not None:
            return "affine"
        if self.clamp_index is not None:
            return "clamp"
        return "lowrank" if self.lowrank_u is not None else "additive"

    @property
    def precision(self) -> str:
        """"q8" or "q4" for an 8- or 4-bit map, "f16" if the map or low-rank factors are stored as
        float16, else "f32"."""
        if self.delta_q8 is not None:
            return "q8"
        if self.delta_q4 is not None:
            return "q4"
        parts = (self.matrix, self.lowrank_u, self.lowrank_vt)
        return "f16" if any(a is not None and a.dtype == np.float16 for a in parts) else "f32"

    def dense(self) -> np.ndarray:
        """The map as a full [d, d] float32 matrix (affine or low-rank kinds; float16 maps are
        converted, exactly)."""
        if self.matrix is not None:
            return self.matrix.astype(np.float32, copy=False)
        quantized = self.delta_q8 if self.delta_q8 is not None else self.delta_q4
        if quantized is not None and self.delta_scale is not None:
            q = unpack_nibbles(quantized) if self.delta_q4 is not None else quantized
            d = q.shape[0]
            return np.eye(d, dtype=np.float32) + q.astype(np.float32) * self.delta_scale[None, :]
        if self.lowrank_u is None or self.lowrank_vt is None:
            raise TransformFileError("an additive vector has no matrix")
        u, vt = self.lowrank_u.astype(np.float64), self.lowrank_vt.astype(np.float64)
        return (np.eye(u.shape[0]) + u @ vt).astype(np.float32)

    def to_precision(self, precision: str, layer: int | None = None) -> LayerMap:
        """A copy whose map or low-rank factors are stored as float16 ("f16"), float32 ("f32") or,
        for a full map, 8 bits ("q8": M - I rounded to 255 steps per column) or 4 bits ("q4": 15
        steps per column, two per byte; needs an even width); low-rank factors, already small,
        become float16 for q8 and q4. Bias, vector and clamp stay as they are. float16 -> float32
        is exact; float32 -> float16 rounds to nearest, and values beyond float16's range
        (+-65504) raise TransformFileError. A quantized map converts from `dense()`."""
        if precision not in PRECISIONS:
            raise TransformFileError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
        if self.delta_q8 is not None or self.delta_q4 is not None:
            if precision == self.precision:
                return dataclasses.replace(self)
            dense = dataclasses.replace(self, matrix=self.dense(), delta_q8=None, delta_q4=None, delta_scale=None)
            return dense.to_precision(precision, layer)
        if precision in ("q8", "q4"):
            if self.matrix is None:
                return self.to_precision("f16", layer)
            if precision == "q8":
                q, scale = quantize_delta(self.matrix)
                return dataclasses.replace(self, matrix=None, delta_q8=q, delta_scale=scale)
            if self.matrix.shape[0] % 2:
                where = f"layer {layer}: " if layer is not None else ""
                raise TransformFileError(f"{where}4-bit maps need an even width, the map is {self.matrix.shape[0]} wide")
            q, scale = quantize_delta(self.matrix, Q4_MAX)
            return dataclasses.replace(self, matrix=None, delta_q4=pack_nibbles(q), delta_scale=scale)
        dtype = np.float16 if precision == "f16" else np.float32
        out = dataclasses.replace(self)
        for part in _HALF_PARTS:
            attr = _TENSOR_PARTS[part]
            array = getattr(self, attr)
            if array is None or array.dtype == dtype:
                continue
            if dtype == np.float16 and np.isfinite(array).all() and np.abs(array).max(initial=0.0) > _F16_MAX:
                where = f"layer {layer}: " if layer is not None else ""
                raise TransformFileError(f"{where}{part} has values beyond float16's range (+-{_F16_MAX:g})")
            setattr(out, attr, np.ascontiguousarray(array, dtype=dtype))
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors this layer stores, by file suffix."""
        out = {}
        for part, attr in _TENSOR_PARTS.items():
            array = getattr(self, attr)
            if array is not None:
                out[part] = array
        return out

    def validate(self, layer: int, n_embd: int) -> None:
        """Raise TransformFileError unless shapes, dtypes and values are usable."""
        kinds = [
            any(a is not None for a in (self.matrix, self.delta_q8, self.delta_q4, self.delta_scale)),
            self.lowrank_u is not None or self.lowrank_vt is not None,
            self.vector is not None,
            self.clamp_index is not None or self.clamp_value is not None,
        ]
        if sum(kinds) != 1:
            raise TransformFileError(
                f"layer {layer}: needs exactly one of a map, low-rank factors, a vector or a neuron clamp"
            )
        if self.clamp_index is not None or self.clamp_value is not None:
            self._validate_clamp(layer)
            return
        if sum(a is not None for a in (self.matrix, self.delta_q8, self.delta_q4)) > 1:
            raise TransformFileError(
                f"layer {layer}: needs exactly one of a map, an 8-bit map (delta_q8) and a 4-bit map (delta_q4)"
            )
        if self.delta_q8 is None and self.delta_q4 is None and self.delta_scale is not None:
            raise TransformFileError(f"layer {layer}: delta_scale belongs to an 8- or 4-bit map, and there is none")
        if self.delta_q8 is not None and self.delta_scale is None:
            raise TransformFileError(f"layer {layer}: an 8-bit map needs both delta_q8 and delta_scale")
        if self.delta_q4 is not None and self.delta_scale is None:
            raise TransformFileError(f"layer {layer}: a 4-bit map needs both delta_q4 and delta_scale")
        if self.delta_q4 is not None and n_embd % 2:
            raise TransformFileError(f"layer {layer}: 4-bit maps need an even n_embd, the model has {n_embd}")
        if (self.lowrank_u is None) != (self.lowrank_vt is None):
            raise TransformFileError(f"layer {layer}: low-rank maps need both factors (lr_u and lr_vt)")
        if self.vector is not None and self.bias is not None:
            raise TransformFileError(f"layer {layer}: a bias belongs to a map, not to a vector")
        if self.lowrank_u is not None and self.lowrank_vt is not None and self.lowrank_u.dtype != self.lowrank_vt.dtype:
            raise TransformFileError(
                f"layer {layer}: lr_u is {self.lowrank_u.dtype} and lr_vt {self.lowrank_vt.dtype}: both must be the same"
            )
        rank = self.lowrank_u.shape[-1] if self.lowrank_u is not None and self.lowrank_u.ndim == 2 else 0
        if self.lowrank_u is not None and not 1 <= rank <= n_embd:
            raise TransformFileError(f"layer {layer}: low-rank factor has rank {rank}, expected 1..{n_embd}")
        expected = {
            "map": (n_embd, n_embd),
            "delta_q8": (n_embd, n_embd),
            "delta_q4": (n_embd, n_embd // 2),
            "delta_scale": (n_embd,),
            "lr_u": (n_embd, rank),
            "lr_vt": (rank, n_embd),
            "bias": (n_embd,),
            "vector": (n_embd,),
        }
        for part, array in self.arrays().items():
            if array.shape != expected[part]:
                raise TransformFileError(
                    f"layer {layer}: {part} has shape {array.shape}, the model needs {expected[part]}"
                )
            if part in _BYTE_PARTS:
                if array.dtype != np.int8:
                    raise TransformFileError(f"layer {layer}: {part} is {array.dtype}, expected int8")
                if part == "delta_q8" and int(array.min(initial=0)) < -Q8_MAX:
                    raise TransformFileError(f"layer {layer}: {part} holds -128, outside -{Q8_MAX}..{Q8_MAX}")
                continue
            if array.dtype != np.float32 and not (part in _HALF_PARTS and array.dtype == np.float16):
                allowed = "float32 or float16" if part in _HALF_PARTS else "float32"
                raise TransformFileError(f"layer {layer}: {part} is {array.dtype}, expected {allowed}")
            if not np.isfinite(array).all():
                raise TransformFileError(f"layer {layer}: {part} contains NaN or Inf")

    def _validate_clamp(self, layer: int) -> None:
        index, value = self.clamp_index, self.clamp_value
        if index is None or value is None:
            raise TransformFileError(f"layer {layer}: a neuron clamp needs both clamp_index and clamp_value")
        if bool(self.bias is not None):
            raise TransformFileError(f"layer {layer}: a bias belongs to a map, not to a neuron clamp")
        if index.dtype != np.int32 or value.dtype != np.float32:
            raise TransformFileError(f"layer {layer}: clamp_index must be int32 and clamp_value float32")
        if index.ndim != 1 or value.shape != index.shape or index.size == 0:
            raise TransformFileError(
                f"layer {layer}: clamp_index {index.shape} and clamp_value {value.shape} must be equal, non-empty 1-D"
            )
        if index.min() < 0 or index.max() >= MAX_NEURON:
            raise TransformFileError(f"layer {layer}: clamp_index holds a neuron index out of range")
        if np.unique(index).size != index.size:
            raise TransformFileError(f"layer {layer}: clamp_index lists a neuron twice")
        if not np.isfinite(value).all():
            raise TransformFileError(f"layer {layer}: clamp_value contains NaN or Inf")


@dataclass
class Transform:
    """Per-layer alignment transforms for one model, with their provenance.

    `alpha` and `positions` are the defaults used when the caller gives none.
    """

    layers: dict[int, LayerMap]
    model: ModelFingerprint
    method: str
    source_lang: str = ""
    target_lang: str = "eng"
    alpha: float = 1.0
    positions: str = "all"
    fit_info: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise TransformFileError if the transform is inconsistent."""
        if not self.layers:
            raise TransformFileError("transform has no layers")
        for il, lm in self.layers.items():
            if not 0 <= il < self.model.n_layer:
                raise TransformFileError(f"unknown layer {il}: the model has layers 0..{self.model.n_layer - 1}")
            lm.validate(il, self.model.n_embd)
        if self.positions not in POSITIONS:
            raise TransformFileError(f"unknown position policy {self.positions!r} (one of {', '.join(POSITIONS)})")
        check_alpha(self.alpha)

    @property
    def precision(self) -> str:
        """"q8" or "q4" if any layer's map is 8- or 4-bit (the fewest bits found), else "f16" if any
        map or low-rank factors are float16, else "f32"."""
        found = {lm.precision for lm in self.layers.values()}
        return next((p for p in ("q4", "q8", "f16") if p in found), "f32")

    def to_precision(self, precision: str) -> Transform:
        """A copy with every map and low-rank factor stored as float16 ("f16": half the size on
        disk, in memory and in what the hook reads per token; the hook still accumulates in
        float32), float32 ("f32"), or full maps as 8 bits ("q8", a quarter) or 4 bits ("q4", an
        eighth; see `LayerMap.to_precision`). Biases, vectors and clamps stay float32. Raises
        TransformFileError for a map with values beyond float16's range."""
        layers = {il: lm.to_precision(precision, il) for il, lm in self.layers.items()}
        return dataclasses.replace(self, layers=layers, fit_info=dict(self.fit_info))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the transform as a GGUF file (bit-exact round trip): F32 tensors, F16 for maps
        and low-rank factors held as float16, and I8 for 8- and 4-bit maps."""
        import gguf

        self.validate()

        def fill(writer: Any) -> None:
            def add_str(key: str, value: str) -> None:
                # GGUFWriter.add_string drops empty strings; an empty value must still be present.
                writer.add_key_value(key, value, gguf.GGUFValueType.STRING)

            writer.add_uint32(_K + "format_version", FORMAT_VERSION)
            add_str(_K + "method", self.method)
            add_str(_K + "source_lang", self.source_lang)
            add_str(_K + "target_lang", self.target_lang)
            writer.add_float64(_K + "alpha", float(self.alpha))
            add_str(_K + "positions", self.positions)
            writer.add_array(_K + "layers", sorted(self.layers))
            m = self.model
            add_str(_K + "model.architecture", m.architecture)
            writer.add_uint32(_K + "model.n_embd", m.n_embd)
            writer.add_uint32(_K + "model.n_layer", m.n_layer)
            add_str(_K + "model.vocab_sha256", m.vocab_sha256)
            add_str(_K + "model.weights_sha256", m.weights_sha256)
            add_str(_K + "model.name", m.name)
            add_str(_K + "fit_info", json.dumps(self.fit_info, sort_keys=True))
            for il in sorted(self.layers):
                for part, array in self.layers[il].arrays().items():
                    if part in _INT_PARTS:
                        dtype: Any = np.int32
                    elif part in _BYTE_PARTS:
                        dtype = np.int8  # written as I8
                    elif part in _HALF_PARTS and array.dtype == np.float16:
                        dtype = np.float16  # written as F16
                    else:
                        dtype = np.float32
                    writer.add_tensor(f"blk.{il}.{part}", np.ascontiguousarray(array, dtype=dtype))

        write_gguf(path, ARCH, fill)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Transform:
        """Read and validate a transform file; raise TransformFileError naming the problem."""
        return _read(Path(path))

    def summary(self) -> dict[str, Any]:
        """Metadata as a JSON-ready dict (what `lingalign info` prints)."""
        return {
            "method": self.method,
            "source_lang": self.source_lang,
            "target_lang": self.target_lang,
            "alpha": self.alpha,
            "positions": self.positions,
            "layers": sorted(self.layers),
            "kinds": sorted({lm.kind for lm in self.layers.values()}),
            "model": self.model.to_dict(),
            "fit_info": self.fit_info,
        }


def _field(fields: dict[str, Any], key: str, path: Path, kind: type) -> Any:
    f = fields.get(_K + key)
    if f is None:
        raise TransformFileError(f"{path}: missing metadata {_K + key}")
    try:
        value = f.contents()
    except Exception as e:  # the gguf reader raises various errors on corrupt fields
        raise TransformFileError(f"{path}: unreadable metadata {_K + key} ({e})") from None
    if kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, (int, float, np.floating, np.integer)):
        return float(value)
    if kind is list and isinstance(value, list):
        return value
    if isinstance(value, kind):
        return value
    raise TransformFileError(f"{path}: metadata {_K + key} has the wrong type ({type(value).__name__})")


_F32, _F16, _I8, _I32 = 0, 1, 24, 26  # ggml type ids
_TYPE_NAMES = {_F32: "F32", _F16: "F16", _I8: "I8", _I32: "I32"}
_TYPE_SIZES = {_F32: 4, _F16: 2, _I8: 1, _I32: 4}
_MAX_TENSOR_DIM = 1 << 20


def _allowed_types(tensor_name: str) -> tuple[int, ...]:
    """ggml types a tensor may have, by its name's last part (F32 first)."""
    part = tensor_name.rsplit(".", 1)[-1]
    if part in _INT_PARTS:
        return (_I32,)
    if part in _BYTE_PARTS:
        return (_I8,)
    if part in _HALF_PARTS:
        return (_F32, _F16)
    return (_F32,)


def _check_layout(path: Path) -> None:
    """Bounds-check the header and the tensor table against the file before the gguf package
    reads it: a corrupt count or size is refused here instead of turning into a huge allocation."""
    import mmap

    size = path.stat().st_size
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            header = scan_gguf(buf, path)
    except (ModelFileError, ValueError, OSError) as e:
        message = str(e).replace(f"{path}: ", "")
        raise TransformFileError(f"{path}: truncated or corrupt GGUF file ({message})") from None
    for name, dims, ttype, offset in header.tensors:
        allowed = _allowed_types(name)
        if ttype not in allowed:
            raise TransformFileError(
                f"{path}: tensor {name} has ggml type {_TYPE_NAMES.get(ttype, ttype)}, "
                f"expected {' or '.join(_TYPE_NAMES[t] for t in allowed)}"
            )
        if any(d < 1 or d > _MAX_TENSOR_DIM for d in dims):
            raise TransformFileError(f"{path}: tensor {name} has impossible shape {dims}")
        nbytes = _TYPE_SIZES[ttype] * int(np.prod(dims, dtype=np.int64))
        if header.data_start + offset + nbytes > size:
            raise TransformFileError(f"{path}: tensor {name} is truncated (data runs past the end of the file)")


def _read(path: Path) -> Transform:
    if not path.is_file():
        raise TransformFileError(f"transform file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise TransformFileError(f"{path}: not a GGUF file")
    _check_layout(path)
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        fields = dict(reader.fields)
        tensors = list(reader.tensors)
    except Exception as e:
        raise TransformFileError(f"{path}: truncated or corrupt GGUF file ({type(e).__name__}: {e})") from None

    arch_field = fields.get("general.architecture")
    try:
        arch = arch_field.contents() if arch_field is not None else None
    except Exception as e:  # e.g. bytes that are not UTF-8
        raise TransformFileError(f"{path}: unreadable general.architecture ({type(e).__name__})") from None
    if arch == "controlvector":
        from .controlvector import read_controlvector

        return read_controlvector(path, fields, tensors)
    if arch != ARCH:
        raise TransformFileError(f"{path}: not a lingalign transform (general.architecture is {arch!r})")
    version = _field(fields, "format_version", path, int)
    if version > FORMAT_VERSION or version < 1:
        raise TransformFileError(
            f"{path}: format version {version} is not supported (this lingalign reads up to {FORMAT_VERSION})"
        )
    model = ModelFingerprint(
        architecture=_field(fields, "model.architecture", path, str),
        n_embd=_field(fields, "model.n_embd", path, int),
        n_layer=_field(fields, "model.n_layer", path, int),
        vocab_sha256=_field(fields, "model.vocab_sha256", path, str),
        weights_sha256=_field(fields, "model.weights_sha256", path, str),
        name=_field(fields, "model.name", path, str),
    )
    try:
        fit_info = json.loads(_field(fields, "fit_info", path, str))
    except json.JSONDecodeError:
        raise TransformFileError(f"{path}: metadata {_K}fit_info is not valid JSON") from None
    declared = [int(x) for x in _field(fields, "layers", path, list)]

    layers: dict[int, LayerMap] = {}
    for t in tensors:
        parts = t.name.split(".")
        if len(parts) != 3 or parts[0] != "blk" or not parts[1].isdigit() or parts[2] not in _TENSOR_PARTS:
            raise TransformFileError(f"{path}: unexpected tensor {t.name!r}")
        allowed = _allowed_types(t.name)
        ttype = int(t.tensor_type)
        if ttype not in allowed:
            raise TransformFileError(
                f"{path}: tensor {t.name} is {t.tensor_type.name}, expected {' or '.join(_TYPE_NAMES[a] for a in allowed)}"
            )
        expected_bytes = int(np.prod([int(n) for n in t.shape])) * _TYPE_SIZES[ttype]
        if t.n_bytes != expected_bytes or t.data.nbytes != expected_bytes:
            raise TransformFileError(f"{path}: tensor {t.name} is truncated")
        il = int(parts[1])
        lm = layers.setdefault(il, LayerMap())
        dtype = {_I32: np.int32, _I8: np.int8, _F16: np.float16, _F32: np.float32}[ttype]
        array = np.array(t.data, dtype=dtype, copy=True)
        setattr(lm, _TENSOR_PARTS[parts[2]], array)
    if sorted(layers) != sorted(declared):
        raise TransformFileError(
            f"{path}: tensors cover layers {sorted(layers)} but the metadata declares {sorted(declared)}"
        )
    transform = Transform(
        layers=layers,
        model=model,
        method=_field(fields, "method", path, str),
        source_lang=_field(fields, "source_lang", path, str),
        target_lang=_field(fields, "target_lang", path, str),
        alpha=_field(fields, "alpha", path, float),
        positions=_field(fields, "positions", path, str),
        fit_info=fit_info,
    )
    try:
        transform.validate()
    except TransformFileError as e:
        raise TransformFileError(f"{path}: {e}") from None
    return transform
