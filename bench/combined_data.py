"""Does more fitting data help? The default transform fitted on SIB-200 train alone (701 FLORES
pairs) against the same fit on SIB-200 train plus NTREX (1997 news pairs, another domain), per
language, measured side by side in one run:

    python bench/combined_data.py --model gemma3-270m [--langs swh_Latn,ind_Latn] [--threads 1]
    python bench/combined_data.py --report      # docs/fitting-data.md from the records

Both fits are contrastive at the layer and strength of bench/downstream.py's default transform
for the language (the layer fit chooses on SIB-200 train, the strength its fidelity check keeps),
stored at q8: only the data differ. Measured: top-1 retrieval of the 99 SIB-200 dev sentences
among their English translations at that layer with the transform live (FLORES, held out from
both fits), also at strength 1 (the fit's own objective, apart from the strength the
fidelity check keeps), SIB-200 test accuracy (option log-likelihood, the items of
bench/downstream.py's records) and answer-language fidelity of 12 greedy continuations of
SIB-200 test texts. One
record per model and language in bench/results/combined_data/<model>/; captures are cached
outside the repository (~/.cache/lingalign/bench/<model>/ntrex-*.npz).
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
from downstream import CACHE, DATA, DEV, HIDDEN, RESULTS as DOWNSTREAM, cached_capture, captures  # noqa: E402
from downstream import default_transform  # noqa: E402
from downstream import fidelity_file, test_file  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "combined_data"
DOC = ROOT / "docs" / "fitting-data.md"
# SIB-200 folder -> NTREX file code, for the languages NTREX has
NTREX_OF = {"swh_Latn": "swa", "ind_Latn": "ind", "zho_Hans": "zho-CN", "tur_Latn": "tur", "yor_Latn": "yor",
            "hau_Latn": "hau", "spa_Latn": "spa", "deu_Latn": "deu", "ita_Latn": "ita", "vie_Latn": "vie",
            "jpn_Jpan": "jpn", "arb_Arab": "arb", "hin_Deva": "hin", "rus_Cyrl": "rus"}
FIDELITY_PROMPTS = 12


def ntrex_captures(llm: Any, model: str, code: str) -> Any:
    """The 1997 NTREX sentences of a language captured at every layer, cached on disk."""
    from lingalign.data import read_lines

    return cached_capture(llm, CACHE / model / f"ntrex-{code}.npz",
                          lambda: read_lines(DATA / "ntrex" / f"ntrex.{code}.txt"), f"NTREX {code} sentences")


def stacked(a: Any, b: Any) -> Any:
    """Two Captures of the same model and layers as one (a's rows, then b's)."""
    import numpy as np
    from lingalign import Captures

    a.same_kind(b)
    return Captures(np.concatenate([a.activations, b.activations]), a.layers, a.model, a.site, a.pool)


def retrieval(llm: Any, t: Any, sib: str, layer: int) -> float:
    """Top-1 of the SIB-200 dev sentences among their English translations at `layer`, with `t`
    live (None: without)."""
    from lingalign import capture
    from lingalign.data import read_lines
    from lingalign.metrics import retrieval_top1

    src = capture(llm, read_lines(DATA / "sib200" / sib / "dev.tsv"), layers=[layer], transform=t, progress=False)
    eng = capture(llm, read_lines(DATA / "sib200" / "eng_Latn" / "dev.tsv"), layers=[layer], progress=False)
    return retrieval_top1(src.layer(layer), eng.layer(layer))[0]


def measure(llm: Any, model: str, t: Any, sib: str, layer: int) -> dict[str, Any]:
    """Held-out retrieval at `layer`, SIB-200 test accuracy and fidelity with `t` (None: without)."""
    from lingalign.evaluate import eval_choice
    from lingalign.fidelity import eval_fidelity, read_prompts
    from lingalign.tasks import load_task

    n = json.loads((DOWNSTREAM / model / f"sib200-{sib}-likelihood-none.json").read_text(encoding="utf-8"))["n"]
    choice = eval_choice(llm, load_task(test_file("sib200", sib), limit=n, seed=0), transform=t)
    prompts = read_prompts(fidelity_file("sib200", sib), limit=FIDELITY_PROMPTS)
    fid = eval_fidelity(llm, prompts, sib.split("_")[0], transform=t)
    side = fid["with"] if t is not None else fid["without"]
    return {"retrieval_top1": retrieval(llm, t, sib, layer), "accuracy": choice["accuracy"],
            "n": choice["n"], "fidelity": side["fidelity"], "looping": side["looping"]}


def run(args: argparse.Namespace) -> None:
    import dataclasses

    import lingalign
    from lingalign.blas import blas_threads
    from lingalign.hook import open_model

    llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    out = RESULTS / args.model
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python bench/combined_data.py", *sys.argv[1:]])
    eng = stacked(captures(llm, args.model, "eng_Latn"), ntrex_captures(llm, args.model, "eng"))
    for sib in args.langs:
        path = out / f"{sib}.json"
        old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        if old is not None and "retrieval_at_1" in old:
            continue
        default = lingalign.Transform.load(default_transform(llm, args.model, sib))
        (layer,) = sorted(default.layers)
        X_sib = captures(llm, args.model, sib)
        X = stacked(X_sib, ntrex_captures(llm, args.model, NTREX_OF[sib]))
        t0 = time.time()
        with blas_threads():
            combined = lingalign.Transform.fit(X, eng, method=default.method, layers=[layer], alpha=default.alpha,
                                               source_lang=default.source_lang,
                                               fit_info={"data": "SIB-200 train + NTREX", "pairs": len(X)})
        fit_seconds = time.time() - t0
        combined = combined.to_precision("q8")
        rec: dict[str, Any] = old or {"command": command, "model": args.model, "lang": sib, "layer": layer,
                                      "alpha": default.alpha, "pairs": {"sib200": len(X_sib), "combined": len(X)},
                                      "fit_seconds_combined": round(fit_seconds, 1)}
        for name, t in (("none", None), ("sib200", default), ("combined", combined)):
            if name in rec:
                continue
            t1 = time.time()
            rec[name] = measure(llm, args.model, t, sib, layer)
            rec[name]["seconds"] = round(time.time() - t1, 1)
            print(f"  {sib} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rec[name].items() if k != "n"), flush=True)
        rec["retrieval_at_1"] = {name: retrieval(llm, dataclasses.replace(t, alpha=1.0), sib, layer)
                                 for name, t in (("sib200", default), ("combined", combined))}
        print(f"  {sib} retrieval at strength 1: {rec['retrieval_at_1']}", flush=True)
        rec["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        path.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")


def report() -> None:
    lines = ["# More fitting data: SIB-200 train alone, and with NTREX", "",
             "Made by `python bench/combined_data.py --model MODEL` (records in `bench/results/combined_data/`); this "
             "page by `python bench/combined_data.py --report`. The default transform (contrastive at the layer `fit` "
             "chooses, at the strength its fidelity check keeps, q8) fitted on the 701 SIB-200 train pairs, and the "
             "same fit (same layer and strength) on those plus NTREX's 1997 news pairs. *retrieval*: top-1 of the 99 "
             "SIB-200 dev sentences among their English translations at that layer, the transform live (held out "
             "from both fits); *at strength 1*: the same with each fit at strength 1, what the fit itself is for, apart "
             "from the strength the check keeps; *accuracy*: SIB-200 test, option log-likelihood, the items of "
             "[downstream.md](downstream.md) (standard error about 6 points at n = 60); *fidelity*: share of 12 "
             "greedy continuations of SIB-200 test texts in the text's language.", ""]
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        recs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(model_dir.glob("*.json"))]
        if not recs:
            continue
        lines += [f"## {model_dir.name}", "",
                  "| language | layer | alpha | pairs | retrieval: none / SIB / SIB+NTREX | at strength 1: SIB / SIB+NTREX "
                  "| accuracy: none / SIB / SIB+NTREX | fidelity: none / SIB / SIB+NTREX |", "|---|---|---|---|---|---|---|---|"]
        for r in recs:
            hidden = " (hidden)" if r["lang"] in HIDDEN["sib200"] else ""
            cells = [" / ".join(f"{r[c][m]:.3f}" if m != "fidelity" else f"{r[c][m]:.2f}" for c in ("none", "sib200", "combined"))
                     for m in ("retrieval_top1", "accuracy", "fidelity")]
            at1 = r.get("retrieval_at_1")
            cells.insert(1, f"{at1['sib200']:.3f} / {at1['combined']:.3f}" if at1 else "")
            lines.append(f"| {r['lang']}{hidden} | {r['layer']} | {r['alpha']:g} | {r['pairs']['sib200']} / "
                         f"{r['pairs']['combined']} | " + " | ".join(cells) + " |")
        if len(recs) < 2:
            lines.append("")
            continue  # a mean of one language is its row
        mean = {c: {m: sum(r[c][m] for r in recs) / len(recs) for m in ("retrieval_top1", "accuracy")}
                for c in ("none", "sib200", "combined")}
        at1 = [r["retrieval_at_1"] for r in recs if "retrieval_at_1" in r]
        lines += ["", f"Mean over {len(recs)} languages: retrieval {mean['none']['retrieval_top1']:.3f} / "
                  f"{mean['sib200']['retrieval_top1']:.3f} / {mean['combined']['retrieval_top1']:.3f}"
                  + (f" (at strength 1: {sum(a['sib200'] for a in at1) / len(at1):.3f} / "
                     f"{sum(a['combined'] for a in at1) / len(at1):.3f} over {len(at1)})" if at1 else "") + ", accuracy "
                  f"{mean['none']['accuracy']:.3f} / {mean['sib200']['accuracy']:.3f} / "
                  f"{mean['combined']['accuracy']:.3f}.", ""]
    DOC.write_text("\n".join(lines), encoding="utf-8")
    print(f"written to {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--langs", default=",".join(DEV["sib200"]), help="SIB-200 folders, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="write docs/fitting-data.md from the records")
    args = ap.parse_args()
    if args.report:
        report()
        return
    args.langs = [x for x in args.langs.split(",") if x]
    unknown = [x for x in args.langs if x not in NTREX_OF]
    if unknown:
        ap.error(f"NTREX has no {', '.join(unknown)} (it has {', '.join(NTREX_OF)})")
    run(args)


if __name__ == "__main__":
    main()
