"""`lingalign export`: write an additive transform (vectors) as a llama.cpp control vector, for
llama-cli / llama-server --control-vector."""

from __future__ import annotations

import argparse
from typing import Any

from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("export", help="write an additive transform as a llama.cpp control vector")
    sp.add_argument("--format", choices=("controlvector",), default="controlvector")
    sp.add_argument("transform")
    sp.add_argument("out")
    sp.add_argument("--alpha", type=float, default=None, help="scale baked into the vectors (default: the file's)")
    sp.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..transform import Transform

    Transform.load(args.transform).save_controlvector(args.out, alpha=args.alpha)
    print(f"wrote {args.out} (llama.cpp: --control-vector {args.out})")
    return 0
