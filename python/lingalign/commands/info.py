"""`lingalign info`: print a transform file's metadata (method, languages, layers, defaults,
precision, the model it was fitted for, how it was fitted), or a word lexicon's (languages,
words, what it was learned from, `tune --lexicon`'s verdict), or all of it as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import span
from .options import Parents


def register(subparsers: Any, parents: Parents) -> None:
    sp = subparsers.add_parser("info", help="print a transform's or a lexicon's metadata")
    sp.add_argument("transform", help="a transform .gguf or a lexicon .tsv")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from ..transform import Transform

    if _is_lexicon(args.transform):
        return _lexicon_info(args)
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


def _is_lexicon(path: str) -> bool:
    """Whether the file starts as a lingalign lexicon does (anything else is read as a transform,
    which names what is wrong with it)."""
    from ..lexicon import MAGIC

    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC.encode()
    except OSError:
        return False


def _lexicon_info(args: argparse.Namespace) -> int:
    import os

    from ..data import shipped_lexicon_entry, shipped_lexicon_path
    from ..lexicon import Lexicon

    lex = Lexicon.load(args.transform)
    shipped = shipped_lexicon_path(lex.source_lang) if lex.source_lang else None
    rules = (shipped_lexicon_entry(lex.source_lang).get("rule", {})
             if shipped is not None and os.path.samefile(shipped, args.transform) else {})
    verdict = ("shipped: by the manifest's rule per model (below)" if rules and lex.reads is None else
               "not tuned (tune --lexicon measures it)" if lex.reads is None else
               "reads the language" if lex.reads else "off (read as it is)")
    if args.json:
        print(json.dumps({"file": args.transform, "source_lang": lex.source_lang, "target_lang": lex.target_lang,
                          "words": len(lex), "meta": dict(lex.meta), "shipped_rule": rules}, indent=2, sort_keys=True))
        return 0
    print(f"file:        {args.transform}")
    print(f"lexicon:     {lex.source_lang or '?'} -> {lex.target_lang}, {len(lex)} words")
    print(f"tuned:       {verdict}" + (f": {lex.meta['tuned']}" if "tuned" in lex.meta else ""))
    for model, rule in sorted(rules.items()):
        print(f"rule.{model}: " + ("reads prompts in the language" if rule.get("reads") else f"off: {rule.get('why_not')}"))
    for k, v in sorted(lex.meta.items()):
        if k not in ("reads", "tuned"):
            print(f"learned.{k}: {v}")
    return 0
