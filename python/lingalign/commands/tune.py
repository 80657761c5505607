"""`lingalign tune`: choose a transform's alpha, positions and layers on dev data (retrieval or
multiple choice) and write them into the file as its defaults (or into a copy, with --out); or,
with --lexicon, whether a language is to be read through a word lexicon (its `reads` line)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from ..errors import LingalignError
from .common import load_llm, span
from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--transform", help="the transform to tune")
    own.add_argument("--lexicon", metavar="FILE.tsv",
                     help="instead of a transform: a lexicon (`lingalign lexicon`); --metric choice decides whether "
                          "prompts are read through it (dev accuracy kept, and with --fidelity the answers' language)")
    own.add_argument("--dev", required=True, help="dev data: source sentences (retrieval), or an XCOPA val jsonl, XStoryCloze train tsv or SIB-200 dev tsv (choice)")
    own.add_argument("--dev-tgt", help="English translations of --dev, line-aligned (retrieval)")
    own.add_argument("--metric", choices=("retrieval", "choice"), default="retrieval")
    own.add_argument("--skip", type=int, default=0)
    own.add_argument("--limit", type=int, default=None)
    own.add_argument("--lang", default=None, help="choice: connector language (default: from the file name)")
    own.add_argument("--fidelity", metavar="FILE", default=None,
                     help="prompts in the dev language (text, XStoryCloze or SIB-200 file): reject settings that "
                          "lower the share of answers in that language by more than --max-fidelity-drop")
    own.add_argument("--fidelity-limit", type=int, default=16, help="prompts taken from --fidelity (default 16)")
    own.add_argument("--max-fidelity-drop", type=float, default=0.02, help="default 0.02 (2 points)")
    own.add_argument("--max-p", type=float, default=None, metavar="P",
                     help="choice: keep a setting only if it beats no transform by a one-sided sign test at level P "
                          "over the dev items it changes (default 0.05; 1: any gain)")
    own.add_argument("--alphas", default=None, help="comma-separated strengths to try (default: -1,-0.5,-0.25,0.25,0.5,0.75,1)")
    own.add_argument("--positions", default=None, help="comma-separated position policies to try (choice; default: all,last)")
    own.add_argument("--ctx", type=int, default=512)
    own.add_argument("--out", help="write the tuned transform or lexicon here (default: update it in place)")
    own.add_argument("--force", action="store_true")
    sp = subparsers.add_parser("tune", parents=[own, parents.model],
                               help="choose alpha, positions and layers on dev data; write them as the file's "
                                    "defaults (--lexicon: whether to read prompts through it)")
    sp.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from ..data import read_pairs
    from ..tasks import load_task
    from ..model import fingerprint
    from ..transform import Transform
    from ..tune import refuse_test_data, tune

    if bool(args.transform) == bool(args.lexicon):
        raise LingalignError("give --transform or --lexicon (one of them)")
    refuse_test_data(args.dev)
    if args.lexicon:
        return tune_lexicon_command(args)
    transform = Transform.load(args.transform)
    dev_src = dev_tgt = items = None
    lang = args.lang
    if args.metric == "retrieval":
        if not args.dev_tgt:
            raise LingalignError("--metric retrieval needs --dev (source) and --dev-tgt (English)")
        refuse_test_data(args.dev_tgt)
        dev_src, dev_tgt = read_pairs(args.dev, args.dev_tgt, skip=args.skip, limit=args.limit)
    else:
        task = load_task(args.dev, limit=args.limit)  # XCOPA val, XStoryCloze train, SIB-200 dev
        items, lang = list(task.items), args.lang or task.lang
    fidelity_prompts = fidelity_prompts_of(args)
    options: dict[str, Any] = {}
    if args.alphas:
        try:
            options["alphas"] = [float(a) for a in args.alphas.split(",")]
        except ValueError:
            raise LingalignError(f"--alphas must be numbers separated by commas, not {args.alphas!r}") from None
    if args.max_p is not None:
        if not 0.0 < args.max_p <= 1.0:
            raise LingalignError(f"--max-p must be in (0, 1], not {args.max_p}")
        options["max_p"] = args.max_p
    if args.positions:
        from ..transform import check_positions

        options["positions"] = [check_positions(p.strip()) for p in args.positions.split(",")]
    fidelity_lang = lang or transform.source_lang or None
    if fidelity_prompts and not fidelity_lang:
        raise LingalignError("--fidelity needs the prompts' language: give --lang (the transform names no source language)")
    llm = load_llm(args, n_ctx=args.ctx)
    for w in transform.model.check(fingerprint(llm.model_path), force=args.force):
        print(f"lingalign: warning: {w}", file=sys.stderr)
    tuned, record = tune(llm, transform, metric=args.metric, dev_src=dev_src, dev_tgt=dev_tgt, dev_items=items,
                         lang=lang or "en", fidelity_prompts=fidelity_prompts, fidelity_lang=fidelity_lang,
                         max_fidelity_drop=args.max_fidelity_drop, **options)
    out = args.out or args.transform
    tuned.save(out)
    best = record["best"]
    fid = record.get("fidelity")
    if fid and fid["rejected"]:
        print(f"{len(fid['rejected'])} better-scoring setting(s) rejected: answer-language fidelity fell more than "
              f"{fid['max_drop']:g} below no transform's {fid['baseline']:.2f}")
    if record.get("unproven"):
        print(f"{len(record['unproven'])} setting(s) scored above no transform on dev but without evidence "
              f"(sign test p > {record['max_p']:g}; best: {record['unproven'][0]['fixed']} items fixed, "
              f"{record['unproven'][0]['broken']} broken)")
    if best.get("off"):
        print(f"{args.metric} on {record['n_dev']} dev examples: no setting of {record['candidates']} scored above "
              f"no transform ({record['baseline_score']:.3f}): default alpha set to 0 (off) in {out}; "
              f"--alpha overrides it")
        return 0
    print(f"{args.metric} on {record['n_dev']} dev examples: no transform {record['baseline_score']:.3f}; best "
          f"{best['score']:.3f} with alpha {best['alpha']:g}, positions {best['positions']}, layers "
          f"{span(best['layers'])} ({record['candidates']} candidates) -> defaults written to {out}")
    return 0


def fidelity_prompts_of(args: argparse.Namespace) -> list[str] | None:
    """--fidelity's prompts (refused if they look like test data), and --max-fidelity-drop checked."""
    if not args.fidelity:
        return None
    from ..fidelity import read_prompts
    from ..tune import refuse_test_data

    refuse_test_data(args.fidelity)
    if not 0.0 <= args.max_fidelity_drop <= 1.0:
        raise LingalignError(f"--max-fidelity-drop must be in [0, 1], not {args.max_fidelity_drop}")
    prompts = read_prompts(args.fidelity, limit=args.fidelity_limit)
    if prompts and 1.0 / len(prompts) > args.max_fidelity_drop:
        # Said because the tolerance then cannot act as one: a single answer decides.
        print(f"lingalign: note: with {len(prompts)} fidelity prompts one answer is {100 / len(prompts):.1f} points, "
              f"more than --max-fidelity-drop ({100 * args.max_fidelity_drop:g} points): one answer that leaves the "
              f"language rejects a setting (more prompts: --fidelity-limit)", file=sys.stderr)
    return prompts


