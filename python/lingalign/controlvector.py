"""llama.cpp control vectors: the file format, read and written.

A llama.cpp control vector (the file `llama-cli --control-vector` reads; written by
tools/cvector-generator and repeng) is a GGUF with general.architecture = "controlvector",
controlvector.model_hint and controlvector.layer_count, and one 1-D F32 tensor
`direction.<il>` per layer, added to the output of layer il (the tensor lingalign calls
l_out-<il>). Layer 0 cannot carry one. It is exactly lingalign's additive transform at alpha 1;
`Transform.save_controlvector` and `Transform.load` use this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TransformFileError
from .gguf_io import write_gguf

ARCH = "controlvector"


def write_controlvector(path: str | os.PathLike[str], architecture: str, vectors: dict[int, np.ndarray]) -> None:
    """Write per-layer vectors (already scaled) as a llama.cpp control vector."""
    if 0 in vectors:
        raise TransformFileError("llama.cpp control vectors cannot act on layer 0; refit without it (--layers 1-...)")

    def fill(writer: Any) -> None:
        writer.add_string(f"{ARCH}.model_hint", architecture)
        writer.add_int32(f"{ARCH}.layer_count", len(vectors))
        for il in sorted(vectors):
            writer.add_tensor(f"direction.{il}", np.asarray(vectors[il], dtype=np.float32))

    write_gguf(path, ARCH, fill)


def read_controlvector(path: Path, fields: dict[str, Any], tensors: list[Any]) -> tuple[str, dict[int, np.ndarray]]:
    """(model hint, vectors by layer) of a parsed control-vector GGUF; TransformFileError if malformed."""
    hint_field = fields.get(f"{ARCH}.model_hint")
    try:
        hint = str(hint_field.contents()) if hint_field is not None else ""
    except Exception:
        raise TransformFileError(f"{path}: unreadable {ARCH}.model_hint") from None
    vectors: dict[int, np.ndarray] = {}
    width = None
    for t in tensors:
        parts = t.name.split(".")
        if len(parts) != 2 or parts[0] != "direction" or not parts[1].isdigit():
            raise TransformFileError(f"{path}: unexpected tensor {t.name!r} in a control vector")
        il = int(parts[1])
        if il == 0:
            raise TransformFileError(f"{path}: direction.0: control vectors start at layer 1")
        data = np.array(t.data, dtype=np.float32, copy=True).reshape(-1)
        if width is None:
            width = data.shape[0]
        if data.shape != (width,) or width == 0:
            raise TransformFileError(f"{path}: direction.{il} has {data.size} values, the others {width}")
        vectors[il] = data
    if not vectors:
        raise TransformFileError(f"{path}: control vector has no direction tensors")
    return hint, vectors
