"""`lingalign demo`: the whole job on the embedded corpus, with numbers, in about a minute: a map
fitted per language and measured on held-out pairs, then one generation with and without it."""

from __future__ import annotations

import argparse
from typing import Any

from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("demo", parents=[parents.model],
                               help="the whole job on the embedded corpus, with numbers (about a minute)")
    sp.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(model=args.model, threads=args.threads, n_gpu_layers=args.n_gpu_layers)
