"""`lingalign demo`: the whole job, with numbers: transforms fitted per language and measured on
held-out pairs, one answer with and without, labelled with its language, and a task score."""

from __future__ import annotations

import argparse
from typing import Any

from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--task-data", default=None, metavar="DIR",
                     help="a folder with xstorycloze/sw.eval.tsv and en.eval.tsv (default: ../shared/data when there)")
    sp = subparsers.add_parser("demo", parents=[own, parents.model],
                               help="the whole job on the embedded corpus, with numbers (about two minutes)")
    sp.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(model=args.model, threads=args.threads, n_gpu_layers=args.n_gpu_layers, task_data=args.task_data)
