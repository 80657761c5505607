"""Which fitting method generalizes? Every method, every layer, on captured vectors.

For each language, the residual stream of Tatoeba pairs is captured once (all layers, mean-pooled
without BOS) and cached under $XDG_CACHE_HOME/lingalign/study/. Each method is fitted on pairs
1-450 and applied to the source vectors of one layer, exactly as the hook would change that
layer's output; the layer and strength alpha are chosen on pairs 451-500 (dev) and top-1
retrieval (source -> English, cosine over 500 candidates) is reported on pairs 501-1000.
Layers after the intervened one are not measured here (`bench/quality.py` runs the model live).

    python bench/methods_offline.py [--langs spa,deu,...] [--json OUT]

Writes bench/results/methods_offline.json by default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

import lingalign
from lingalign.data import read_pairs
from lingalign.fit import fit_ridge
from lingalign.metrics import retrieval_top1
from lingalign.model import cache_dir, fingerprint

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tatoeba"
RESULTS = Path(__file__).resolve().parent / "results"
LANGS = ("spa", "deu", "cmn", "jpn", "swh", "ind", "tur")
N_PAIRS, N_DEV = 1000, 50


def split_pairs(n: int) -> tuple[slice, slice, slice]:
    """train, dev, test: the first half minus N_DEV, the next N_DEV, the second half (450/50/500
    of 1000 pairs; languages with fewer pairs, such as swh with 390, shrink the same way)."""
    half = min(n, N_PAIRS) // 2
    return slice(0, half - N_DEV), slice(half - N_DEV, half), slice(half, 2 * half)
ALPHAS = (0.25, 0.5, 0.75, 1.0)

Mapper = Callable[[np.ndarray, float], np.ndarray]  # (source vectors, alpha) -> moved vectors


def captures(llm, lang: str) -> dict[str, lingalign.Captures]:
    """Captures of the first N_PAIRS Tatoeba pairs, "src" and "eng" (all layers, mean-pooled).

    The cache holds the bare arrays (the format of earlier runs, which stay valid); the Captures
    are made from them with the model's fingerprint, without data provenance (the callers record
    which lines they fit on).
    """
    path = cache_dir() / "study" / f"tatoeba-{lang}.npz"
    if path.is_file():
        with np.load(path) as z:
            arrays = {side: z[side] for side in ("src", "eng")}
    else:
        src, eng = read_pairs(DATA / f"tatoeba.{lang}-eng.{lang}", DATA / f"tatoeba.{lang}-eng.eng")
        arrays = {"src": lingalign.capture(llm, src[:N_PAIRS]).activations,
                  "eng": lingalign.capture(llm, eng[:N_PAIRS]).activations}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")  # renamed when complete: readers never see a partial file
        np.savez(tmp, **arrays)
        tmp.replace(path)
    model = fingerprint(llm.model_path)
    return {side: lingalign.Captures(a, tuple(range(a.shape[1])), model) for side, a in arrays.items()}


def _procrustes(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(X.T @ Y, full_matrices=False)
    return U @ Vt


def methods(X: np.ndarray, Y: np.ndarray) -> dict[str, Mapper]:
    """Each method fitted on train pairs X -> Y of one layer: a function moving source vectors."""
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    W, b, _ = fit_ridge(X, Y, bias=True)
    R = _procrustes(X - mx, Y - my)
    out: dict[str, Mapper] = {
        "none": lambda S, a: S,
        "meanshift": lambda S, a: S + a * (my - mx),
        "ridge": lambda S, a: S + a * (S @ W + b - S),
        "procrustes": lambda S, a: S + a * ((S - mx) @ R + my - S),
    }
    try:
        from lingalign.contrastive import fit_contrastive

        Wc, bc = fit_contrastive(X, Y)
        out["contrastive"] = lambda S, a: S + a * (S @ Wc + bc - S)
    except ImportError:
        pass
    return out


def study(data: dict[str, lingalign.Captures]) -> dict[str, object]:
    src, eng = data["src"].activations.astype(np.float64), data["eng"].activations.astype(np.float64)
    tr, dv, te = split_pairs(src.shape[0])
    n_layer = src.shape[1]
    per_layer: dict[str, list[float]] = {}
    chosen: dict[str, dict[str, float]] = {}
    dev_best: dict[str, tuple[float, int, float]] = {}
    test_at: dict[tuple[str, int, float], float] = {}
    for il in range(n_layer):
        X, Y = src[tr, il], eng[tr, il]
        for name, move in methods(X, Y).items():
            alphas = (1.0,) if name == "none" else ALPHAS
            for a in alphas:
                dev = retrieval_top1(move(src[dv, il], a), eng[dv, il])[0]
                test = retrieval_top1(move(src[te, il], a), eng[te, il])[0]
                test_at[(name, il, a)] = test
                if a == 1.0:
                    per_layer.setdefault(name, []).append(test)
                if name not in dev_best or dev > dev_best[name][0]:
                    dev_best[name] = (dev, il, a)
        # the evaluation-side baseline: subtract each language's train mean before comparing
        centred = retrieval_top1(src[te, il] - src[tr, il].mean(0), eng[te, il] - eng[tr, il].mean(0))[0]
        per_layer.setdefault("centring (eval only)", []).append(centred)
    for name, (dev, il, a) in dev_best.items():
        chosen[name] = {"layer": il, "alpha": a, "dev_top1": dev, "test_top1": test_at[(name, il, a)]}
    return {"per_layer_alpha1": per_layer, "chosen_on_dev": chosen}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--json", default=str(RESULTS / "methods_offline.json"))
    args = ap.parse_args()
    llm = lingalign.load(n_ctx=512, verbose=False)
    report: dict[str, object] = {"command": "python bench/methods_offline.py", "languages": {}}
    for lang in args.langs.split(","):
        t0 = time.time()
        res = study(captures(llm, lang))
        report["languages"][lang] = res  # type: ignore[index]
        row = "  ".join(
            f"{m} L{c['layer']} a{c['alpha']:g}: {c['test_top1']:.3f}" for m, c in res["chosen_on_dev"].items()
        )
        best_centred = max(res["per_layer_alpha1"]["centring (eval only)"])
        print(f"{lang} ({time.time() - t0:.0f} s)  {row}  | centring best layer {best_centred:.3f}", file=sys.stderr)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
