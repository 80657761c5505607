"""`lingalign lexicon`: learn a word lexicon (source word -> English word) from parallel
sentences, with no model; `run`, `eval choice` and `eval fidelity` read prompts through it with
--lexicon (lingalign.lexicon)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..errors import LingalignError
from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("lexicon", help="learn a word lexicon from parallel sentences (no model)")
    sp.add_argument("--src", action="append", required=True,
                    help="source-language sentences, a line each, or a SIB-200 tsv; repeat with --tgt to add sources")
    sp.add_argument("--tgt", action="append", required=True, help="their English translations, line-aligned")
    sp.add_argument("--src-lang", required=True, help="source language code (recorded in the file)")
    sp.add_argument("--out", required=True, help="output lexicon .tsv")
    sp.add_argument("--min-prob", type=float, default=None, help="smallest t(english|source) kept (default 0.1)")
    sp.set_defaults(func=cmd_lexicon)


def cmd_lexicon(args: argparse.Namespace) -> int:
    from ..data import read_pairs
    from ..lexicon import MIN_PROB, fit_lexicon

    if len(args.src) != len(args.tgt):
        raise LingalignError(f"give a --tgt for each --src ({len(args.src)} --src, {len(args.tgt)} --tgt)")
    min_prob = MIN_PROB if args.min_prob is None else args.min_prob
    if not 0.0 < min_prob <= 1.0:
        raise LingalignError(f"--min-prob must be in (0, 1], got {min_prob:g}")
    src: list[str] = []
    tgt: list[str] = []
    for s, t in zip(args.src, args.tgt):
        a, b = read_pairs(s, t)
        src += a
        tgt += b
    t0 = time.time()
    lex = fit_lexicon(src, tgt, source_lang=args.src_lang, min_prob=min_prob,
                      progress=lambda msg: print(f"lingalign: {msg}", file=sys.stderr, flush=True))
    lex.save(args.out)
    print(f"wrote {args.out}: {len(lex)} words from {len(src)} pairs ({time.time() - t0:.1f} s)")
    return 0
