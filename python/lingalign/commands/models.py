"""`lingalign models`: the models lingalign knows by name, whether each is installed (its PyPI
packages) and assembled (in the model cache), and its architecture."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("models", help="list the models known by name (--model NAME)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import model_table

    table = model_table()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'name':<20} {'architecture':<13} {'layers':>6} {'n_embd':>6}  {'state':<22} description")
    for m in table:
        state = "assembled" if m["assembled"] else "installed" if m["installed"] else "not installed"
        print(f"{m['name']:<20} {m['architecture']:<13} {m['layers']:>6} {m['n_embd']:>6}  {state:<22} "
              f"{m['description']}{' (default)' if m['default'] else ''}")
        if not m["installed"]:
            print(f"{'':<20} install: {m['install']}")
    return 0
