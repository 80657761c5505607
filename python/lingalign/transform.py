"""The Transform data object and its GGUF file format.

A transform holds, per layer, a LayerMap (an affine or low-rank map, an additive vector or a
neuron clamp; see `layer`), plus the metadata that says where it comes from and what it may be
applied to. It is frozen and validated when it is made: a Transform that exists is one the hook
can take. Files are GGUF (written and read with the `gguf` package): data only, no code. Loading
refuses a bad file with a one-line TransformFileError.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from . import controlvector
from .captures import Captures
from .errors import LingalignError, ModelFileError, TransformFileError
from .fit import DEFAULT_METHOD, EXPERT_METHODS, fit_layers
from .gguf_io import write_gguf
from .layer import BYTE_TENSORS, HALF_TENSORS, INT_TENSORS, PRECISIONS, TENSOR_NAMES, LayerMap
from .model import ModelFingerprint, scan_gguf

ARCH = "lingalign"
FORMAT_VERSION = 2  # 2: generated-only layers (written as 1 when a transform has none)
POSITIONS = ("all", "last", "prompt", "generated")
MAX_ALPHA = 1e4  # far beyond any useful strength; larger values only overflow float32

__all__ = ["POSITIONS", "PRECISIONS", "LayerMap", "Transform", "check_alpha", "check_positions"]


def check_alpha(alpha: float) -> float:
    """alpha as a float, or TransformFileError if it is NaN, Inf or absurdly large."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise TransformFileError(f"alpha must be a number, not {alpha!r}") from None
    if not np.isfinite(a) or abs(a) > MAX_ALPHA:
        raise TransformFileError(f"alpha {a:g} is out of range (a finite number within +-{MAX_ALPHA:g})")
    return a


def check_positions(positions: str) -> str:
    """positions if it names a policy, else LingalignError listing them."""
    if positions not in POSITIONS:
        raise LingalignError(f"unknown position policy {positions!r} (one of {', '.join(POSITIONS)})")
    return positions


_K = "lingalign."  # metadata key prefix


