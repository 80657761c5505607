"""lingalign: cross-lingual alignment interventions for GGUF models in llama.cpp.

    import lingalign
    llm = lingalign.load(transform="matrices/swh-eng.gguf")   # a llama_cpp.Llama, hook attached
    print(llm("Habari ya asubuhi", max_tokens=32)["choices"][0]["text"])

Public API: load / attach / Steering (the hook on a Llama), capture / Captures (activations),
Transform / LayerMap (fitting with Transform.fit, files), and the errors (lingalign.errors).
The numpy side (Transform, Captures, fitting) imports without llama-cpp-python; the names that
need it (load, attach, Steering, capture) load it on first use.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .captures import Captures
from .errors import LingalignError, ModelMismatchError, TransformFileError
from .layer import LayerMap
from .transform import Transform

__version__ = "0.1.0"

__all__ = [
    "Captures",
    "LayerMap",
    "LingalignError",
    "ModelMismatchError",
    "Steering",
    "Transform",
    "TransformFileError",
    "attach",
    "capture",
    "load",
]

# name -> (module, attribute): the llama-cpp-python side, imported on first use
_LAZY = {
    "load": ("hook", "load"),
    "attach": ("hook", "attach"),
    "Steering": ("hook", "Steering"),
    "capture": ("capturing", "capture"),
    "LLAMA_CPP_VERSION": ("_abi", "BUILT_AGAINST"),
    "_core": ("_abi", "_core"),
    # not in __all__, kept where they were
    "InterventionError": ("errors", "InterventionError"),
    "ModelFileError": ("errors", "ModelFileError"),
}
# renamed in 0.2: old name -> (module, attribute, what to use instead); removed in the next release
_DEPRECATED = {
    "steering_of": ("hook", "steering_of", "lingalign.attach(llm), which returns the Llama's Steering"),
    "fit_transform": ("_deprecated", "fit_transform", "lingalign.Transform.fit(src_captures, tgt_captures, ...)"),
    "fingerprint": ("model", "fingerprint", "lingalign.model.fingerprint"),
    "ModelFingerprint": ("model", "ModelFingerprint", "lingalign.model.ModelFingerprint"),
    "default_model_path": ("model", "default_model_path", "lingalign.model.default_model_path"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        module, attr, instead = _DEPRECATED[name]
        warnings.warn(f"lingalign.{name} is deprecated; use {instead}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'lingalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
