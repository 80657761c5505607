"""How much could a mean shift help at best? Each dev story's own English translation as the target.

    python bench/oracle.py --model qwen2.5-coder-1.5b --langs sw,id [--layers default] [--threads 1]
    python bench/oracle.py --langs sw --check 5   # the oracle does move stories onto their translations
    python bench/oracle.py --report         # docs/oracle.md from the records

Every vector or map the product fits moves a language's hidden states by what it learned from
other sentences. The oracle knows the answer for each item: at one layer it adds, to every token
of the story and of its endings, the difference between the mean hidden state of that story's
English translation and the mean state of the story itself (both read with no transform). So the
story's mean state at that layer becomes exactly its English translation's, which is what the
fitted vectors and maps aim for (their objectives compare sentences' mean states). If even this
does not raise accuracy, fitting them better will not; if it does, the fitted methods fall short
in what they predict, not in what they do.

Scored on bench/methods.py's larger dev sample (the same 200 XStoryCloze dev stories a language,
option log-likelihood), against its no-transform record of those items, with the sign test `tune`
applies. The oracle's vector splits in two parts, each also measured alone: `language`, the mean
of all the stories' differences (the language-level mean shift, what meanshift fits), and
`content`, the story's difference less that mean (what the story's own words add). The control
`mismatched` adds another story's difference (the same kind and size of shift, without the
item's own content). Layers: `default` is the layer fit's default chooses for the language
(bench/methods.py's contrastive-auto transform, fitted on SIB-200 train), or give numbers;
--alpha scales the vectors (default 1: the full difference); --positions prompt leaves the
endings' own tokens alone (they still read the moved story). The contexts are captured once (the
story's four sentences, as the likelihood protocol reads them) and cached outside the
repository. One record per language, layer, kind and strength in bench/results/oracle/<model>/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from downstream import CACHE, SIB_OF, cached_capture, dev_file  # noqa: E402
from methods import RESULTS as METHODS, STORY_DEV_N, english_right  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "oracle"
DOC = ROOT / "docs" / "oracle.md"
KINDS = ("oracle", "language", "content", "mismatched")


def contexts(llm: Any, model: str, lang: str, items: Any) -> Any:
    """The stories' contexts (as the likelihood protocol reads them) captured at every layer, cached."""
    from lingalign.tasks import likelihood_prompt

    return cached_capture(llm, CACHE / model / f"xstorycloze-{lang}-dev{len(items)}-contexts.npz",
                          lambda: [likelihood_prompt(it, lang).context for it in items], f"{lang} story contexts")


def shifts(src: Any, en: Any, layer: int, kind: str) -> Any:
    """One vector per item: its English context's mean state minus its own, at the layer
    (language: the mean of those differences; content: the item's difference less that mean;
    mismatched: the next item's difference, cyclically)."""
    import numpy as np

    diff = en.layer(layer) - src.layer(layer)
    if kind == "mismatched":
        return np.roll(diff, 1, axis=0)
    if kind == "language":
        return np.broadcast_to(diff.mean(axis=0), diff.shape)
    if kind == "content":
        return diff - diff.mean(axis=0)
    return diff


def oracle_transform(vector: Any, layer: int, model: Any, lang: str, alpha: float = 1.0,
                     positions: str = "all") -> Any:
    """A one-layer meanshift transform for the model (its fingerprint) adding `vector` (times
    alpha) at the positions."""
    import numpy as np

    import lingalign
    from lingalign.layer import LayerMap

    return lingalign.Transform(layers={layer: LayerMap(vector=np.ascontiguousarray(vector))}, model=model,
                               method="meanshift", source_lang=lang, alpha=alpha, positions=positions)


def check(llm: Any, lang: str, items: Any, src: Any, en: Any, layer: int, model: Any, n: int) -> None:
    """Reads the first n stories again with their oracle vector live: their mean state at the
    layer must now be their English translation's (printed: the largest error, and the largest
    difference the vector removes)."""
    import numpy as np

    import lingalign
    from lingalign.tasks import likelihood_prompt

    vectors = shifts(src, en, layer, "oracle")
    for k in range(min(n, len(items))):
        t = oracle_transform(vectors[k], layer, model, lang)
        moved = lingalign.capture(llm, [likelihood_prompt(items[k], lang).context], layers=[layer], transform=t,
                                  progress=False).layer(layer)[0]
        error = np.abs(moved - en.layer(layer)[k]).max()
        print(f"  {lang} story {k + 1}, layer {layer}: |moved - English| <= {error:.4f}, "
              f"|story - English| <= {np.abs(vectors[k]).max():.2f}", flush=True)


