"""Fit, tune and measure the transforms shipped in matrices/ for the default model.

    python bench/make_matrices.py [--langs spa,deu,...]

Per language, from ../shared/data/tatoeba (N line pairs; the English side differs by language):
fit on lines [0, N/2 - 50) with `lingalign fit`'s defaults (ridge at the last layer, rank
auto), tune alpha on the dev lines [N/2 - 50, N/2) by retrieval, and measure on the held-out
lines [N/2, N): retrieval top-1 at the last layer and at the best layer, with and without the
transform applied inside llama.cpp. Writes matrices/<lang>-eng.gguf and matrices/manifest.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lingalign
from lingalign.capture import capture
from lingalign.data import lines_sha256, read_lines
from lingalign.evaluate import retrieval_by_layer
from lingalign.fit import fit_transform
from lingalign.tune import tune

REPO = Path(__file__).resolve().parent.parent
TATOEBA = REPO.parent / "shared" / "data" / "tatoeba"
LANGS = ("spa", "deu", "cmn", "jpn", "swh", "ind", "tur")
DEV = 50


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--out", default=str(REPO / "matrices"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    llm = lingalign.load(n_ctx=512)
    fp = lingalign.steering_of(llm).model
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
        n = len(src_all)
        half = n // 2
        fit_end = half - DEV
        src, eng = src_all[:fit_end], eng_all[:fit_end]
        X = capture(llm, src, layers=[n_layer - 1])
        Y = capture(llm, eng, layers=[n_layer - 1])
        info = {"data": f"tatoeba.{lang}-eng lines 1-{fit_end}", "pairs": fit_end, "src_sha256": lines_sha256(src),
                "tgt_sha256": lines_sha256(eng), "pool": "mean"}
        t = fit_transform(X, Y, model=fp, layers=[n_layer - 1], method="ridge", rank="auto", source_lang=lang,
                          fit_info=info)
        t, record = tune(llm, t, metric="retrieval", dev_src=src_all[fit_end:half], dev_tgt=eng_all[fit_end:half])
        test_src, test_eng = src_all[half:], eng_all[half:]
        E = capture(llm, test_eng, layers=all_layers)
        plain = retrieval_by_layer(capture(llm, test_src, layers=all_layers), E, all_layers)
        moved = retrieval_by_layer(capture(llm, test_src, layers=all_layers, transform=t), E, all_layers)
        measured = {
            "test_pairs": n - half,
            "test_lines": f"{half + 1}-{n}",
            "last_layer_top1": [plain["last_top1"], moved["last_top1"]],
            "best_layer_top1": [plain["best_top1"], moved["best_top1"]],
            "best_layer": [plain["best_layer"], moved["best_layer"]],
            "dev_top1": [record["baseline_score"], record["best"]["score"]],
        }
        t.fit_info = {**t.fit_info, "measured": {**t.fit_info.get("measured", {}), **{
            "test last-layer top-1 (no transform -> transform)": f"{plain['last_top1']:.3f} -> {moved['last_top1']:.3f}",
            "test best-layer top-1": f"{plain['best_top1']:.3f} -> {moved['best_top1']:.3f}",
        }}}
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
        }
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        print(f"{lang}: last-layer top-1 {plain['last_top1']:.3f} -> {moved['last_top1']:.3f}, best-layer "
              f"{plain['best_top1']:.3f} -> {moved['best_top1']:.3f}, alpha {t.alpha:g}, "
              f"{path.stat().st_size / 1e6:.2f} MB, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
