"""`lingalign tune`: choose a transform's alpha, positions and layers on dev data (retrieval or
multiple choice) and write them into the file as its defaults (or into a copy, with --out)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import LingalignError
from .common import load_llm, span
from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--transform", required=True)
    own.add_argument("--dev", required=True, help="dev data: source sentences (retrieval), or an XCOPA val jsonl, XStoryCloze train tsv or SIB-200 dev tsv (choice)")
    own.add_argument("--dev-tgt", help="English translations of --dev, line-aligned (retrieval)")
    own.add_argument("--metric", choices=("retrieval", "choice"), default="retrieval")
    own.add_argument("--skip", type=int, default=0)
    own.add_argument("--limit", type=int, default=None)
    own.add_argument("--lang", default=None, help="choice: connector language (default: from the file name)")
    own.add_argument("--ctx", type=int, default=512)
    own.add_argument("--out", help="write the tuned transform here (default: update --transform in place)")
    own.add_argument("--force", action="store_true")
    sp = subparsers.add_parser("tune", parents=[own, parents.model],
                               help="choose alpha, positions and layers on dev data; write them as the file's defaults")
    sp.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from ..data import read_pairs
    from ..tasks import load_task
    from ..model import fingerprint
    from ..transform import Transform
    from ..tune import refuse_test_data, tune

    refuse_test_data(args.dev)
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
    llm = load_llm(args, n_ctx=args.ctx)
    for w in transform.model.check(fingerprint(llm.model_path), force=args.force):
        print(f"lingalign: warning: {w}", file=sys.stderr)
    tuned, record = tune(llm, transform, metric=args.metric, dev_src=dev_src, dev_tgt=dev_tgt, dev_items=items,
                         lang=lang or "en")
    out = args.out or args.transform
    tuned.save(out)
    best = record["best"]
    if best.get("off"):
        print(f"{args.metric} on {record['n_dev']} dev examples: no setting of {record['candidates']} scored above "
              f"no transform ({record['baseline_score']:.3f}): default alpha set to 0 (off) in {out}; "
              f"--alpha overrides it")
        return 0
    print(f"{args.metric} on {record['n_dev']} dev examples: no transform {record['baseline_score']:.3f}; best "
          f"{best['score']:.3f} with alpha {best['alpha']:g}, positions {best['positions']}, layers "
          f"{span(best['layers'])} ({record['candidates']} candidates) -> defaults written to {out}")
    return 0