def run(args: argparse.Namespace, llm: Any) -> None:
    import numpy as np

    import lingalign
    from lingalign.evaluate import eval_choice
    from lingalign.metrics import changed_answers, sign_test_p
    from lingalign.tasks import load_task

    out = RESULTS / args.model
    command = " ".join(["python bench/oracle.py", *sys.argv[1:]])
    for lang in args.langs:
        fitted = lingalign.Transform.load(METHODS / args.model / "transforms"
                                          / f"{SIB_OF[lang]}-contrastive-auto.gguf")
        none = json.loads((METHODS / args.model / f"dev-{lang}-none-0-n{STORY_DEV_N}.json").read_text(encoding="utf-8"))
        items = load_task(dev_file("xstorycloze", lang), limit=STORY_DEV_N, seed=0)
        en_items = load_task(dev_file("xstorycloze", "en"), limit=STORY_DEV_N, seed=0)
        if [it.uid for it in items.items] != [it.uid for it in en_items.items]:
            raise SystemExit(f"the {lang} and en dev samples hold different stories")
        src, en = contexts(llm, args.model, lang, items.items), contexts(llm, args.model, "en", en_items.items)
        layers = ([int(il) for il in fitted.layers] if args.layers == "default"
                  else [int(x) for x in args.layers.split(",")])
        for layer in layers:
            if args.check:
                check(llm, lang, items.items, src, en, layer, fitted.model, args.check)
                continue
            for kind in args.kinds:
                strength = "" if args.alpha == 1 else f"-a{args.alpha:g}"
                where = "" if args.positions == "all" else f"-{args.positions}"
                path = out / f"{lang}-layer{layer}-{kind}{strength}{where}.json"
                if path.is_file():
                    continue
                vectors = shifts(src, en, layer, kind)
                t0 = time.time()
                correct = []
                for k, item in enumerate(items.items):
                    t = oracle_transform(vectors[k], layer, fitted.model, lang, args.alpha, args.positions)
                    correct += eval_choice(llm, [item], lang=lang, transform=t)["correct"]
                fixed, broken = changed_answers(correct, none["correct"])
                acc = sum(correct) / len(correct)
                rec = {"command": command, "model": args.model, "lang": lang, "layer": layer, "kind": kind,
                       "alpha": args.alpha, "positions": args.positions,
                       "n": len(correct), "accuracy": acc, "accuracy_without": none["accuracy"], "fixed": fixed,
                       "broken": broken, "sign_p": sign_test_p(fixed, broken), "correct": correct,
                       "shift_norm_mean": float(np.linalg.norm(vectors, axis=1).mean()),  # before alpha
                       "state_norm_mean": float(np.linalg.norm(src.layer(layer), axis=1).mean()),
                       "seconds": round(time.time() - t0, 1),
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
                print(f"  {path.stem}: accuracy {acc:.3f} (without {none['accuracy']:.3f}), fixed {fixed} / "
                      f"broken {broken}, p {rec['sign_p']:.3f}", flush=True)


def report() -> None:
    lines = ["# The oracle mean shift", "",
             "Made by `python bench/oracle.py` (records in `bench/results/oracle/<model>/`); this page by "
             "`python bench/oracle.py --report`.", "",
             *(line for par in __doc__.split("\n\n")[2:4] for line in (" ".join(par.split()), "")),
             "Shift: the mean length of the added vector (alpha times the difference), against the mean "
             "length of the stories' mean states at that layer. Fixed / broken against no transform on the "
             "same items; p: the one-sided sign test; English right: of the fixed and of the broken items, how "
             "many the model answers right in English (bench/methods.py's English record of the same "
             "stories).", ""]
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        recs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(model_dir.glob("*.json"))]
        en_path = METHODS / model_dir.name / f"dev-en-none-0-n{STORY_DEV_N}.json"
        en = json.loads(en_path.read_text(encoding="utf-8")) if en_path.is_file() else None
        nones = {(lang, n): json.loads((METHODS / model_dir.name / f"dev-{lang}-none-0-n{n}.json")
                                       .read_text(encoding="utf-8"))
                 for lang, n in {(r["lang"], r["n"]) for r in recs}}
        lines += [f"## {model_dir.name}", "",
                  "| language | layer | kind | alpha | positions | n | no transform | with | fixed / broken | p "
                  "| English right | shift / state |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(recs, key=lambda r: (r["lang"], r["layer"], KINDS.index(r["kind"]), -r.get("alpha", 1.0),
                                             r.get("positions", "all"))):
            none = nones[(r["lang"], r["n"])]
            lines.append(f"| {r['lang']} | {r['layer']} | {r['kind']} | {r.get('alpha', 1.0):g} | "
                         f"{r.get('positions', 'all')} | {r['n']} | "
                         f"{r['accuracy_without']:.3f} | {r['accuracy']:.3f} | {r['fixed']} / {r['broken']} | "
                         f"{r['sign_p']:.3f} | "
                         f"{english_right(r, none, en)} | {r.get('alpha', 1.0) * r['shift_norm_mean']:.1f} / "
                         f"{r['state_norm_mean']:.1f} |")
        lines.append("")
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--langs", default="sw", help="XStoryCloze languages, comma-separated")
    ap.add_argument("--layers", default="default", help="'default' (the layer fit's default chooses) or numbers")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    ap.add_argument("--alpha", type=float, default=1.0, help="strength of the added vectors")
    ap.add_argument("--positions", default="all", choices=("all", "prompt"),
                    help="prompt: the story's tokens only, the endings read as the model makes them")
    ap.add_argument("--check", type=int, default=0, metavar="N",
                    help="instead of scoring: show that the oracle moves the first N stories onto their translations")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "python"))
    if args.report:
        report()
        return
    args.langs = args.langs.split(",")
    args.kinds = args.kinds.split(",")
    if set(args.kinds) - set(KINDS):
        raise SystemExit(f"unknown kind(s) {sorted(set(args.kinds) - set(KINDS))} (of {', '.join(KINDS)})")
    from lingalign.hook import open_model

    llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    run(args, llm)


if __name__ == "__main__":
    main()
