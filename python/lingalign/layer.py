"""LayerMap: one layer's transform, a tagged value validated once, when it is made.

A layer transform is one of four kinds, each with named tensors whose dtype says the precision:

- ``affine``: h' = h + alpha * (h @ M + b - h). M is ``map`` (float32 or float16 [d, d]), or
  M = I + q * scale stored as ``delta_q8`` (int8 [d, d]) or ``delta_q4`` (two 4-bit steps per
  byte, [d, d/2]) with ``delta_scale`` (float32 [d], one step per column);
- ``lowrank``: the same with M = I + U @ Vt, ``lr_u`` [d, r] and ``lr_vt`` [r, d] (both float32 or
  both float16);
- ``additive``: h' = h + alpha * v, ``vector`` [d];
- ``shift``: h' = (h + alpha * v) * |h| / |h + alpha * v|, ``shift`` [d]: a language vector applied
  with each hidden state's norm kept (after ReCoVeR);
- ``clamp``: for the listed MLP neurons m of the layer's FFN activation, z_m' = z_m + alpha *
  (value_m - z_m); ``clamp_index`` (int32 [k]) and ``clamp_value`` (float32 [k]).

Maps take an optional ``bias`` (float32 [d]). The tensor names are the transform file's. A
LayerMap's arrays are read-only; `to_precision` and the constructors make new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import TransformFileError

KINDS = ("affine", "lowrank", "additive", "shift", "clamp")
PRECISIONS = ("f32", "f16", "q8", "q4")
Q8_MAX = 127  # quantized map differences use -127..127, symmetric around 0
Q4_MAX = 7  # and -7..7 in 4 bits (the file format also reads -8)
MAX_NEURON = 1 << 24
_F16_MAX = float(np.finfo(np.float16).max)

# keyword argument of the constructor -> tensor name (the file's)
_ARGUMENTS = {
    "matrix": "map",
    "delta_q8": "delta_q8",
    "delta_q4": "delta_q4",
    "delta_scale": "delta_scale",
    "lowrank_u": "lr_u",
    "lowrank_vt": "lr_vt",
    "bias": "bias",
    "vector": "vector",
    "shift": "shift",
    "clamp_index": "clamp_index",
    "clamp_value": "clamp_value",
}
TENSOR_NAMES = tuple(_ARGUMENTS.values())
INT_TENSORS = ("clamp_index",)  # int32 (I32 in files)
BYTE_TENSORS = ("delta_q8", "delta_q4")  # int8 (I8 in files; delta_q4: two 4-bit values per byte)
HALF_TENSORS = ("map", "lr_u", "lr_vt")  # float32 or float16; every other tensor is float32


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


def _kind_of(names: set[str]) -> str:
    """The kind a set of tensor names makes, or TransformFileError."""
    groups = {
        "affine": {"map", "delta_q8", "delta_q4", "delta_scale"},
        "lowrank": {"lr_u", "lr_vt"},
        "additive": {"vector"},
        "shift": {"shift"},
        "clamp": {"clamp_index", "clamp_value"},
    }
    found = [kind for kind, members in groups.items() if names & members]
    if len(found) != 1:
        raise TransformFileError("needs exactly one of a map, low-rank factors, a vector or a neuron clamp")
    kind = found[0]
    if kind == "affine":
        maps = names & {"map", "delta_q8", "delta_q4"}
        if len(maps) != 1:
            if not maps:
                raise TransformFileError("delta_scale belongs to an 8- or 4-bit map, and there is none")
            raise TransformFileError("needs exactly one of a map, an 8-bit map (delta_q8) and a 4-bit map (delta_q4)")
        if "delta_q8" in names and "delta_scale" not in names:
            raise TransformFileError("an 8-bit map needs both delta_q8 and delta_scale")
        if "delta_q4" in names and "delta_scale" not in names:
            raise TransformFileError("a 4-bit map needs both delta_q4 and delta_scale")
        if "map" in names and "delta_scale" in names:
            raise TransformFileError("delta_scale belongs to an 8- or 4-bit map, and there is none")
    elif kind == "lowrank" and names & {"lr_u", "lr_vt"} != {"lr_u", "lr_vt"}:
        raise TransformFileError("low-rank maps need both factors (lr_u and lr_vt)")
    elif kind == "clamp" and names & {"clamp_index", "clamp_value"} != {"clamp_index", "clamp_value"}:
        raise TransformFileError("a neuron clamp needs both clamp_index and clamp_value")
    if "bias" in names and kind in ("additive", "shift", "clamp"):
        what = "a neuron clamp" if kind == "clamp" else "a vector"
        raise TransformFileError(f"a bias belongs to a map, not to {what}")
    return kind


class LayerMap:
    """The transform of one layer (see the module docstring for the kinds and tensors).

    Made from keyword arrays, ``LayerMap(matrix=W, bias=b)``, ``LayerMap(lowrank_u=U,
    lowrank_vt=Vt)``, ``LayerMap(vector=v)``, ``LayerMap(clamp_index=i, clamp_value=z)``, or
    ``LayerMap.from_tensors(kind-determining tensor dict)``. Everything that does not depend on
    the model (kind, dtypes, shapes relative to each other, finite values, neuron indices) is
    checked here, once; `check_width` checks the width against a model. Raises
    TransformFileError naming the problem.
    """

    __slots__ = ("_tensors", "_kind", "_precision", "_width")

    def __init__(
        self,
        *,
        matrix: np.ndarray | None = None,
        delta_q8: np.ndarray | None = None,
        delta_q4: np.ndarray | None = None,
        delta_scale: np.ndarray | None = None,
        bias: np.ndarray | None = None,
        vector: np.ndarray | None = None,
        shift: np.ndarray | None = None,
        lowrank_u: np.ndarray | None = None,
        lowrank_vt: np.ndarray | None = None,
        clamp_index: np.ndarray | None = None,
        clamp_value: np.ndarray | None = None,
    ) -> None:
        given = dict(matrix=matrix, delta_q8=delta_q8, delta_q4=delta_q4, delta_scale=delta_scale, bias=bias,
                     vector=vector, shift=shift, lowrank_u=lowrank_u, lowrank_vt=lowrank_vt, clamp_index=clamp_index,
                     clamp_value=clamp_value)
        self._set({_ARGUMENTS[k]: v for k, v in given.items() if v is not None})

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray]) -> LayerMap:
        """A LayerMap from its tensors by file name (map, lr_u, vector, clamp_index, ...)."""
        unknown = sorted(set(tensors) - set(TENSOR_NAMES))
        if unknown:
            raise TransformFileError(f"unknown layer tensor(s) {unknown} (known: {', '.join(TENSOR_NAMES)})")
        out = cls.__new__(cls)
        out._set(dict(tensors))
        return out

    def _set(self, tensors: dict[str, Any]) -> None:
        arrays: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            array = np.array(value, copy=True)  # its own memory (a plain ndarray, also from a memmap)
            array.setflags(write=False)
            arrays[name] = array
        kind = _kind_of(set(arrays))
        _check_dtypes(arrays)
        self._width = _check_shapes(kind, arrays)
        _check_values(kind, arrays)
        self._tensors = MappingProxyType(arrays)
        self._kind = kind
        self._precision = _precision_of(arrays)

    # -- what it is ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """"affine", "lowrank", "additive", "shift" or "clamp"."""
        return self._kind

    @property
    def precision(self) -> str:
        """"q8" or "q4" for an 8- or 4-bit map, "f16" if the map or low-rank factors are float16,
        else "f32"."""
        return self._precision

    @property
    def tensors(self) -> Mapping[str, np.ndarray]:
        """The tensors by file name (read-only arrays)."""
        return self._tensors

    @property
    def width(self) -> int:
        """d of a residual-stream transform; for a clamp, one more than its largest neuron index."""
        return self._width

    @property
    def rank(self) -> int:
        """r of a low-rank map, 0 otherwise."""
        u = self._tensors.get("lr_u")
        return 0 if u is None else int(u.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors this layer stores, by file name."""
        return dict(self._tensors)

    # the tensors by their constructor names
    matrix = property(lambda self: self._tensors.get("map"))
    delta_q8 = property(lambda self: self._tensors.get("delta_q8"))
    delta_q4 = property(lambda self: self._tensors.get("delta_q4"))
    delta_scale = property(lambda self: self._tensors.get("delta_scale"))
    bias = property(lambda self: self._tensors.get("bias"))
    vector = property(lambda self: self._tensors.get("vector"))
    shift = property(lambda self: self._tensors.get("shift"))
    lowrank_u = property(lambda self: self._tensors.get("lr_u"))
    lowrank_vt = property(lambda self: self._tensors.get("lr_vt"))
    clamp_index = property(lambda self: self._tensors.get("clamp_index"))
    clamp_value = property(lambda self: self._tensors.get("clamp_value"))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}:{v.dtype}" for k, v in self._tensors.items())
        return f"LayerMap({self._kind}, {self._precision}; {shapes})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerMap):
            return NotImplemented
        return self._tensors.keys() == other._tensors.keys() and all(
            a.dtype == other._tensors[k].dtype and np.array_equal(a, other._tensors[k]) for k, a in self._tensors.items()
        )

    __hash__ = None  # type: ignore[assignment]

    def check_width(self, layer: int, n_embd: int) -> None:
        """Raise TransformFileError unless this transform fits a model of width n_embd."""
        if self._kind == "clamp":
            return  # neuron indices are checked against the model's FFN width when applied
        if self._width != n_embd:
            name = next(iter(self._tensors))
            raise TransformFileError(
                f"layer {layer}: {name} has shape {tuple(self._tensors[name].shape)}, the model has n_embd={n_embd}"
            )
        if self._kind == "affine" and "delta_q4" in self._tensors and n_embd % 2:
            raise TransformFileError(f"layer {layer}: 4-bit maps need an even n_embd, the model has {n_embd}")

    # -- conversions --------------------------------------------------------------------------
    def dense(self) -> np.ndarray:
        """The map as a full [d, d] float32 matrix (affine or low-rank kinds; float16 maps are
        converted, exactly)."""
        t = self._tensors
        if "map" in t:
            return t["map"].astype(np.float32)
        quantized = t.get("delta_q8", t.get("delta_q4"))
        if quantized is not None:
            q = unpack_nibbles(quantized) if "delta_q4" in t else quantized
            return np.eye(q.shape[0], dtype=np.float32) + q.astype(np.float32) * t["delta_scale"][None, :]
        if self._kind != "lowrank":
            raise TransformFileError(f"a {self._kind} transform has no matrix")
        u, vt = t["lr_u"].astype(np.float64), t["lr_vt"].astype(np.float64)
        return (np.eye(u.shape[0]) + u @ vt).astype(np.float32)

    def to_precision(self, precision: str, layer: int | None = None) -> LayerMap:
        """A copy whose map or low-rank factors are stored as float16 ("f16"), float32 ("f32") or,
        for a full map, 8 bits ("q8": M - I rounded to 255 steps per column) or 4 bits ("q4": 15
        steps per column, two per byte; needs an even width); low-rank factors, already small,
        become float16 for q8 and q4. Bias, vector and clamp stay as they are. float16 -> float32
        is exact; float32 -> float16 rounds to nearest, and values beyond float16's range
        (+-65504) raise TransformFileError. A quantized map converts from `dense()`."""
        where = f"layer {layer}: " if layer is not None else ""
        if precision not in PRECISIONS:
            raise TransformFileError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
        t = dict(self._tensors)
        if self._precision in ("q8", "q4"):
            if precision == self._precision:
                return self
            dense = {"map": self.dense(), **({"bias": t["bias"]} if "bias" in t else {})}
            return LayerMap.from_tensors(dense).to_precision(precision, layer)
        if precision in ("q8", "q4"):
            if "map" not in t:
                return self.to_precision("f16", layer)
            matrix = t.pop("map")
            if precision == "q8":
                t["delta_q8"], t["delta_scale"] = quantize_delta(matrix)
            else:
                if matrix.shape[0] % 2:
                    raise TransformFileError(f"{where}4-bit maps need an even width, the map is {matrix.shape[0]} wide")
                q, t["delta_scale"] = quantize_delta(matrix, Q4_MAX)
                t["delta_q4"] = pack_nibbles(q)
            return LayerMap.from_tensors(t)
        dtype = np.float16 if precision == "f16" else np.float32
        for name in HALF_TENSORS:
            array = t.get(name)
            if array is None or array.dtype == dtype:
                continue
            if dtype == np.float16 and np.abs(array).max(initial=0.0) > _F16_MAX:
                raise TransformFileError(f"{where}{name} has values beyond float16's range (+-{_F16_MAX:g})")
            t[name] = np.ascontiguousarray(array, dtype=dtype)
        return LayerMap.from_tensors(t)


