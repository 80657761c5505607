"""Where in llama.cpp's graph the hook reads and writes, per architecture.

Two sites per layer il: the residual stream after the layer, `l_out-<il>` in every architecture
llama.cpp builds (n_embd wide), and the MLP activation that feeds the down projection, the
"neurons" of language-expert clamps (n_ff wide), whose name depends on the FFN llama.cpp
builds: gated GELU in the Gemma family, gated SiLU in llama-like models. Read from llama.cpp's
build_ffn (LLM_FFN_PAR + GELU/SILU) for llama-cpp-python 0.3.36.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

RESIDUAL = "residual"
FFN = "ffn"
SITES = (RESIDUAL, FFN)

RESIDUAL_TENSOR = "l_out"  # the C++ hook matches "l_out-<il>" itself

# architecture -> name prefix of the FFN activation tensor ("<prefix>-<il>")
FFN_TENSOR = {
    "gemma": "ffn_geglu",
    "gemma2": "ffn_geglu",
    "gemma3": "ffn_geglu",
    "llama": "ffn_swiglu",
    "mistral3": "ffn_swiglu",
    "qwen2": "ffn_swiglu",
    "qwen3": "ffn_swiglu",
}


@dataclass(frozen=True)
class FfnSite:
    """A model's FFN activation: tensor name prefix and width (n_ff)."""

    tensor: str
    width: int


def ffn_site(metadata: Mapping[str, str]) -> FfnSite | None:
    """The FFN activation of a model with this GGUF metadata, or None if lingalign does not know
    where its architecture's neurons are (or the width varies per layer)."""
    arch = metadata.get("general.architecture", "")
    tensor = FFN_TENSOR.get(arch)
    try:
        n_ff = int(metadata.get(f"{arch}.feed_forward_length", "0"))
    except ValueError:  # per-layer widths (an array) are not supported
        return None
    if tensor is None or n_ff <= 0:
        return None
    return FfnSite(tensor, n_ff)


def supported_ffn_architectures() -> str:
    return ", ".join(sorted(FFN_TENSOR))
