"""`lingalign run`: generate a completion for a prompt, with a transform applied inside
llama.cpp if one is given (a file, the one shipped for a language, or auto: the one for the
language detected in the prompt)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import LingalignError
from .common import load_llm
from .options import Parents, transform_options


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("-p", "--prompt", required=True)
    own.add_argument("--lang", help="use the transform shipped for this language (sw, swh, es, ...; default model), or "
                     "auto: detect the prompt's language")
    own.add_argument("-n", "--n-predict", type=int, default=64, help="max tokens to generate")
    own.add_argument("--temperature", type=float, default=0.0)
    own.add_argument("--seed", type=int, default=0)
    own.add_argument("--ctx", type=int, default=1024, help="context size")
    own.add_argument("--chat", action="store_true",
                     help="send the prompt as a user message in the model's chat template (instruct models answer "
                          "it rather than continue it)")
    own.add_argument("--lexicon", default=None, metavar="FILE.tsv|shipped|none",
                     help="read the prompt with its word-by-word English gloss before it (`lingalign lexicon`, or "
                          "shipped: --lang's); by default --lang's shipped lexicon where it was measured with this "
                          "model; none: never")
    own.add_argument("--device-maps", action="store_true",
                     help="apply the maps of offloaded layers on the GPU (see docs/install.md)")
    # run's --transform keeps its shorter help (eval's says where the transform is applied).
    transform = transform_options(transform_help="transform .gguf")
    sp = subparsers.add_parser("run", parents=[own, transform, parents.model],
                               help="generate a completion, with a transform if given")
    sp.set_defaults(func=cmd_run)


def read_through_lexicon(args: argparse.Namespace) -> str:
    """The prompt as the model reads it: annotated with --lexicon's gloss (a file, or `shipped`:
    --lang's shipped lexicon), as it is with `none`; by default with --lang's shipped lexicon
    where its manifest's rule says so for this model (its answers stayed in the language on dev
    texts; bench/gloss.py), saying what it was measured to do."""
    from ..data import normalize_lang, shipped_lexicon_entry, shipped_lexicon_path, shipped_model_name
    from ..lexicon import Lexicon

    if args.lexicon == "none":
        return str(args.prompt)
    if args.lexicon not in (None, "shipped"):
        lexicon = Lexicon.load(args.lexicon)
        if lexicon.reads is False:  # `lingalign tune --lexicon` measured it off
            print(f"lingalign: {args.lexicon} was tuned off ({lexicon.meta.get('tuned', 'no record')}): the prompt is "
                  "read as it is (tune it again on other dev data, or learn it again, to use it)", file=sys.stderr)
            return str(args.prompt)
    else:
        lang = normalize_lang(args.lang) if args.lang and args.lang != "auto" else None
        path = shipped_lexicon_path(lang) if lang else None
        if path is None:
            if args.lexicon == "shipped":
                raise LingalignError(f"--lexicon shipped: no lexicon is shipped for {args.lang or 'no --lang'}")
            return str(args.prompt)
        model = shipped_model_name(args.model)
        entry = shipped_lexicon_entry(lang)
        measured = entry.get("measured", {}).get(model, {})
        rule = entry.get("rule", {}).get(model)
        if args.lexicon is None and not (rule or {}).get("reads"):
            why = ("not measured with " + model if rule is None else
                   f"with {model} {rule.get('why_not') or 'the rule keeps it off'}")
            print(f"lingalign: a {lang} lexicon is shipped, not used by default ({why}): --lexicon shipped reads "
                  "the prompt through it", file=sys.stderr)
            return str(args.prompt)
        lexicon = Lexicon.load(path)
        said = "; ".join(f"{k} (n={m['n']}): accuracy {m['accuracy_without']:.3f} without, {m['accuracy']:.3f} with"
                         + (f", answers in the language {m['fidelity_without']:.2f} without, {m['fidelity']:.2f} with"
                            if "fidelity" in m else "")
                         for k, m in sorted(measured.items()))
        print(f"lingalign: reading the prompt through the shipped {lang} lexicon ({len(lexicon)} words; "
              f"--lexicon none turns it off)" + (f"; measured with this model, {said}" if said else ""),
              file=sys.stderr)
    prompt = lexicon.annotate(args.prompt)
    print(f"lingalign: the model reads: {prompt!r}", file=sys.stderr)
    return prompt


def cmd_run(args: argparse.Namespace) -> int:
    from ..data import shipped_task_results, shipped_transform_path
    from ..hook import attach
    from ..language_check import shipped_language_check
    from ..transform import Transform

    if args.transform and args.lang:
        raise LingalignError("give --transform or --lang, not both")
    auto = args.lang == "auto"
    path = args.transform or (shipped_transform_path(args.lang, args.model) if args.lang and not auto else None)
    transform = Transform.load(path) if path else None
    prompt = read_through_lexicon(args)
    llm = load_llm(args, n_ctx=args.ctx)
    steering = attach(llm)
    if args.device_maps:
        print(f"lingalign: device maps: {steering.set_device_maps(True)}", file=sys.stderr)
    if transform is not None:
        for w in steering.set(transform, alpha=args.alpha, positions=args.positions, force=args.force):
            print(f"lingalign: warning: {w}", file=sys.stderr)
        if not args.transform:
            for line in shipped_task_results(args.lang, args.model):
                print(f"lingalign: measured with this shipped transform, {line}", file=sys.stderr)
            check = shipped_language_check(args.lang, args.model)
            if check:
                print(f"lingalign: measured of this model, {check}", file=sys.stderr)
    if auto:
        from ..route import Router

        steering.set_router(Router.shipped(args.model))
    if args.chat:
        from .. import _llama

        if not _llama.has_chat_template(llm):
            raise LingalignError("this model has no chat template: leave out --chat")
        reply = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}],
                                           max_tokens=args.n_predict, temperature=args.temperature, seed=args.seed)
        text = reply["choices"][0]["message"]["content"] or ""
    else:
        text = llm(prompt, max_tokens=args.n_predict, temperature=args.temperature, seed=args.seed)["choices"][0]["text"]
    if auto:
        t = steering.transform
        print(f"lingalign: detected {steering.routed_language or 'unknown'}; transform: "
              f"{(t.source_lang + '->' + t.target_lang) if t else 'none'}", file=sys.stderr)
    print(text)
    return 0
