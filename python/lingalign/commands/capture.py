"""`lingalign capture`: the pooled residual stream of every layer (or of the chosen ones) for a
text file, one sentence per line, saved as an .npz with the layers, the pooling and the model."""

from __future__ import annotations

import argparse
from typing import Any

from .common import load_llm
from .options import Parents, shard_run_options, sharded


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--text", required=True, help="UTF-8 text, one sentence per line")
    own.add_argument("--out", required=True, help="output .npz (activations [N, layers, n_embd])")
    own.add_argument("--pool", choices=("mean", "last"), default="mean")
    own.add_argument("--layers", default="all", help="all | 5 | 0,4,8 | 2-6 | -1 (default: all)")
    own.add_argument("--skip", type=int, default=0)
    own.add_argument("--limit", type=int, default=None)
    sp = subparsers.add_parser("capture", parents=[own, parents.model, parents.cluster],
                               help="pooled residual stream of every layer for a text file -> .npz")
    sp.set_defaults(func=cmd_capture)


def cmd_capture(args: argparse.Namespace) -> int:
    from .. import _llama
    from ..capturing import capture, parse_layer_spec
    from ..data import read_lines

    lines = read_lines(args.text, skip=args.skip, limit=args.limit)
    if sharded(args):
        return _capture_sharded(args, lines)
    llm = load_llm(args)
    n_layer = _llama.n_layer(llm)
    layers = parse_layer_spec(args.layers, n_layer) or list(range(n_layer))
    captures = capture(llm, lines, layers=layers, pool=args.pool, progress=None)
    captures.save(args.out)
    n, n_layers, width = captures.activations.shape
    print(f"captured {n} sentences x {n_layers} layers x {width} -> {args.out}")
    return 0


def _capture_sharded(args: argparse.Namespace, lines: list[str]) -> int:
    """capture --ray / --resume: the sentences in shards (on Ray actors with --ray), concatenated
    in shard order (lingalign.cluster)."""
    import sys

    from ..capturing import parse_layer_spec
    from ..cluster import capture_sharded, import_ray
    from ..models import resolve_model
    from ..model import fingerprint

    if args.ray is not None:
        import_ray()  # says how to install it, before anything slow
    model_path = str(resolve_model(args.model))
    n_layer = fingerprint(model_path).n_layer
    layers = parse_layer_spec(args.layers, n_layer) or list(range(n_layer))
    captures, s = capture_sharded(model_path, lines, layers=layers, pool=args.pool, **shard_run_options(args))
    captures.save(args.out)
    print(f"{s['pairs']} sentences, {s['shards']} shards ({s['shards_resumed']} resumed), {s['workers']} workers, "
          f"{s['seconds']:.1f} s", file=sys.stderr)
    n, n_layers, width = captures.activations.shape
    print(f"captured {n} sentences x {n_layers} layers x {width} -> {args.out}")
    return 0
