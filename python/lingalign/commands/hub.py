"""`lingalign pull`, `push` and `list`: transforms on the Hugging Face Hub and on this machine.

pull: download a transform, verified, and check it fits the model it will be applied to.
push: upload a transform and a model card.
list: the transforms found locally (shipped, Hub cache, given folders) and the model each fits.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("pull", help="download a transform from the Hugging Face Hub, verified")
    sp.add_argument("repo_id")
    sp.add_argument("--file", default=None, help="file in the repository (default: its only .gguf)")
    sp.add_argument("--revision", default=None, help="branch, tag or commit to pin")
    sp.add_argument("--force", action="store_true", help="accept a transform made for another model")
    sp.add_argument("--model", help="the model it will be applied to (default: the default model)")
    sp.set_defaults(func=cmd_pull)

    sp = subparsers.add_parser("push", help="upload a transform and a model card to the Hugging Face Hub")
    sp.add_argument("transform")
    sp.add_argument("repo_id")
    sp.add_argument("--private", action="store_true")
    sp.set_defaults(func=cmd_push)

    sp = subparsers.add_parser("list", help="transforms available locally (Hub cache, folders) and the model each fits")
    sp.add_argument("--dir", action="append", default=[], help="also list the .gguf files of this folder")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)


def cmd_pull(args: argparse.Namespace) -> int:
    from ..hub import pull
    from ..model import fingerprint
    from ..models import resolve_model

    model = fingerprint(resolve_model(args.model))
    path, transform, warnings = pull(args.repo_id, filename=args.file, revision=args.revision, model=model,
                                     force=args.force)
    for w in warnings:
        print(f"lingalign: warning: {w}", file=sys.stderr)
    print(path)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ..hub import push

    print(push(args.transform, args.repo_id, private=args.private))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..hub import local_transforms

    from ..data import shipped_dir

    dirs = ([shipped_dir()] if shipped_dir().is_dir() else []) + [Path(d) for d in args.dir]
    entries = local_transforms(dirs)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("no transforms found (lingalign pull REPO_ID downloads one)")
    for e in entries:
        if "error" in e:
            print(f"{e['path']}  [{e['origin']}]  INVALID: {e['error']}")
        else:
            print(f"{e['path']}  [{e['origin']}]  {e['source_lang'] or '?'}->{e['target_lang']} {e['method']}, "
                  f"for {e['model']} (vocab {e['vocab_sha256']})")
    return 0