@dataclass(frozen=True)
class Transform:
    """Per-layer alignment transforms for one model, with their provenance (frozen).

    `alpha` and `positions` are the defaults used when the caller gives none. The layers in
    `generated_layers` act only on generated tokens (and on the options a choice scores), among
    those `positions` selects: the output-language stage of a staged transform, which must leave
    the prompt as the other layers made it. Make changed copies with `dataclasses.replace`
    (validated again) or `with_layers`.
    """

    layers: Mapping[int, LayerMap]
    model: ModelFingerprint
    method: str
    source_lang: str = ""
    target_lang: str = "eng"
    alpha: float = 1.0
    positions: str = "all"
    fit_info: Mapping[str, Any] = field(default_factory=dict)
    generated_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        layers = {int(il): lm for il, lm in dict(self.layers).items()}
        object.__setattr__(self, "layers", MappingProxyType(dict(sorted(layers.items()))))
        object.__setattr__(self, "fit_info", dict(self.fit_info))
        if not layers:
            raise TransformFileError("transform has no layers")
        for il, lm in layers.items():
            if not isinstance(lm, LayerMap):
                raise TransformFileError(f"layer {il}: a LayerMap is needed, not {type(lm).__name__}")
            if not 0 <= il < self.model.n_layer:
                raise TransformFileError(f"unknown layer {il}: the model has layers 0..{self.model.n_layer - 1}")
            lm.check_width(il, self.model.n_embd)
        if self.positions not in POSITIONS:
            raise TransformFileError(f"unknown position policy {self.positions!r} (one of {', '.join(POSITIONS)})")
        generated = tuple(sorted({int(il) for il in self.generated_layers}))
        stray = [il for il in generated if il not in layers]
        if stray:
            raise TransformFileError(f"generated-only layer(s) {stray} have no transform (layers: {sorted(layers)})")
        object.__setattr__(self, "generated_layers", generated)
        object.__setattr__(self, "alpha", check_alpha(self.alpha))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self) if f.name != "layers") \
            and dict(self.layers) == dict(other.layers)

    __hash__ = object.__hash__  # identity: transforms are compared by value with ==, kept in dicts by identity

    @classmethod
    def fit(
        cls,
        src: Captures,
        tgt: Captures,
        *,
        method: str = DEFAULT_METHOD,
        layers: Sequence[int] | None = None,
        source_lang: str = "",
        target_lang: str = "eng",
        alpha: float = 1.0,
        positions: str = "all",
        fit_info: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Transform:
        """Fit a transform from two Captures of the same model (numpy only; see `fit.fit_layers`).

        staged's anchor layers (its output-language stage) become `generated_layers`.

        Map and vector methods (ridge, incline, meanshift, contrastive, langvec, lda, staged) take paired residual
        captures: src of the source sentences, tgt of their English translations. "experts"
        (and its control "random-neurons") takes FFN captures of the language (src) and of
        others (tgt). `layers` chooses which captured layers get a transform (default: all);
        `options` go to the method (lam, bias, rank, k, seed, weight_decay, anchor_layers,
        anchor_strength, progress).
        """
        fitted, info = fit_layers(src, tgt, method=method, layers=layers, **options)
        record = dict(fit_info or {})
        for key, value in info.items():
            record.setdefault(key, value)
        if src.info:
            record.setdefault("source_data", src.info)
        if tgt.info and method not in EXPERT_METHODS:
            record.setdefault("target_data", tgt.info)
        generated = tuple(info.get("stages", {}).get("anchor", ()))
        return cls(layers=fitted, model=src.model, method=method, source_lang=source_lang, target_lang=target_lang,
                   alpha=alpha, positions=positions, fit_info=record, generated_layers=generated)

    def validate(self) -> None:
        """Nothing to do: a Transform is validated when it is made (kept for callers of 0.1)."""

    def with_layers(self, layers: Sequence[int]) -> Transform:
        """The same transform restricted to some of its layers."""
        missing = sorted(set(layers) - set(self.layers))
        if missing:
            raise LingalignError(f"layer(s) {missing} not in the transform (it has {sorted(self.layers)})")
        keep = sorted(set(layers))
        return dataclasses.replace(self, layers={il: self.layers[il] for il in keep},
                                   generated_layers=tuple(il for il in self.generated_layers if il in keep))

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
        return dataclasses.replace(self, layers=layers)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the transform as a GGUF file (bit-exact round trip): F32 tensors, F16 for maps
        and low-rank factors held as float16, and I8 for 8- and 4-bit maps."""
        import gguf

        def fill(writer: Any) -> None:
            def add_str(key: str, value: str) -> None:
                # GGUFWriter.add_string drops empty strings; an empty value must still be present.
                writer.add_key_value(key, value, gguf.GGUFValueType.STRING)

            # A file without generated-only layers stays readable by lingalign versions that know
            # format 1; one with them is refused there instead of applied to the prompt too.
            writer.add_uint32(_K + "format_version", FORMAT_VERSION if self.generated_layers else 1)
            add_str(_K + "method", self.method)
            add_str(_K + "source_lang", self.source_lang)
            add_str(_K + "target_lang", self.target_lang)
            writer.add_float64(_K + "alpha", float(self.alpha))
            add_str(_K + "positions", self.positions)
            writer.add_array(_K + "layers", sorted(self.layers))
            if self.generated_layers:
                writer.add_array(_K + "generated_layers", list(self.generated_layers))
            m = self.model
            add_str(_K + "model.architecture", m.architecture)
            writer.add_uint32(_K + "model.n_embd", m.n_embd)
            writer.add_uint32(_K + "model.n_layer", m.n_layer)
            add_str(_K + "model.vocab_sha256", m.vocab_sha256)
            add_str(_K + "model.weights_sha256", m.weights_sha256)
            add_str(_K + "model.name", m.name)
            add_str(_K + "fit_info", json.dumps(self.fit_info, sort_keys=True))
            for il in sorted(self.layers):
                for name, array in self.layers[il].tensors.items():
                    writer.add_tensor(f"blk.{il}.{name}", np.ascontiguousarray(array))

        write_gguf(path, ARCH, fill)

    def save_controlvector(self, path: str | os.PathLike[str], *, alpha: float | None = None) -> None:
        """Write an additive transform as a llama.cpp control vector, scaled by alpha (default: the
        transform's), so that `--control-vector FILE` applies what lingalign applies by default."""
        a = check_alpha(self.alpha if alpha is None else alpha)
        kinds = {lm.kind for lm in self.layers.values()}
        if kinds != {"additive"}:
            raise TransformFileError(
                f"only additive transforms (method meanshift) can be control vectors; this one has "
                f"{', '.join(sorted(kinds))} maps"
            )
        vectors = {il: (a * lm.tensors["vector"].astype(np.float64)).astype(np.float32) for il, lm in self.layers.items()}
        controlvector.write_controlvector(path, self.model.architecture, vectors)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Transform:
        """Read and validate a transform file (lingalign's, or a llama.cpp control vector);
        raise TransformFileError naming the problem."""
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
            "generated_layers": list(self.generated_layers),
            "kinds": sorted({lm.kind for lm in self.layers.values()}),
            "model": self.model.to_dict(),
            "fit_info": dict(self.fit_info),
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
_DTYPES = {_I32: np.int32, _I8: np.int8, _F16: np.float16, _F32: np.float32}
_MAX_TENSOR_DIM = 1 << 20


def _allowed_types(tensor_name: str) -> tuple[int, ...]:
    """ggml types a tensor may have, by its name's last part (F32 first)."""
    part = tensor_name.rsplit(".", 1)[-1]
    if part in INT_TENSORS:
        return (_I32,)
    if part in BYTE_TENSORS:
        return (_I8,)
    if part in HALF_TENSORS:
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
    if arch == controlvector.ARCH:
        return _from_controlvector(path, *controlvector.read_controlvector(path, fields, tensors))
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
    generated = [int(x) for x in _field(fields, "generated_layers", path, list)] if _K + "generated_layers" in fields else []

    per_layer: dict[int, dict[str, np.ndarray]] = {}
    for t in tensors:
        parts = t.name.split(".")
        if len(parts) != 3 or parts[0] != "blk" or not parts[1].isdigit() or parts[2] not in TENSOR_NAMES:
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
        # a view of the file's bytes: LayerMap copies what it keeps
        per_layer.setdefault(int(parts[1]), {})[parts[2]] = np.asarray(t.data, dtype=_DTYPES[ttype])
    if sorted(per_layer) != sorted(declared):
        raise TransformFileError(
            f"{path}: tensors cover layers {sorted(per_layer)} but the metadata declares {sorted(declared)}"
        )
    try:
        layers = {}
        for il, tensors_of_layer in per_layer.items():
            try:
                layers[il] = LayerMap.from_tensors(tensors_of_layer)
            except TransformFileError as e:
                raise TransformFileError(f"layer {il}: {e}") from None
        return Transform(
            layers=layers,
            model=model,
            method=_field(fields, "method", path, str),
            source_lang=_field(fields, "source_lang", path, str),
            target_lang=_field(fields, "target_lang", path, str),
            alpha=_field(fields, "alpha", path, float),
            positions=_field(fields, "positions", path, str),
            fit_info=fit_info,
            generated_layers=tuple(generated),
        )
    except TransformFileError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise TransformFileError(f"{path}: {e}") from None


def _from_controlvector(path: Path, hint: str, vectors: dict[int, np.ndarray]) -> Transform:
    """A Transform (additive, alpha 1) from a control vector's model hint and vectors.

    Control vectors name only an architecture: the fingerprint gets that and the width, and an
    empty vocabulary hash, which ModelFingerprint.check treats as unknown (a warning, not a match).
    """
    width = next(iter(vectors.values())).shape[0]
    model = ModelFingerprint(architecture=hint, n_embd=width, n_layer=max(vectors) + 1, vocab_sha256="",
                             weights_sha256="", name=f"{hint or 'unknown'} (from a llama.cpp control vector)")
    try:
        return Transform(layers={il: LayerMap(vector=v) for il, v in vectors.items()}, model=model,
                         method="controlvector", alpha=1.0, positions="all",
                         fit_info={"source": "llama.cpp control vector", "file": path.name})
    except TransformFileError as e:
        raise TransformFileError(f"{path}: {e}") from None
