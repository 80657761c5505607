"""Load the C++ extension after llama_cpp, and refuse a llama-cpp-python it was not built for."""

from __future__ import annotations

import importlib.metadata

import llama_cpp  # noqa: F401  # loads libggml-base first, so _core binds to that same copy

from . import _core

BUILT_AGAINST: str = _core.LLAMA_CPP_VERSION


def check_llama_cpp_version(runtime: str | None = None) -> None:
    """Raise ImportError if the installed llama-cpp-python differs from the one _core was built with.

    The hook reads ggml_tensor and llama_context_params, whose layout changes between llama.cpp
    commits; a mismatch would corrupt memory instead of failing.
    """
    if runtime is None:
        runtime = importlib.metadata.version("llama-cpp-python")
    if runtime != BUILT_AGAINST:
        raise ImportError(
            f"lingalign was built against llama-cpp-python {BUILT_AGAINST} but {runtime} is installed; "
            f"reinstall lingalign (pip install --force-reinstall --no-deps .) or install "
            f"llama-cpp-python=={BUILT_AGAINST}"
        )


check_llama_cpp_version()
