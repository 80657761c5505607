"""`lingalign convert`: store a transform's maps in another precision (f32, f16, q8, q4) and say
how the file's size changed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..transform import PRECISIONS
from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("convert", help="store a transform's maps in another precision (f32, f16, q8, q4)")
    sp.add_argument("transform")
    sp.add_argument("out")
    sp.add_argument("--precision", choices=PRECISIONS, required=True,
                    help="f32 and f16 store maps as floats; q8 and q4 full maps as 8- or 4-bit differences from "
                    "the identity (a quarter or an eighth of float32's bytes, read per token)")
    sp.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from ..transform import Transform

    t = Transform.load(args.transform)
    out = t.to_precision(args.precision)
    out.save(args.out)
    before, after = Path(args.transform).stat().st_size, Path(args.out).stat().st_size
    print(f"wrote {args.out}: {t.precision} -> {out.precision}, {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0
