"""Does more training data help? Tatoeba's training pairs alone against the same pairs plus the
embedded corpus (240 everyday sentences written for lingalign; no source sentence is among
Tatoeba's test lines, one English one is among ind's), for the languages that have both.

    python bench/extra_data.py [--langs swh,tur] [--threads 2]

Protocol: bench/quality.py's (fit on Tatoeba pairs 1-450, swh 1-145; the one layer and strength
with the best dev top-1 on the next 50 pairs; held-out top-1 at the best layer on pairs 501-1000,
swh 196-390, with the transform live inside llama.cpp), for the contrastive and ridge methods.
The embedded pairs are only added to the training pairs. Writes bench/results/extra_data.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

import lingalign
from lingalign.data import EMBEDDED_LANGUAGES, embedded_path, read_lines
from quality import LANGS, Study  # bench/ is on sys.path

REPO = Path(__file__).resolve().parent.parent
METHODS = ("contrastive", "ridge")


def main() -> int:
    both = [lang for lang in LANGS if lang in EMBEDDED_LANGUAGES]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--langs", default=",".join(both))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "extra_data.json"))
    args = ap.parse_args()
    threads = {} if args.threads is None else {"n_threads": args.threads, "n_threads_batch": args.threads}
    llm = lingalign.load(n_ctx=512, verbose=False, **threads)
    eng = lingalign.capture(llm, read_lines(embedded_path("eng")), progress=False)
    results: dict[str, dict[str, object]] = {}
    for lang in args.langs.split(","):
        study = Study(llm, lang)
        src = lingalign.capture(llm, read_lines(embedded_path(lang)), progress=False)
        row: dict[str, object] = {"none": study.measure(None)["best_top1"], "train_pairs": study.split[0].stop,
                                  "embedded_pairs": len(src)}
        for method in METHODS:
            alone, chosen = study.fit(method)
            # the training pairs' cached captures followed by the embedded pairs' (same layers)
            X = lingalign.Captures(np.concatenate([study.acts("train.src"), src.activations]), src.layers, src.model)
            Y = lingalign.Captures(np.concatenate([study.acts("train.eng"), eng.activations]), eng.layers, eng.model)
            more, chosen_more = study.fit_maps(X, Y, method)
            row[method] = {"tatoeba": study.measure(alone)["best_top1"], "tatoeba+embedded": study.measure(more)["best_top1"],
                           "chosen": [chosen["best"], chosen_more["best"]]}
            print(f"{lang} {method}: none {row['none']:.3f}, Tatoeba {row[method]['tatoeba']:.3f}, "
                  f"+ embedded {row[method]['tatoeba+embedded']:.3f}", flush=True)
        results[lang] = row
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/extra_data.py" + (f" --threads {args.threads}" if args.threads else ""),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
