"""Fit, tune and measure the transforms shipped in matrices/ for the default model.

    python bench/make_matrices.py [--langs spa,deu,...]

Per language, from ../shared/data/tatoeba (N line pairs; the English side differs by language):
fit on lines [0, N/2 - 50) with `lingalign fit`'s defaults (contrastive, `--layers auto`: the
layer where the map helps held-out retrieval most), stored as float16, tune alpha on the dev lines
[N/2 - 50, N/2) by retrieval, and measure on the held-out lines [N/2, N): retrieval top-1 at
the last layer and at the best layer, with and without the transform applied inside llama.cpp.
Writes matrices/<lang>-eng.gguf and matrices/manifest.json. Captures of the fitting pairs are
shared with bench/methods_offline.py and bench/quality.py (cached outside the repository).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import lingalign
from lingalign.data import lines_sha256, read_lines
from lingalign.evaluate import retrieval_by_layer
from lingalign.fit import DEFAULT_METHOD, choose_layer
from lingalign.models import DEFAULT_MODEL
from language_check import shipped_check  # bench/ is on sys.path when this script runs
from methods_offline import captures, split_pairs
from lingalign.tune import tune

REPO = Path(__file__).resolve().parent.parent
TATOEBA = REPO.parent / "shared" / "data" / "tatoeba"
LANGS = ("spa", "deu", "cmn", "jpn", "swh", "ind", "tur")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--out", default=str(REPO / "matrices"))
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its choice)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    ap_threads = {} if args.threads is None else {"n_threads": args.threads, "n_threads_batch": args.threads}
    llm = lingalign.load(n_ctx=512, verbose=False, **ap_threads)
    fp = lingalign.attach(llm).model
    n_layer = fp.n_layer
    all_layers = list(range(n_layer))
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"transforms": {}}
    manifest["model"] = fp.to_dict()
    manifest["command"] = "python bench/make_matrices.py"
    for lang in args.langs.split(","):
        t0 = time.time()
        src_all = read_lines(TATOEBA / f"tatoeba.{lang}-eng.{lang}")
        eng_all = read_lines(TATOEBA / f"tatoeba.{lang}-eng.eng")
        train, _, test = split_pairs(len(src_all))
        n, half, fit_end = test.stop, test.start, train.stop
        src, eng = src_all[:fit_end], eng_all[:fit_end]
        cached = captures(llm, lang)
        X, Y = cached["src"].rows(train), cached["eng"].rows(train)
        layer, _, choice = choose_layer(X, Y, method=DEFAULT_METHOD, candidates=all_layers)
        info = {"data": f"tatoeba.{lang}-eng lines 1-{fit_end}", "pairs": fit_end, "src_sha256": lines_sha256(src),
                "tgt_sha256": lines_sha256(eng), "pool": "mean", "layer_choice": choice}
        t = lingalign.Transform.fit(X, Y, method=DEFAULT_METHOD, layers=[layer], rank="auto", source_lang=lang,
                                    fit_info=info).to_precision("f16")
        t, record = tune(llm, t, metric="retrieval", dev_src=src_all[fit_end:half], dev_tgt=eng_all[fit_end:half])
        test_src = src_all[test]
        E = cached["eng"].activations[test]
        plain = retrieval_by_layer(cached["src"].activations[test], E, all_layers)
        moved = retrieval_by_layer(lingalign.capture(llm, test_src, layers=all_layers, transform=t).activations, E,
                                   all_layers)
        measured = {
            "test_pairs": n - half,
            "test_lines": f"{half + 1}-{n}",
            "last_layer_top1": [plain["last_top1"], moved["last_top1"]],
            "best_layer_top1": [plain["best_top1"], moved["best_top1"]],
            "best_layer": [plain["best_layer"], moved["best_layer"]],
            "dev_top1": [record["baseline_score"], record["best"]["score"]],
        }
        t = dataclasses.replace(t, fit_info={**t.fit_info, "measured": {**t.fit_info.get("measured", {}), **{
            "test last-layer top-1 (no transform -> transform)": f"{plain['last_top1']:.3f} -> {moved['last_top1']:.3f}",
            "test best-layer top-1": f"{plain['best_top1']:.3f} -> {moved['best_top1']:.3f}",
        }}})
        path = out / f"{lang}-eng.gguf"
        t.save(path)
        manifest["transforms"][lang] = {
            "file": path.name,
            "bytes": path.stat().st_size,
            "method": t.method,
            "layers": sorted(t.layers),
            "rank": t.fit_info.get("rank"),
            "alpha": t.alpha,
            "positions": t.positions,
            "fit": info["data"],
            "dev": f"tatoeba.{lang}-eng lines {fit_end + 1}-{half}",
            "measured": measured,
            "check": shipped_check(DEFAULT_MODEL, lang),
        }
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        print(f"{lang}: last-layer top-1 {plain['last_top1']:.3f} -> {moved['last_top1']:.3f}, best-layer "
              f"{plain['best_top1']:.3f} -> {moved['best_top1']:.3f}, alpha {t.alpha:g}, "
              f"{path.stat().st_size / 1e6:.2f} MB, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
