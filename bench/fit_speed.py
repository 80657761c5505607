"""How long `lingalign fit` takes, on a quiet machine and with one core taken by another process.

    python bench/fit_speed.py [--pairs 500] [--model gemma3-270m] [--method contrastive]

Side by side in one run, each stage timed once per condition:
- capture of the pairs' sentences at every layer (llama.cpp threads: all CPUs, and half);
- the fit after capture, `--layers auto` as `lingalign fit` runs it: the layer choice over every
  layer plus the fit at the chosen one, with numpy's BLAS at all CPUs and at half (what fit does
  now, lingalign.blas), and the layer choice as it was before (the weight decay chosen per
  candidate layer).
"busy" runs a process that spins on one core for the whole stage. Ratios are to the quiet time
of the same stage; results go to bench/results/fit_speed-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def _spin() -> None:
    while True:
        pass


class Busy:
    """Another process holding one core while the block runs."""

    def __enter__(self) -> Busy:
        self.proc = multiprocessing.Process(target=_spin, daemon=True)
        self.proc.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--lang", default="spa", help="Tatoeba language paired with English")
    ap.add_argument("--method", default="contrastive")
    ap.add_argument("--captures", nargs=2, metavar=("SRC_NPZ", "TGT_NPZ"), default=None,
                    help="time only the fit, on saved captures (lingalign capture --out)")
    ap.add_argument("--quick", action="store_true", help="only the fit as it is now (no BLAS-on-all-CPUs or before variants)")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "python"))
    import lingalign
    from lingalign.blas import blas_threads
    from lingalign.fit import choose_layer, fit_layers
    from lingalign.metrics import heldout_split

    cpus = len(os.sched_getaffinity(0))
    half = max(1, cpus // 2)
    results: dict[str, Any] = {"model": args.model, "pairs": args.pairs, "method": args.method, "cpus": cpus,
                               "command": " ".join(["python bench/fit_speed.py", *sys.argv[1:]])}
    conditions = (("quiet", None), ("busy", Busy))

    def run_condition(name: str, ctx: Any, fn: Callable[[], Any]) -> tuple[float, Any]:
        if ctx is None:
            return timed(fn)
        with ctx():
            return timed(fn)

    if args.captures:
        X, Y = lingalign.Captures.load(args.captures[0]), lingalign.Captures.load(args.captures[1])
        X, Y = X.rows(slice(0, args.pairs)), Y.rows(slice(0, args.pairs))
    else:
        from lingalign.capturing import capture
        from lingalign.data import read_pairs
        from lingalign.hook import open_model

        src, tgt = read_pairs(DATA / "tatoeba" / f"tatoeba.{args.lang}-eng.{args.lang}",
                              DATA / "tatoeba" / f"tatoeba.{args.lang}-eng.eng", limit=args.pairs)
        for threads in (cpus, half) if half != cpus else (cpus,):
            llm = open_model(args.model, n_ctx=512, n_threads=threads, n_threads_batch=threads)
            capture(llm, src[:20], progress=False)  # warm up
            for name, ctx in conditions:
                sec, caps = run_condition(name, ctx, lambda: (capture(llm, src, progress=False), capture(llm, tgt, progress=False)))
                results[f"capture {name}, {threads} llama threads"] = round(sec, 2)
                print(f"capture {name}, {threads} llama threads: {sec:.1f} s", flush=True)
            X, Y = caps
            del llm
    results["pairs"] = len(X)
    results["layers"] = len(X.layers)
    results["width"] = X.width

    def after_capture() -> None:  # what `lingalign fit --layers auto` does after capture
        layer, alpha, _ = choose_layer(X, Y, method=args.method)
        lingalign.Transform.fit(X, Y, method=args.method, layers=[layer])

    def before() -> None:  # the layer choice before: the weight decay chosen per candidate layer
        train, _ = heldout_split(len(X))
        fit_layers(X.rows(train), Y.rows(train), method=args.method)
        lingalign.Transform.fit(X, Y, method=args.method, layers=[X.layers[len(X.layers) // 2]])

    variants = [("fit now", after_capture, half)]
    if not args.quick:
        variants.append(("fit now, BLAS on all CPUs", after_capture, cpus))
    if args.method == "contrastive" and not args.quick:
        variants.append(("fit before (weight decay per layer), BLAS on all CPUs", before, cpus))
    for label, fn, threads in variants:
        for name, ctx in conditions:
            with blas_threads(threads):
                sec, _ = run_condition(name, ctx, fn)
            results[f"{label}: {name}"] = round(sec, 2)
            print(f"{label} ({threads} BLAS threads), {name}: {sec:.1f} s", flush=True)
    ratios = {}
    for key in list(results):
        if key.endswith(": busy") or key.startswith("capture busy"):
            quiet_key = key.replace(": busy", ": quiet").replace("capture busy", "capture quiet")
            ratios[f"{key} / quiet"] = round(results[key] / results[quiet_key], 2)
    results["ratios busy / quiet"] = ratios
    if "fit before (weight decay per layer), BLAS on all CPUs: quiet" in results:
        results["ratio fit now / before, quiet"] = round(results["fit now: quiet"] / results["fit before (weight decay per layer), BLAS on all CPUs: quiet"], 3)
        results["ratio fit now / before, busy"] = round(results["fit now: busy"] / results["fit before (weight decay per layer), BLAS on all CPUs: busy"], 3)
    for k, v in results.items():
        if "ratio" in k:
            print(k, v)
    out = ROOT / "bench" / "results" / f"fit_speed-{args.model}.json"
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
