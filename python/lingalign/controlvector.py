"""llama.cpp control vectors: export additive transforms, and read control-vector files.

A llama.cpp control vector (the file `llama-cli --control-vector` reads; written by
tools/cvector-generator and repeng) is a GGUF with general.architecture = "controlvector",
controlvector.model_hint and controlvector.layer_count, and one 1-D F32 tensor
`direction.<il>` per layer, added to the output of layer il (the tensor lingalign calls
l_out-<il>). Layer 0 cannot carry one. It is exactly lingalign's additive transform at alpha 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TransformFileError
from .model import ModelFingerprint
from .transform import LayerMap, Transform, check_alpha, write_gguf

ARCH = "controlvector"


def export_controlvector(transform: Transform, path: str | os.PathLike[str], *, alpha: float | None = None) -> None:
    """Write an additive transform as a llama.cpp control vector, scaled by alpha (default: the
    transform's), so that `--control-vector FILE` applies what lingalign applies by default."""
    transform.validate()
    a = check_alpha(transform.alpha if alpha is None else alpha)
    kinds = {lm.kind for lm in transform.layers.values()}
    if kinds != {"additive"}:
        raise TransformFileError(
            f"only additive transforms (method meanshift) can be control vectors; this one has {', '.join(sorted(kinds))} maps"
        )
    if 0 in transform.layers:
        raise TransformFileError("llama.cpp control vectors cannot act on layer 0; refit without it (--layers 1-...)")

    def fill(writer: Any) -> None:
        writer.add_string(f"{ARCH}.model_hint", transform.model.architecture)
        writer.add_int32(f"{ARCH}.layer_count", len(transform.layers))
        for il in sorted(transform.layers):
            vector = transform.layers[il].vector
            assert vector is not None
            writer.add_tensor(f"direction.{il}", (a * vector.astype(np.float64)).astype(np.float32))

    write_gguf(path, ARCH, fill)


def read_controlvector(path: Path, fields: dict[str, Any], tensors: list[Any]) -> Transform:
    """A Transform (additive, alpha 1) from a parsed control-vector GGUF.

    Control vectors name only an architecture: the fingerprint gets that and the width, and an
    empty vocabulary hash, which ModelFingerprint.check treats as unknown (a warning, not a match).
    """
    hint_field = fields.get(f"{ARCH}.model_hint")
    try:
        hint = str(hint_field.contents()) if hint_field is not None else ""
    except Exception:
        raise TransformFileError(f"{path}: unreadable {ARCH}.model_hint") from None
    layers: dict[int, LayerMap] = {}
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
        layers[il] = LayerMap(vector=data)
    if not layers or width is None:
        raise TransformFileError(f"{path}: control vector has no direction tensors")
    model = ModelFingerprint(architecture=hint, n_embd=width, n_layer=max(layers) + 1, vocab_sha256="",
                             weights_sha256="", name=f"{hint or 'unknown'} (from a llama.cpp control vector)")
    transform = Transform(layers=layers, model=model, method="controlvector", alpha=1.0, positions="all",
                          fit_info={"source": "llama.cpp control vector", "file": path.name})
    try:
        transform.validate()
    except TransformFileError as e:
        raise TransformFileError(f"{path}: {e}") from None
    return transform
