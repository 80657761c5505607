"""`lingalign info`: print a transform file's metadata (method, languages, layers, defaults,
precision, the model it was fitted for, how it was fitted), or all of it as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import span
from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("info", help="print a transform file's metadata")
    sp.add_argument("transform")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from ..transform import Transform

    t = Transform.load(args.transform)
    summary = t.summary()
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    m = t.model
    print(f"file:        {args.transform}")
    print(f"method:      {t.method} ({', '.join(summary['kinds'])})")
    print(f"languages:   {t.source_lang or '?'} -> {t.target_lang}")
    print(f"layers:      {span(sorted(t.layers))}")
    print(f"defaults:    alpha {t.alpha:g}, positions {t.positions}")
    print(f"precision:   {t.precision}")
    print(f"model:       {m.name or m.architecture} ({m.architecture}, n_embd {m.n_embd}, n_layer {m.n_layer})")
    print(f"vocab hash:  {m.vocab_sha256}")
    print(f"weights:     {m.weights_sha256}")
    for k, v in sorted(t.fit_info.items()):
        print(f"fit.{k}: {v}")
    return 0
