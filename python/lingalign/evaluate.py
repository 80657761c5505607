"""Alignment metrics on pooled sentence embeddings (numpy only)."""

from __future__ import annotations

import numpy as np


def _normalize(A: np.ndarray) -> np.ndarray:
    A = A.astype(np.float64)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)


def retrieval_top1(src: np.ndarray, tgt: np.ndarray) -> tuple[float, float]:
    """Bitext retrieval by cosine: share of src rows whose nearest tgt row is their pair, and back."""
    sim = _normalize(src) @ _normalize(tgt).T
    idx = np.arange(sim.shape[0])
    return float((sim.argmax(axis=1) == idx).mean()), float((sim.argmax(axis=0) == idx).mean())


def pair_cosine_distance(src: np.ndarray, tgt: np.ndarray) -> float:
    """Mean cosine distance between translation pairs (lower = closer)."""
    return float(1.0 - (_normalize(src) * _normalize(tgt)).sum(axis=1).mean())


def retrieval_by_layer(src: np.ndarray, tgt: np.ndarray, layers: list[int]) -> dict[str, object]:
    """Per-layer top-1 (src->tgt and tgt->src) for captures [N, L, d]; best and last layer."""
    rows = []
    for k, il in enumerate(layers):
        a2b, b2a = retrieval_top1(src[:, k], tgt[:, k])
        rows.append({"layer": il, "src2tgt": a2b, "tgt2src": b2a, "pair_distance": pair_cosine_distance(src[:, k], tgt[:, k])})
    best = max(rows, key=lambda r: r["src2tgt"])
    return {
        "layers": rows,
        "best_layer": best["layer"],
        "best_top1": best["src2tgt"],
        "last_layer": rows[-1]["layer"],
        "last_top1": rows[-1]["src2tgt"],
    }