def tune_lexicon_command(args: argparse.Namespace) -> int:
    """`tune --lexicon`: the verdict written into the lexicon file (`run --lexicon` follows it)."""
    from ..lexicon import Lexicon
    from ..tasks import load_task
    from ..tune import tune_lexicon

    if args.metric != "choice":
        raise LingalignError("--lexicon is tuned on a task's dev items: give --metric choice")
    for flag in ("alphas", "positions", "dev_tgt"):
        if getattr(args, flag):
            raise LingalignError(f"--{flag.replace('_', '-')} tunes a transform, not a lexicon")
    if args.max_p is not None and not 0.0 < args.max_p <= 1.0:
        raise LingalignError(f"--max-p must be in (0, 1], not {args.max_p}")
    lexicon = Lexicon.load(args.lexicon)
    task = load_task(args.dev, limit=args.limit)
    lang = args.lang or task.lang
    prompts = fidelity_prompts_of(args)
    llm = load_llm(args, n_ctx=args.ctx)
    tuned, record = tune_lexicon(llm, lexicon, list(task.items), lang=lang, fidelity_prompts=prompts,
                                 fidelity_lang=lang, max_fidelity_drop=args.max_fidelity_drop, max_p=args.max_p)
    out = args.out or args.lexicon
    model = os.path.basename(str(llm.model_path))
    tuned = dataclasses.replace(tuned, meta={**tuned.meta, "tuned": f"{tuned.meta['tuned']} (model {model})"})
    tuned.save(out)
    verdict = "reads the language through the lexicon" if record["reads"] else f"off ({record['why']})"
    print(f"{record['said']} -> {verdict}; written to {out}")
    return 0
