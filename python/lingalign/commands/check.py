"""`lingalign check`: does the model read a language? It translates sentences of the language
into English (greedy, its chat template) and chrF scores them against their reference English,
next to the untranslated sentences' score (lingalign.language_check)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import LingalignError
from .common import load_llm
from .options import Parents

EXAMPLES = 2  # translations printed beside their reference
CONTEXT = 2048  # tokens: a paragraph, its translation and the instruction


def register(subparsers: Any, parents: Parents) -> None:
    from ..language_check import DEFAULT_SENTENCES

    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--lang", help="the language (sw, swh, swh_Latn, ...): names it in the instruction; "
                                    "with no --src, checks on the embedded corpus of that language")
    own.add_argument("--src", help="sentences in the language, one a line (or a SIB-200 tsv)")
    own.add_argument("--tgt", help="their English translations, line-aligned (or the English SIB-200 tsv)")
    own.add_argument("--limit", type=int, default=DEFAULT_SENTENCES,
                     help=f"sentences to translate, from the start (default {DEFAULT_SENTENCES})")
    own.add_argument("--json", action="store_true", help="print the result as JSON")
    sp = subparsers.add_parser("check", parents=[own, parents.model],
                               help="does the model read a language? its own translation into English, scored")
    sp.set_defaults(func=cmd_check)


def _pairs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    from ..data import embedded_path, normalize_lang, read_pairs

    if args.limit is not None and args.limit < 1:
        raise LingalignError(f"--limit must be at least 1, not {args.limit}")
    if bool(args.src) != bool(args.tgt):
        raise LingalignError("give both --src and --tgt, or neither (then --lang picks the embedded corpus)")
    if args.src:
        return read_pairs(args.src, args.tgt, limit=args.limit)
    if not args.lang:
        raise LingalignError("give --lang (the embedded corpus of that language), or --src and --tgt files")
    lang = normalize_lang(args.lang)
    if lang == "eng":
        raise LingalignError("--lang eng: the check translates into English, so give another language")
    return read_pairs(embedded_path(lang), embedded_path("eng"), limit=args.limit)


def cmd_check(args: argparse.Namespace) -> int:
    from ..language_check import check_language
    from ..progress import Progress

    src, tgt = _pairs(args)
    llm = load_llm(args, n_ctx=CONTEXT)
    with Progress(len(src), None, "translating", min_total=1) as bar:
        result = check_language(llm, src, tgt, args.lang, on_sentence=lambda _: bar.update())
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    who = result.name or result.lang or "the source language"
    print(f"{who}, {result.n} sentences translated into English in {result.seconds:.0f} s")
    print(f"chrF against the reference English: {result.chrf:.1f} "
          f"(the untranslated sentences: {result.chrf_untranslated:.1f})")
    for s, h, r in list(zip(src, result.translations, tgt))[:EXAMPLES]:
        print(f"  {s}\n    model:     {h}\n    reference: {r}")
    print(result.verdict())
    sys.stdout.flush()
    return 0
