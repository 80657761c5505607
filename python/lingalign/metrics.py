"""Numpy measures shared by fitting and evaluation: unit rows, bitext retrieval, pair distance,
the checks on paired activations, the one held-out split every fitting step uses, and the
paired comparison of right and wrong answers with and without a transform."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import LingalignError

VAL_FRACTION = 0.2  # the held-out share of pairs wherever a fit chooses a setting


def unit_rows(A: np.ndarray) -> np.ndarray:
    """Rows of A scaled to unit length, in float64 (zero rows stay zero)."""
    A = np.asarray(A, dtype=np.float64)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-30)


def retrieval_top1(src: np.ndarray, tgt: np.ndarray) -> tuple[float, float]:
    """Bitext retrieval by cosine: share of src rows whose nearest tgt row is their pair, and back."""
    sim = unit_rows(src) @ unit_rows(tgt).T
    idx = np.arange(sim.shape[0])
    return float((sim.argmax(axis=1) == idx).mean()), float((sim.argmax(axis=0) == idx).mean())


def pair_cosine_distance(src: np.ndarray, tgt: np.ndarray) -> float:
    """Mean cosine distance between translation pairs (lower = closer)."""
    return float(1.0 - (unit_rows(src) * unit_rows(tgt)).sum(axis=1).mean())


def check_pair(X: np.ndarray, Y: np.ndarray) -> None:
    """Raise LingalignError unless X and Y are paired [N, d] activations, N >= 2, all finite."""
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape != Y.shape:
        raise LingalignError(f"paired arrays must both be [N, d]; got {X.shape} and {Y.shape}")
    if X.shape[0] < 2:
        raise LingalignError(f"need at least 2 sentence pairs to fit, got {X.shape[0]}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise LingalignError("activations contain NaN or Inf")


def heldout_split(n: int, *, fraction: float = VAL_FRACTION, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices of n pairs: round(n * fraction) held out (at least 1).

    seed=None holds out the last rows in order (for pairs in no particular order, and so that a
    caller can say "the last fifth"); an int seed holds out a seeded random subset.
    """
    n_val = min(n, max(1, int(round(n * fraction))))
    if seed is None:
        order = np.arange(n)
        return order[: n - n_val], order[n - n_val :]
    order = np.random.default_rng(seed).permutation(n)
    return order[n_val:], order[:n_val]


def changed_answers(correct_with: Sequence[bool], correct_without: Sequence[bool]) -> tuple[int, int]:
    """(fixed, broken): items right only with the transform, and items right only without it."""
    if len(correct_with) != len(correct_without):
        raise LingalignError(f"{len(correct_with)} and {len(correct_without)} items: not the same items")
    fixed = sum(bool(c) and not b for c, b in zip(correct_with, correct_without))
    broken = sum(bool(b) and not c for c, b in zip(correct_with, correct_without))
    return fixed, broken


def sign_test_p(fixed: int, broken: int) -> float:
    """One-sided exact sign test (McNemar's exact test) for paired right/wrong outcomes: the
    probability of `fixed` or more of the fixed + broken items that changed being fixes, were a
    fix and a break equally likely. 1.0 when nothing changed."""
    n = fixed + broken
    if fixed < 0 or broken < 0:
        raise LingalignError(f"counts must be non-negative, not {fixed} and {broken}")
    return float(sum(math.comb(n, k) for k in range(fixed, n + 1)) / 2.0**n) if n else 1.0
