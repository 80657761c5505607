"""`lingalign serve`: an OpenAI-compatible local server (llama-cpp-python's) that applies a
transform per request, named in the request or routed by the prompt's language."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--transforms", action="append", default=[], metavar="DIR",
                     help="serve every transform .gguf in DIR, named by its file name (repeatable)")
    own.add_argument("--shipped", action="store_true", help="serve the transforms shipped for the default model")
    own.add_argument("--default", default="none", metavar="auto|none|NAME",
                     help="what requests without a lingalign field get (default: none)")
    own.add_argument("--lexicon", default="none", choices=("auto", "none"),
                     help="what requests that do not say get: auto reads each prompt through the shipped lexicon of "
                          "its language where that was measured to help with this model (as run --lang does); "
                          "default: none")
    own.add_argument("--lexicon-file", action="append", default=[], metavar="FILE",
                     help="serve your own lexicon (lingalign lexicon; its language from the file) in place of the "
                          "shipped one; with --lexicon auto it reads requests by default only if tune --lexicon "
                          "measured it on (repeatable)")
    own.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    own.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port, printed)")
    own.add_argument("--api-key", default=os.environ.get("LINGALIGN_API_KEY"),
                     help="require `Authorization: Bearer KEY` on every route (default: $LINGALIGN_API_KEY, or none)")
    own.add_argument("--ctx", type=int, default=2048, help="context size (default 2048)")
    own.add_argument("--interrupt-requests", action="store_true",
                     help="let a new request cut a running stream short (llama-cpp-python's default); without it every "
                          "request runs to its end, in arrival order")
    own.add_argument("--force", action="store_true", help="serve transforms made for another model of the same shape")
    sp = subparsers.add_parser("serve", parents=[own, parents.model],
                               help="an OpenAI-compatible server that applies a transform per request")
    sp.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import ServeConfig, run

    run(ServeConfig(model=args.model, transform_dirs=tuple(Path(d) for d in args.transforms), shipped=args.shipped,
                    default=args.default, host=args.host, port=args.port, api_key=args.api_key, n_ctx=args.ctx,
                    n_threads=args.threads, n_gpu_layers=args.n_gpu_layers,
                    interrupt_requests=args.interrupt_requests, force=args.force,
                    lexicon=args.lexicon, lexicon_files=tuple(Path(f) for f in args.lexicon_file)))
    return 0
