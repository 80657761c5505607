"""`lingalign bench`: the cost of the hook against plain llama.cpp on the same model, timed side
by side in interleaved rounds and reported as ratios."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
    own.add_argument("--json", action="store_true")
    own.add_argument("--device-maps", action="store_true",
                     help="also time the full-rank maps applied on the GPU (with --n-gpu-layers)")
    sp = subparsers.add_parser("bench", parents=[own, parents.model],
                               help="cost of the hook vs plain llama.cpp, side by side (ratios)")
    sp.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import format_bench, run_bench

    result = run_bench(args.model, repeats=args.repeats, threads=args.threads, n_gpu_layers=args.n_gpu_layers,
                       device_maps=args.device_maps)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0
