"""lingalign: cross-lingual alignment interventions for GGUF models in llama.cpp.

    import lingalign
    llm = lingalign.load(transform="matrices/swh-eng.gguf")   # a llama_cpp.Llama, hook attached
    print(llm("Habari ya asubuhi", max_tokens=32)["choices"][0]["text"])

Public API: load / attach / steering_of (hook), capture (activations), fit (numpy fitting),
Transform / LayerMap (files), and the errors.
"""

from __future__ import annotations

from ._abi import BUILT_AGAINST as LLAMA_CPP_VERSION
from .capture import capture
from .errors import (
    InterventionError,
    LingalignError,
    ModelFileError,
    ModelMismatchError,
    TransformFileError,
)
from .fit import fit_transform
from .hook import Steering, attach, load, steering_of
from .model import ModelFingerprint, default_model_path, fingerprint
from .transform import LayerMap, Transform

__version__ = "0.1.0"

__all__ = [
    "LLAMA_CPP_VERSION",
    "InterventionError",
    "LayerMap",
    "LingalignError",
    "ModelFileError",
    "ModelFingerprint",
    "ModelMismatchError",
    "Steering",
    "Transform",
    "TransformFileError",
    "attach",
    "capture",
    "default_model_path",
    "fingerprint",
    "fit_transform",
    "load",
    "steering_of",
]