def _check_dtypes(arrays: Mapping[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        if name in INT_TENSORS:
            expected: tuple[Any, ...] = (np.int32,)
        elif name in BYTE_TENSORS:
            expected = (np.int8,)
        elif name in HALF_TENSORS:
            expected = (np.float32, np.float16)
        else:
            expected = (np.float32,)
        if array.dtype not in expected:
            allowed = " or ".join(np.dtype(e).name for e in expected)
            raise TransformFileError(f"{name} is {array.dtype}, expected {allowed}")
    u, vt = arrays.get("lr_u"), arrays.get("lr_vt")
    if u is not None and vt is not None and u.dtype != vt.dtype:
        raise TransformFileError(f"lr_u is {u.dtype} and lr_vt {vt.dtype}: both must be the same")


def _check_shapes(kind: str, arrays: Mapping[str, np.ndarray]) -> int:
    """The width d the tensors agree on (clamps: 1 + the largest neuron), or TransformFileError."""
    if kind == "clamp":
        index, value = arrays["clamp_index"], arrays["clamp_value"]
        if index.ndim != 1 or value.shape != index.shape or index.size == 0:
            raise TransformFileError(
                f"clamp_index {index.shape} and clamp_value {value.shape} must be equal, non-empty 1-D"
            )
        return int(index.max()) + 1 if index.size else 0
    if kind in ("additive", "shift"):
        v = arrays[kind if kind == "shift" else "vector"]
        d = v.shape[0] if v.ndim == 1 else -1
        expected = {"vector": (d,), "shift": (d,)}
    elif kind == "lowrank":
        u = arrays["lr_u"]
        d = u.shape[0] if u.ndim == 2 else -1
        rank = u.shape[1] if u.ndim == 2 else 0
        if not 1 <= rank <= max(d, 0):
            raise TransformFileError(f"low-rank factor has rank {rank}, expected 1..{max(d, 0)}")
        expected = {"lr_u": (d, rank), "lr_vt": (rank, d)}
    else:
        m = arrays.get("map", arrays.get("delta_q8"))
        if m is not None:
            d = m.shape[0] if m.ndim == 2 else -1
        else:
            d = arrays["delta_scale"].shape[0] if arrays["delta_scale"].ndim == 1 else -1
        expected = {"map": (d, d), "delta_q8": (d, d), "delta_q4": (d, d // 2), "delta_scale": (d,)}
        if "delta_q4" in arrays and d % 2:
            raise TransformFileError(f"4-bit maps need an even width, the map is {d} wide")
    expected["bias"] = (d,)
    if d < 1:
        raise TransformFileError(f"{next(iter(arrays))} has shape {tuple(next(iter(arrays.values())).shape)}")
    for name, array in arrays.items():
        if array.shape != expected[name]:
            raise TransformFileError(f"{name} has shape {tuple(array.shape)}, expected {expected[name]}")
    return d


def _check_values(kind: str, arrays: Mapping[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        if name in BYTE_TENSORS:
            if name == "delta_q8" and int(array.min(initial=0)) < -Q8_MAX:
                raise TransformFileError(f"{name} holds -128, outside -{Q8_MAX}..{Q8_MAX}")
        elif name in INT_TENSORS:
            if array.min() < 0 or array.max() >= MAX_NEURON:
                raise TransformFileError("clamp_index holds a neuron index out of range")
            if np.unique(array).size != array.size:
                raise TransformFileError("clamp_index lists a neuron twice")
        elif not np.isfinite(array).all():
            raise TransformFileError(f"{name} contains NaN or Inf")


def _precision_of(arrays: Mapping[str, np.ndarray]) -> str:
    if "delta_q8" in arrays:
        return "q8"
    if "delta_q4" in arrays:
        return "q4"
    half = any(arrays[n].dtype == np.float16 for n in HALF_TENSORS if n in arrays)
    return "f16" if half else "f32"
