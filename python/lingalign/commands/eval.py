"""`lingalign eval`: measure alignment, with or without a transform applied inside llama.cpp.

eval retrieval: per-layer top-1 bitext retrieval of line-aligned source/English text.
eval choice: XCOPA-format multiple choice, scored by log-likelihood.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import load_llm, load_transform
from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    ev = subparsers.add_parser("eval", help="measure alignment: bitext retrieval, multiple choice")
    evsub = ev.add_subparsers(dest="eval_command", required=True, metavar="EVAL")
    json_output = argparse.ArgumentParser(add_help=False)  # how both print
    json_output.add_argument("--json", action="store_true", help="print one JSON object")

    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--src", required=True)
    own.add_argument("--tgt", required=True)
    own.add_argument("--skip", type=int, default=0)
    own.add_argument("--limit", type=int, default=None)
    own.add_argument("--layers", default="all", help="layers to measure (default: all)")
    sp = evsub.add_parser("retrieval", parents=[own, parents.transform, json_output, parents.model],
                          help="per-layer top-1 bitext retrieval (source read with the transform)")
    sp.set_defaults(func=cmd_eval_retrieval)

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--data", required=True, help="JSONL: premise, choice1, choice2, question, label")
    own.add_argument("--limit", type=int, default=None)
    own.add_argument("--lang", default=None, help="connector language (default: from the file name, e.g. val.sw.jsonl)")
    own.add_argument("--ctx", type=int, default=256, help="context size")
    sp = evsub.add_parser("choice", parents=[own, parents.transform, json_output, parents.model],
                          help="XCOPA-format multiple choice by log-likelihood")
    sp.set_defaults(func=cmd_eval_choice)


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from ..capturing import parse_layer_spec
    from ..data import read_pairs
    from ..evaluate import eval_retrieval

    from .. import _llama
    from ..model import fingerprint

    src, tgt = read_pairs(args.src, args.tgt, skip=args.skip, limit=args.limit)
    transform = load_transform(args)
    llm = load_llm(args)
    layers = parse_layer_spec(args.layers, _llama.n_layer(llm))
    if transform is not None:
        for w in transform.model.check(fingerprint(llm.model_path), force=args.force):
            print(f"lingalign: warning: {w}", file=sys.stderr)
    result = eval_retrieval(
        llm, src, tgt, transform=transform, alpha=args.alpha, positions=args.positions, layers=layers,
        force=args.force,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'layer':>5} {'src->tgt':>9} {'tgt->src':>9} {'pair dist':>10}")
    for row in result["layers"]:
        print(f"{row['layer']:>5} {row['src2tgt']:>9.3f} {row['tgt2src']:>9.3f} {row['pair_distance']:>10.4f}")
    print(f"best layer {result['best_layer']}: top-1 {result['best_top1']:.3f}; "
          f"last layer {result['last_layer']}: {result['last_top1']:.3f}  (n={result['n']})")
    return 0


def cmd_eval_choice(args: argparse.Namespace) -> int:
    from ..evaluate import choice_language, eval_choice, load_choice_items

    items = load_choice_items(args.data)[: args.limit]
    transform = load_transform(args)
    llm = load_llm(args, n_ctx=args.ctx)
    result = eval_choice(llm, items, lang=args.lang or choice_language(args.data), transform=transform,
                         alpha=args.alpha, positions=args.positions, force=args.force)
    for w in result.pop("warnings"):
        print(f"lingalign: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accuracy {result['accuracy']:.3f} (length-normalized {result['accuracy_norm']:.3f}), "
              f"n={result['n']}, connectors: {result['lang']}")
    return 0
