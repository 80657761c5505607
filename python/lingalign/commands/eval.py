"""`lingalign eval`: measure alignment, with or without a transform applied inside llama.cpp.

eval retrieval: per-layer top-1 bitext retrieval of line-aligned source/English text.
eval choice: multiple choice (XCOPA, XStoryCloze, SIB-200), by option likelihood or INCLINE's
  lettered prompt, with an English reference and the share of the gap a transform closes.
eval fidelity: whether greedy answers stay in the prompts' language, with and without a transform.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import LingalignError
from ..tasks import PROTOCOLS, TASKS
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
    own.add_argument("--plot", default=None, metavar="FILE.png",
                     help="draw top-1 per layer, with and without the transform (needs matplotlib)")
    sp = evsub.add_parser("retrieval", parents=[own, parents.transform, json_output, parents.model],
                          help="per-layer top-1 bitext retrieval (source read with the transform)")
    sp.set_defaults(func=cmd_eval_retrieval)

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--data", required=True,
                     help="XCOPA jsonl, XStoryCloze tsv or SIB-200 tsv (detected from the file)")
    own.add_argument("--task", choices=TASKS, default=None, help="the file's task (default: detected)")
    own.add_argument("--protocol", choices=PROTOCOLS, default="likelihood",
                     help="likelihood: of each option after the item's text; letter: INCLINE's English "
                          "instruction with lettered options, both option orders (default: likelihood)")
    own.add_argument("--english", default=None,
                     help="the same items in English: adds english_accuracy, and gap_closed with a transform")
    own.add_argument("--limit", type=int, default=None, help="a seeded sample of N items, stratified by label")
    own.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    own.add_argument("--lang", default=None, help="connector language for XCOPA (default: from the file name)")
    own.add_argument("--ctx", type=int, default=256, help="context size")
    own.add_argument("--lexicon", default=None, metavar="FILE.tsv",
                     help="read each item through a word lexicon (`lingalign lexicon`), as --reading says")
    own.add_argument("--reading", default=None, choices=("before", "gloss"),
                     help="with --lexicon: before (the text's gloss before it) or gloss (the glosses of the text "
                          "and of in-language options instead of them); default: the task's (gloss for "
                          "XStoryCloze and XCOPA, before for SIB-200)")
    sp = evsub.add_parser("choice", parents=[own, parents.transform, json_output, parents.model],
                          help="multiple choice accuracy (XCOPA, XStoryCloze, SIB-200)")
    sp.set_defaults(func=cmd_eval_choice)

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--data", required=True,
                     help="prompts: an XStoryCloze tsv (each story's first four sentences), a SIB-200 tsv "
                          "(its texts) or a text file (a prompt a line)")
    own.add_argument("--lang", required=True, help="the prompts' language (sw, swh, swh_Latn, ...)")
    own.add_argument("--limit", type=int, default=None, help="the first N prompts (task files: a stratified sample)")
    own.add_argument("-n", "--max-tokens", type=int, default=48, help="tokens per answer (default 48)")
    own.add_argument("--chat", action="store_true", help="ask in the model's chat template")
    own.add_argument("--ctx", type=int, default=512, help="context size")
    own.add_argument("--lexicon", default=None, metavar="FILE.tsv",
                     help="read each prompt with its word-by-word English gloss before it (`lingalign lexicon`)")
    sp = evsub.add_parser("fidelity", parents=[own, parents.transform, json_output, parents.model],
                          help="share of greedy answers in the prompts' language, with and without a transform")
    sp.set_defaults(func=cmd_eval_fidelity)


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
    if args.plot:
        from ..plots import plot_retrieval

        plain = result if transform is None else eval_retrieval(llm, src, tgt, layers=layers)
        plot_retrieval(plain["layers"], result["layers"] if transform is not None else None, args.plot,
                       title=f"{os.path.basename(args.src)} -> {os.path.basename(args.tgt)}, n={result['n']}"
                             + (f", {os.path.basename(args.transform)}" if args.transform else ""))
        print(f"lingalign: picture written to {args.plot}", file=sys.stderr)
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
    from ..evaluate import eval_choice
    from ..lexicon import Lexicon
    from ..tasks import load_task

    task = load_task(args.data, task=args.task, limit=args.limit, seed=args.seed)
    english = load_task(args.english, task=task.name, limit=args.limit, seed=args.seed) if args.english else None
    transform = load_transform(args)
    lexicon = Lexicon.load(args.lexicon) if args.lexicon else None
    if args.reading and lexicon is None:
        raise LingalignError("--reading says how items are read through --lexicon: give --lexicon")
    llm = load_llm(args, n_ctx=args.ctx)
    result = eval_choice(llm, task, lang=args.lang, protocol=args.protocol, english=english, transform=transform,
                         alpha=args.alpha, positions=args.positions, force=args.force, lexicon=lexicon,
                         reading=args.reading)
    for w in result.pop("warnings"):
        print(f"lingalign: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return 0
    line = f"{result['task']} {result['lang']}, {result['protocol']}: accuracy {result['accuracy']:.3f}"
    if result["protocol"] == "likelihood":
        line += f" (length-normalized {result['accuracy_norm']:.3f})"
    else:
        line += f" (orders {result['accuracy_by_order'][0]:.3f} / {result['accuracy_by_order'][1]:.3f}, " \
                f"answer A {result['a_share']:.0%})"
    if "reading" in result:
        line += f" (read through the lexicon: {result['reading']})"
    print(line + f", n={result['n']}, +-{1.96 * result['accuracy_se']:.3f} at 95%")
    what = " and ".join(w for w, given in (("transform", transform is not None), ("lexicon", lexicon is not None)) if given)
    if "english_accuracy" in result:
        extra = f"English reference {result['english_accuracy']:.3f}"
        if "gap_closed" in result:
            gap = result["gap_closed"]
            extra += f"; without the {what} " \
                     f"{result['accuracy_without']:.3f}; gap closed " + \
                     (f"{gap:.0%}" if gap is not None else "n/a (no gap)")
            extra += f"\nanswers changed by the {what}: " \
                     f"{result['fixed']} fixed, {result['broken']} broken " \
                     f"(one-sided sign test p = {result['sign_p']:.3f})"
        print(extra)
    return 0


def cmd_eval_fidelity(args: argparse.Namespace) -> int:
    from ..fidelity import eval_fidelity, read_prompts
    from ..lexicon import Lexicon

    prompts = read_prompts(args.data, limit=args.limit)
    transform = load_transform(args)
    lexicon = Lexicon.load(args.lexicon) if args.lexicon else None
    llm = load_llm(args, n_ctx=args.ctx)
    result = eval_fidelity(llm, prompts, args.lang, transform=transform, alpha=args.alpha, positions=args.positions,
                           force=args.force, max_tokens=args.max_tokens, chat=args.chat, lexicon=lexicon)
    for w in result.pop("warnings", []):
        print(f"lingalign: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    for which in ("without", "with"):
        if which in result:
            r = result[which]
            print(f"{which + (' transform:' if args.lexicon is None else ':'):<19} fidelity {r['fidelity']:.3f}, English {r['english_share']:.3f}, "
                  f"looping {r['looping']:.3f}  (n={r['n']}, {r['lang']})")
    for row in result["examples"]:
        print(f"\nprompt:  {row['prompt'][:100]!r}")
        for which in ("without", "with"):
            if which in row:
                print(f"{which + ':':<8} {row[which][:100]!r}")
    return 0
