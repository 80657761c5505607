"""The results table: every method on the same held-out data, with the intervention live.

    python bench/quality.py [--langs spa,deu,...] [--methods meanshift,ridge,...] [--no-xcopa]

Per language (Tatoeba, ../shared/data; 1000 pairs, the English side differs by language):
- fit on pairs 1-450, tune on pairs 451-500 (dev), measure on pairs 501-1000 (test) (swh has
  390 pairs: 1-145, 146-195, 196-390);
- retrieval: source -> English top-1 by cosine over the 500 test pairs, at the best layer and
  at the last layer, the source read with the transform active inside llama.cpp (layers after
  the intervened one see its effect) and the English side without;
- XCOPA (id, it, sw, zh, vi, tr): the language's transform, its strength and position policy
  re-tuned on XCOPA val (summed log-likelihood accuracy), measured on XCOPA test.
Rows: no transform; per-language mean-centring (an evaluation-side reference, not a transform:
both sides minus their own training mean); each fitting method. Each method's settings come
from one rule for all languages (fit layers, dev tuning grid); nothing is tuned on test data.

Equivalent CLI for one cell (spa, ridge):
    lingalign fit --method ridge --src tatoeba.spa-eng.spa --tgt tatoeba.spa-eng.eng --limit 450 \
        --layers 4,6,8,10,12,17 --out spa.gguf
    lingalign tune --transform spa.gguf --dev tatoeba.spa-eng.spa --dev-tgt tatoeba.spa-eng.eng --skip 450 --limit 50
    lingalign eval retrieval --src tatoeba.spa-eng.spa --tgt tatoeba.spa-eng.eng --skip 500 --limit 500 --transform spa.gguf
    lingalign tune --transform spa.gguf --metric choice --dev xcopa/sw/val.sw.jsonl  (XCOPA languages)
    lingalign eval choice --data xcopa/sw/test.sw.jsonl --transform spa.gguf

Results go to bench/results/quality.json after every cell (a rerun skips finished cells unless
--redo) and the tables to docs/results.md (the part above its hand-written sections).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import lingalign
from lingalign import Captures, Transform
from lingalign.data import EMBEDDED_LANGUAGES, embedded_path, read_lines, read_pairs
from lingalign.evaluate import eval_choice, load_choice_items, retrieval_by_layer
from lingalign.experts import DEFAULT_K
from lingalign.fit import apply_map
from lingalign.metrics import retrieval_top1
from lingalign.tune import tune
from methods_offline import captures, split_pairs  # bench/ is on sys.path when this script runs

REPO = Path(__file__).resolve().parent.parent
TATOEBA = REPO.parent / "shared" / "data" / "tatoeba"
XCOPA = REPO.parent / "shared" / "data" / "xcopa"
RESULTS = REPO / "bench" / "results" / "quality.json"
TABLE = REPO / "docs" / "results.md"
HAND_WRITTEN = "<!-- Written by hand from here on; bench/quality.py rewrites only what is above. -->"

LANGS = ("spa", "deu", "cmn", "jpn", "swh", "ind", "tur", "ita", "vie")
XCOPA_OF = {"ind": "id", "ita": "it", "swh": "sw", "cmn": "zh", "vie": "vi", "tur": "tr"}
METHODS = ("meanshift", "ridge", "incline", "contrastive", "experts", "random-neurons")
XCOPA_METHODS = ("meanshift", "ridge", "contrastive")
MAP_LAYERS = (2, 4, 6, 8, 9, 10, 11, 12, 14, 17)  # candidate layers for maps and vectors; one is chosen on dev
MAP_ALPHAS = (0.25, 0.5, 0.75, 1.0)
EXPERT_ALPHAS = (0.5, 1.0)
CHOICE_ALPHAS = (-0.5, 0.25, 0.5, 1.0)
CHOICE_POSITIONS = ("all", "last")
# INCLINE's own protocol, XCOPA only: a map at every layer (fitted on the same pairs), moving the
# last prompt token (or all tokens); strengths are smaller because 18 maps compound.
ALL_LAYER_METHODS = ("incline-all", "ridge-all")
ALL_LAYER_ALPHAS = (-0.25, 0.1, 0.25, 0.5)
NEGATIVES_PER_LANGUAGE = 100


class Study:
    """Captures of one language, shared by every method."""

    def __init__(self, llm: Any, lang: str) -> None:
        self.llm = llm
        self.lang = lang
        src, eng = read_pairs(TATOEBA / f"tatoeba.{lang}-eng.{lang}", TATOEBA / f"tatoeba.{lang}-eng.eng")
        self.split = split_pairs(len(src))
        self.train, self.dev, self.test = ((src[sl], eng[sl]) for sl in self.split)
        self.model = lingalign.attach(llm).model
        self.n_layer = self.model.n_layer
        self.layers = list(range(self.n_layer))
        self._cache: dict[str, Captures] = {}

    def caps(self, key: str) -> Captures:
        """Unintervened captures, all layers: 'train.src', 'dev.eng', 'test.src', ..."""
        if not self._cache:
            # the same captures as bench/methods_offline.py (pairs 1-1000, cached on disk)
            both = captures(self.llm, self.lang)
            for side in ("src", "eng"):
                for part, sl in zip(("train", "dev", "test"), self.split):
                    self._cache[f"{part}.{side}"] = both[side].rows(sl)
        return self._cache[key]

    def acts(self, key: str) -> np.ndarray:
        """The activations of caps(key): [sentences, layers, n_embd], read-only."""
        return self.caps(key).activations

    def measure(self, transform: Any) -> dict[str, Any]:
        src = lingalign.capture(self.llm, self.test[0], layers=self.layers, transform=transform)
        return _summary(retrieval_by_layer(src.activations, self.acts("test.eng"), self.layers))

    def fit(self, method: str) -> Any:
        info = {"data": f"tatoeba.{self.lang}-eng lines 1-{self.split[0].stop}"}
        if method in ALL_LAYER_METHODS:
            t = Transform.fit(self.caps("train.src"), self.caps("train.eng"), method=method.removesuffix("-all"),
                              rank=None, source_lang=self.lang, fit_info=info)
            return t, {"best": {"layers": self.layers, "alpha": 1.0}}
        if method in ("experts", "random-neurons"):
            others = [s for lang in EMBEDDED_LANGUAGES if lang not in ("eng", self.lang)
                      for s in read_lines(embedded_path(lang), limit=NEGATIVES_PER_LANGUAGE)]
            pos = lingalign.capture(self.llm, self.train[1], site="ffn")
            # the negatives: the source side of the training pairs, then the other languages
            neg = lingalign.capture(self.llm, list(self.train[0]) + others, site="ffn")
            t = Transform.fit(pos, neg, method=method, k=DEFAULT_K, source_lang=self.lang, fit_info=info)
            t, record = tune(self.llm, t, metric="retrieval", dev_src=self.dev[0], dev_tgt=self.dev[1],
                             alphas=EXPERT_ALPHAS)
            return t, record
        return self.fit_maps(self.caps("train.src"), self.caps("train.eng"), method, info)

    def fit_maps(self, src: Captures, tgt: Captures, method: str, info: dict[str, Any] | None = None) -> Any:
        """A map or vector fitted on captured pairs src -> tgt at each of MAP_LAYERS, then the one
        layer and strength chosen on dev (choose_layer)."""
        t = Transform.fit(src, tgt, method=method, layers=list(MAP_LAYERS), rank=None, source_lang=self.lang,
                          fit_info=info or {})
        return self.choose_layer(t)

    def choose_layer(self, t: Any) -> tuple[Any, dict[str, Any]]:
        """Keep the one layer and alpha with the best dev top-1 at that layer. Computed on the
        captured dev vectors: a transform at layer l changes l_out-l exactly as apply_map does,
        so this equals running the model, without the model."""
        ds, de = self.caps("dev.src"), self.caps("dev.eng")
        scores = []
        for il in sorted(t.layers):
            for a in MAP_ALPHAS:
                moved = apply_map(ds.layer(il), t.layers[il], a)
                scores.append((retrieval_top1(moved, de.layer(il))[0], -a, il))
        score, neg_alpha, il = max(scores)  # ties: the gentler strength, then the later layer
        baseline = max(retrieval_top1(ds.layer(k), de.layer(k))[0] for k in sorted(t.layers))
        best = {"layers": [il], "alpha": -neg_alpha, "score": score}
        chosen = dataclasses.replace(t, layers={il: t.layers[il]}, alpha=-neg_alpha)
        return chosen, {"best": best, "baseline_score": baseline}


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "best_layer": r["best_layer"],
        "best_top1": round(r["best_top1"], 4),
        "last_top1": round(r["last_top1"], 4),
        "per_layer": [round(row["src2tgt"], 4) for row in r["layers"]],
    }


def _choice(llm: Any, lang: str, split: str, transform: Any = None, limit: int | None = None) -> float:
    items = load_choice_items(XCOPA / lang / f"{split}.{lang}.jsonl")[:limit]
    return float(eval_choice(llm, items, lang=lang, transform=transform)["accuracy"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--xcopa-methods", default=",".join(XCOPA_METHODS))
    ap.add_argument("--no-xcopa", action="store_true")
    ap.add_argument("--xcopa-only", action="store_true", help="only the XCOPA numbers (retrieval cells untouched)")
    ap.add_argument("--results", default=str(RESULTS),
                    help="JSON to write (the table merges every bench/results/quality*.json)")
    ap.add_argument("--redo", action="store_true", help="recompute finished cells")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its choice)")
    ap.add_argument("--xcopa-test-limit", type=int, default=None, help="score only the first N test items")
    args = ap.parse_args()
    out_path = Path(args.results)
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() and not args.redo else {}
    results.setdefault("command", "python bench/quality.py")
    cells = results.setdefault("cells", {})

    def save() -> None:
        out_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        write_table()

    threads = {} if args.threads is None else {"n_threads": args.threads, "n_threads_batch": args.threads}
    llm = lingalign.load(n_ctx=512, verbose=False, **threads)
    test_limit = args.xcopa_test_limit
    for lang in args.langs.split(","):
        study = Study(llm, lang)
        t0 = time.time()
        key = f"{lang}/none"
        if args.xcopa_only:
            cells.setdefault(key, {})
        elif key not in cells:
            plain = _summary(retrieval_by_layer(study.acts("test.src"), study.acts("test.eng"), study.layers))
            mx, my = study.acts("train.src").mean(0), study.acts("train.eng").mean(0)
            centred = [retrieval_top1(study.acts("test.src")[:, k] - mx[k], study.acts("test.eng")[:, k] - my[k])[0]
                       for k in study.layers]
            cells[key] = plain
            cells[f"{lang}/centring"] = {"best_top1": round(max(centred), 4), "best_layer": int(np.argmax(centred)),
                                         "last_top1": round(centred[-1], 4), "per_layer": [round(c, 4) for c in centred]}
            save()
        xl = XCOPA_OF.get(lang)
        if xl and not args.no_xcopa and "xcopa" not in cells[key]:
            cells[key]["xcopa"] = {"lang": xl, "test": _choice(llm, xl, "test", limit=test_limit),
                                   "n_test": test_limit or 500}
            save()
        for method in args.methods.split(","):
            key = f"{lang}/{method}"
            if args.xcopa_only or method in ALL_LAYER_METHODS:
                cells.setdefault(key, {})
                transform = None
            elif key not in cells:
                t1 = time.time()
                transform, record = study.fit(method)
                cells[key] = {**study.measure(transform), "tuned": {"layers": record["best"]["layers"],
                              "alpha": record["best"]["alpha"], "dev": round(record["best"]["score"], 4),
                              "dev_none": round(record["baseline_score"], 4)}, "seconds": round(time.time() - t1)}
                save()
                print(f"{lang} {method}: best {cells[key]['best_top1']:.3f} (layer {cells[key]['best_layer']}), "
                      f"last {cells[key]['last_top1']:.3f}", file=sys.stderr, flush=True)
            else:
                transform = None
            if xl and not args.no_xcopa and method in args.xcopa_methods.split(",") and "xcopa" not in cells[key]:
                if transform is None:
                    transform, _ = study.fit(method)
                items = load_choice_items(XCOPA / xl / f"val.{xl}.jsonl")
                alphas = ALL_LAYER_ALPHAS if method in ALL_LAYER_METHODS else CHOICE_ALPHAS
                tuned, record = tune(llm, transform, metric="choice", dev_items=items, lang=xl,
                                     alphas=alphas, positions=CHOICE_POSITIONS)
                cells[key]["xcopa"] = {"lang": xl, "val": round(record["best"]["score"], 4),
                                       "val_none": round(record["baseline_score"], 4), "alpha": tuned.alpha,
                                       "positions": tuned.positions, "off": bool(record["best"].get("off")),
                                       "layers": sorted(tuned.layers), "n_test": test_limit or 500,
                                       "test": _choice(llm, xl, "test", tuned, limit=test_limit)}
                save()
                print(f"{lang} {method}: XCOPA {xl} test {cells[key]['xcopa']['test']:.3f}", file=sys.stderr, flush=True)
        print(f"{lang} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    save()
    return 0


def merged_cells() -> dict[str, Any]:
    """The cells of every bench/results/quality*.json (runs may be split, e.g. --xcopa-only)."""
    cells: dict[str, Any] = {}
    for path in sorted(RESULTS.parent.glob("quality*.json")):
        for key, cell in json.loads(path.read_text()).get("cells", {}).items():
            cells[key] = {**cells.get(key, {}), **cell}
    return cells


def _global_xcopa_rows(xlangs: list[str]) -> list[str]:
    """The row of bench/xcopa_global.py (one setting for every language), when it has run."""
    path = REPO / "bench" / "results" / "xcopa_global.json"
    g = json.loads(path.read_text()) if path.is_file() else {}
    if "summary" not in g:
        return []
    c = g["chosen"]
    chosen = "off" if c["off"] else f"{c['method']}/{c['alpha']}/{c['positions']}"
    # every setting with test results: the chosen one, and any chosen by an earlier grid
    settings = sorted({k.split("/", 1)[1] for k in g["test"] if k.count("/") == 3}, key=lambda k: k != chosen)
    rows = []
    for setting in settings:
        accs = [g["test"].get(f"{lang}/{setting}") for lang in xlangs]
        if None in accs:
            continue
        method, alpha, pos = setting.split("/")
        val = np.mean([g["val"][f"{method}/{lang}/{alpha}/{pos}"] for lang in xlangs])
        label = f"{method}, alpha {alpha}, positions {pos}; val {val:.3f}" + (" (chosen)" if setting == chosen else "")
        rows.append(f"| {label} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {np.mean(accs):.3f} |")
    return ["", "One setting for every language instead (`python bench/xcopa_global.py`): each language's transform",
            "fitted as above, every (method, alpha, positions) of the grid scored on every language's val set, and",
            f"the one with the best mean over the six (600 items; {c['val_mean']:.3f} against {c['val_mean_none']:.3f}",
            "without a transform) used unchanged on every test set. Other rows: settings that earlier, smaller grids",
            "chose, with their pooled val mean.", "",
            "| setting | " + " | ".join(XCOPA_OF[lang] for lang in xlangs) + " | mean |", "|---|" + "---|" * (len(xlangs) + 1),
            "| none | " + " | ".join(f"{g['test'][f'{lang}/none']:.3f}" for lang in xlangs)
            + f" | {np.mean([g['test'][f'{lang}/none'] for lang in xlangs]):.3f} |"] + rows


def write_table() -> None:
    cells = merged_cells()
    langs = [lang for lang in LANGS if "best_top1" in cells.get(f"{lang}/none", {})]
    rows = ["none", "centring"] + [m for m in METHODS if any(f"{lang}/{m}" in cells for lang in langs)]
    out = ["# Results: lingalign methods on Gemma 3 270M (Q4_K_M)", "",
           "Made by `python bench/quality.py` (see its docstring for the protocol and the equivalent CLI commands);",
           "raw numbers in `bench/results/quality*.json`.", "",
           "Every method is fitted on Tatoeba pairs 1-450 of each language; maps and vectors at each of the layers",
           f"{', '.join(map(str, MAP_LAYERS))}, of which the one layer and strength (0.25-1) with the best top-1 on",
           "pairs 451-500 (dev) is kept; neuron clamps (k = 500, all layers) get their strength (0.5 or 1) on dev.",
           "The source is then read with the transform live inside llama.cpp on pairs 501-1000 (test). The same",
           "rule serves every language. `lingalign fit`'s own `--layers auto` chooses the layer on a held-out fifth",
           "of the training pairs instead; its numbers for the shipped matrices are below, under Shipped transforms.", "",
           "## Retrieval: held-out Tatoeba top-1 (source -> English, 500 pairs), best layer / last layer", "",
           "| method | " + " | ".join(langs) + " | mean |", "|---|" + "---|" * (len(langs) + 1)]
    for m in rows:
        vals = [cells.get(f"{lang}/{m}") if "best_top1" in cells.get(f"{lang}/{m}", {}) else None for lang in langs]
        if all(v is None for v in vals):
            continue
        txt = [f"{v['best_top1']:.3f} / {v['last_top1']:.3f}" if v else "" for v in vals]
        done = [v for v in vals if v]
        mean = (f"{np.mean([v['best_top1'] for v in done]):.3f} / {np.mean([v['last_top1'] for v in done]):.3f}"
                if len(done) == len(langs) else "")
        label = "per-language centring (eval-side reference)" if m == "centring" else m
        out.append(f"| {label} | " + " | ".join(txt) + f" | {mean} |")
    xlangs = [lang for lang in LANGS if lang in XCOPA_OF]
    n_test = sorted({c["xcopa"].get("n_test", 500) for c in cells.values() if "xcopa" in c}) or [500]
    n_txt = "all 500" if n_test == [500] else "first " + "/".join(map(str, n_test))
    out += ["", f"## XCOPA test accuracy ({n_txt} test items; settings tuned on val)", "",
            "The language's retrieval-chosen transform (one layer), its alpha re-chosen among "
            f"{', '.join(map(str, CHOICE_ALPHAS))} and its position policy among {', '.join(CHOICE_POSITIONS)}",
            "on XCOPA val (100 items) by summed log-likelihood accuracy (`lingalign tune --metric choice`);",
            "(off): no setting scored above no transform on val, so tune kept it off (alpha 0).",
            f"Rows {' and '.join(ALL_LAYER_METHODS)} follow INCLINE's own protocol instead: the method's map at every",
            f"layer (fitted on the same pairs), alpha among {', '.join(map(str, ALL_LAYER_ALPHAS))} and the same position",
            "policies, tuned on val the same way.",
            "With 500 items one standard error of an accuracy near 0.55 is about 2.2 points.", "",
            "| method | " + " | ".join(XCOPA_OF[lang] for lang in xlangs) + " | mean |", "|---|" + "---|" * (len(xlangs) + 1)]
    for m in ["none", *METHODS, *ALL_LAYER_METHODS]:
        vals = [cells.get(f"{lang}/{m}", {}).get("xcopa") for lang in xlangs]
        if all(v is None for v in vals):
            continue
        txt = [(f"{v['test']:.3f}" + (" (off)" if v.get("off") else "")) if v else "" for v in vals]
        done = [v["test"] for v in vals if v]
        mean = f"{np.mean(done):.3f}" if len(done) == len(xlangs) else ""
        out.append(f"| {m} | " + " | ".join(txt) + f" | {mean} |")
    out += _global_xcopa_rows(xlangs)
    # The hand-written sections after HAND_WRITTEN are kept as they are.
    old = TABLE.read_text() if TABLE.is_file() else ""
    tail = old[old.index(HAND_WRITTEN):] if HAND_WRITTEN in old else ""
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text("\n".join(out) + "\n" + ("\n" + tail if tail else ""))


if __name__ == "__main__":
    sys.exit(main())
