"""Option groups several commands share, as argparse parents (`add_help=False` parsers).

Each option is defined here once. argparse lends a parent's actions to every parser built from
it, so `Parents` makes one of each afresh for each top-level parser, and a command passes the
ones it takes as `parents=[...]`. argparse lists a parent's options before the parser's own, so
such a command gathers its own options in a parent too, passed first: its help keeps them first.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..transform import POSITIONS

TRANSFORM_HELP = "transform .gguf, applied inside llama.cpp"


def model_options() -> argparse.ArgumentParser:
    """The model a command opens, and how llama.cpp runs it (read by common.load_llm)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", help="a GGUF model file, or a known model's name (`lingalign models`; default: "
                                   "gemma3-270m, Gemma 3 270M Q4_K_M from its PyPI package)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=0,
                   help="layers to offload to the GPU, with a GPU build of llama-cpp-python (-1: all; default 0)")
    return p


def transform_options(transform_help: str = TRANSFORM_HELP) -> argparse.ArgumentParser:
    """The intervention applied while the model reads: the file and how to apply it."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--transform", help=transform_help)
    p.add_argument("--alpha", type=float, default=None, help="strength (default: the file's)")
    p.add_argument("--positions", choices=POSITIONS, default=None, help="position policy (default: the file's)")
    p.add_argument("--force", action="store_true", help="apply a transform made for another model")
    return p


DEFAULT_SHARD_SIZE = 1000


def cluster_options() -> argparse.ArgumentParser:
    """Capture in shards, on Ray actors with --ray (lingalign.cluster; Ray is the [ray] extra)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="capture on Ray actors: no ADDRESS starts a local Ray, auto joins a running cluster "
                        '(pip install "lingalign[ray]")')
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"sentence pairs per shard with --ray or --resume (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray actors (default: the cluster's CPUs / --threads); each opens the model once")
    p.add_argument("--gpus-per-worker", type=float, default=None, metavar="N",
                   help="GPUs each Ray actor reserves (default: 1 with -ngl, else 0), so Ray places actors by GPU")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="keep each finished shard's result in DIR and skip the shards already there")
    return p


def sharded(args: argparse.Namespace) -> bool:
    """Whether the command runs in shards: --ray or --resume."""
    return args.ray is not None or args.resume is not None


def shard_run_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword options of cluster.run_shards that the shared options set."""
    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if args.n_gpu_layers and args.ray is not None else 0.0
    return {"shard_size": args.shard_size, "use_ray": args.ray is not None,
            "ray_address": None if args.ray in (None, "local") else args.ray, "workers": args.workers,
            "n_threads": args.threads or 1, "n_gpu_layers": args.n_gpu_layers, "gpus_per_worker": gpus,
            "resume_dir": args.resume}


@dataclass(frozen=True)
class Parents:
    """One parser of each shared option group, for the subparsers of one top-level parser."""

    model: argparse.ArgumentParser = field(default_factory=model_options)
    transform: argparse.ArgumentParser = field(default_factory=transform_options)
    cluster: argparse.ArgumentParser = field(default_factory=cluster_options)
