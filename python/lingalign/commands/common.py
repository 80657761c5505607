"""Helpers the commands share: opening the model and the transform the options name, and
writing a list of layers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def load_llm(args: argparse.Namespace, *, n_ctx: int = 1024) -> Any:
    """The model of the model options (options.model_options)."""
    from ..hook import open_model

    # --threads sets both: llama-cpp-python would otherwise run prompts on every core.
    return open_model(args.model, n_ctx=n_ctx, n_threads=args.threads, n_threads_batch=args.threads,
                      n_gpu_layers=args.n_gpu_layers)


def load_transform(args: argparse.Namespace) -> Any:
    """The transform --transform names, or None without one."""
    from ..transform import Transform

    return Transform.load(args.transform) if args.transform else None


def span(layers: Sequence[int]) -> str:
    """Layers as 2-6 when they are a run of three or more, else as 0,4,8."""
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(il) for il in layers)
