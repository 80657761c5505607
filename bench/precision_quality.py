"""What storage precision costs in alignment: the shipped transforms (float16) against the same
maps as float32, as 8-bit differences from the identity (q8) and as 4-bit ones (q4, whose kernel
also rounds the hidden states to 8 bits per block of 32), measured on their held-out test lines
(from matrices/manifest.json) with the transform live inside llama.cpp.

    python bench/precision_quality.py [--langs spa,swh] [--threads 2]

Prints source->English retrieval top-1 at each transform's layer, per precision, and writes
bench/results/precision_quality.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import lingalign
from lingalign.data import read_lines
from lingalign.evaluate import eval_retrieval
from lingalign.hook import open_model

REPO = Path(__file__).resolve().parent.parent
TATOEBA = REPO.parent / "shared" / "data" / "tatoeba"
PRECISIONS = ("f32", "f16", "q8", "q4")


def main() -> None:
    manifest = json.loads((REPO / "matrices" / "manifest.json").read_text())
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--langs", default=",".join(manifest["transforms"]))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "precision_quality.json"))
    args = ap.parse_args()

    llm = open_model(None, n_threads=args.threads, n_threads_batch=args.threads)
    results: dict[str, dict[str, object]] = {}
    print(f"{'lang':<5} {'layer':>5} {'pairs':>5} " + " ".join(f"{p:>6}" for p in PRECISIONS) + "   (top-1, source -> English)")
    for lang in args.langs.split(","):
        entry = manifest["transforms"][lang]
        shipped = lingalign.Transform.load(REPO / "matrices" / entry["file"])
        first, last = (int(x) for x in entry["measured"]["test_lines"].split("-"))
        src = read_lines(TATOEBA / f"tatoeba.{lang}-eng.{lang}")[first - 1 : last]
        tgt = read_lines(TATOEBA / f"tatoeba.{lang}-eng.eng")[first - 1 : last]
        layer = sorted(shipped.layers)[0]
        row: dict[str, object] = {"layer": layer, "pairs": len(src), "test_lines": entry["measured"]["test_lines"]}
        for precision in PRECISIONS:
            t = shipped.to_precision(precision)
            r = eval_retrieval(llm, src, tgt, transform=t, layers=[layer], progress=False)
            stored = sum(a.nbytes for lm in t.layers.values() for a in lm.arrays().values())
            row[precision] = {"top1": r["best_top1"], "map_bytes": stored}
        results[lang] = row
        print(f"{lang:<5} {layer:>5} {len(src):>5} " + " ".join(f"{row[p]['top1']:>6.3f}" for p in PRECISIONS))
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/precision_quality.py" + (f" --threads {args.threads}" if args.threads else ""),
        "results": results,
    }
    out = Path(args.out)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
