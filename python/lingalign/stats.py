"""Sufficient statistics of paired captures, and the fits that need only them (numpy only).

A shard of sentence pairs reduces, per fitted layer, to n, sum X, sum Y and the second moments
its method needs (X^T X and X^T Y for the maps, X^T X and Y^T Y for LDA), in float64 (d x d each:
3.1 MB at d=640, 128 MB at d=4096). Shards merge by addition in shard order (`merge`), so a
reduction gives the same bits whatever order the shards were finished in. From the merged
statistics:

- meanshift / langvec: mean(Y) - mean(X) (sum Y / n - sum X / n);
- ridge: W = I + (Cxx + lam s I)^-1 (Cxy - Cxx) on centred statistics (Cxx = X^T X - n mx mx^T),
  s = trace(Cxx) / d, plus the bias my - mx W: the same map as `fit.fit_ridge`'s SVD of the
  centred data (the normal equations are its closed form), up to rounding;
- incline: the minimum-norm least-squares map pinv(X^T X) X^T Y (X^T X eigendecomposed, the
  eigenvalues below lstsq's cutoff dropped), with or without a bias;
- lda: Fisher's direction from the pooled within-language covariance (Cxx + Cyy) / (2n - 2), as
  `fit.fit_lda`.

The rows are gone after the reduction, so what `fit` chooses on a held-out fifth of the rows
(ridge's lambda, LDA's shrinkage) is chosen here on held-out rows kept apart: `choose_lambda`
and `choose_shrinkage` score the candidates fitted from the other rows' statistics on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LingalignError
from .layer import LayerMap

# the second moments each statistics method needs (besides n and the sums)
MOMENTS: dict[str, tuple[str, ...]] = {
    "ridge": ("xx", "xy"),
    "incline": ("xx", "xy"),
    "lda": ("xx", "yy"),
    "meanshift": (),
    "langvec": (),
}
STATS_METHODS = tuple(MOMENTS)


@dataclass
class LayerStats:
    """Sums over the rows of one layer: n, sum X [d], sum Y [d] and the second moments asked
    for, X^T X, X^T Y, Y^T Y [d, d] (float64; None when not kept)."""

    n: int
    sx: np.ndarray
    sy: np.ndarray
    xx: np.ndarray | None = None
    xy: np.ndarray | None = None
    yy: np.ndarray | None = None

    @classmethod
    def of(cls, X: np.ndarray, Y: np.ndarray, *, moments: Sequence[str] = ("xx", "xy")) -> LayerStats:
        if X.shape != Y.shape or X.ndim != 2:
            raise LingalignError(f"paired rows must have the same [N, d] shape, got {X.shape} and {Y.shape}")
        unknown = set(moments) - {"xx", "xy", "yy"}
        if unknown:
            raise LingalignError(f"unknown second moments {sorted(unknown)} (xx, xy, yy)")
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        return cls(
            n=int(X64.shape[0]),
            sx=X64.sum(axis=0),
            sy=Y64.sum(axis=0),
            xx=X64.T @ X64 if "xx" in moments else None,
            xy=X64.T @ Y64 if "xy" in moments else None,
            yy=Y64.T @ Y64 if "yy" in moments else None,
        )

    @property
    def moments(self) -> tuple[str, ...]:
        return tuple(k for k in ("xx", "xy", "yy") if getattr(self, k) is not None)

    def __add__(self, other: LayerStats) -> LayerStats:
        if self.moments != other.moments:
            raise LingalignError(f"cannot merge statistics with different second moments: {self.moments} and {other.moments}")
        return LayerStats(
            n=self.n + other.n,
            sx=self.sx + other.sx,
            sy=self.sy + other.sy,
            **{k: getattr(self, k) + getattr(other, k) for k in self.moments},
        )

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}n": np.array(self.n, dtype=np.int64), f"{prefix}sx": self.sx, f"{prefix}sy": self.sy}
        out.update({f"{prefix}{k}": getattr(self, k) for k in self.moments})
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str) -> LayerStats:
        return cls(
            n=int(arrays[f"{prefix}n"]),
            sx=np.asarray(arrays[f"{prefix}sx"], dtype=np.float64),
            sy=np.asarray(arrays[f"{prefix}sy"], dtype=np.float64),
            **{k: np.asarray(arrays[f"{prefix}{k}"], dtype=np.float64) for k in ("xx", "xy", "yy")
               if f"{prefix}{k}" in arrays},
        )


Stats = dict[int, LayerStats]  # one LayerStats per fitted layer


def shard_stats(X: np.ndarray, Y: np.ndarray, layers: Sequence[int], *, moments: Sequence[str] = ("xx", "xy")) -> Stats:
    """Statistics of one shard: X, Y [N, len(layers), d] (pooled captures of the fitted layers)."""
    return {int(il): LayerStats.of(X[:, k], Y[:, k], moments=moments) for k, il in enumerate(layers)}


def merge(shards: Iterable[Stats]) -> Stats:
    """Sum of shard statistics, added strictly in the order given (float64 addition is not
    associative: the order is what makes a reduction reproducible)."""
    total: Stats | None = None
    for s in shards:
        if total is None:
            total = dict(s)
            continue
        if sorted(s) != sorted(total):
            raise LingalignError(f"shards cover different layers: {sorted(s)} vs {sorted(total)}")
        total = {il: total[il] + s[il] for il in total}
    if total is None:
        raise LingalignError("no shards to merge")
    return total


def stats_to_arrays(stats: Stats) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for il, s in stats.items():
        out.update(s.to_arrays(f"L{il}_"))
    return out


def stats_from_arrays(arrays: Any, layers: Sequence[int]) -> Stats:
    return {int(il): LayerStats.from_arrays(arrays, f"L{il}_") for il in layers}


def _centred(s: LayerStats) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    assert s.xx is not None and s.xy is not None
    mx, my = s.sx / s.n, s.sy / s.n
    cxx = s.xx - s.n * np.outer(mx, mx)
    cxy = s.xy - s.n * np.outer(mx, my)
    return mx, my, cxx, cxy


def _moments(s: LayerStats, bias: bool, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean X, mean Y, X^T X, X^T Y), centred when the fit has a bias (zero means otherwise)."""
    if s.xx is None or s.xy is None:
        raise LingalignError(f"{method} needs second moments (X^T X, X^T Y)")
    if bias:
        return _centred(s)
    d = s.sx.shape[0]
    return np.zeros(d), np.zeros(d), s.xx, s.xy


def ridge_from_stats(s: LayerStats, lam: float, *, bias: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """`fit.fit_ridge` with a given lam, from statistics: (W [d, d], b or None)."""
    d = s.sx.shape[0]
    mx, my, cxx, cxy = _moments(s, bias, "ridge")
    cxx = (cxx + cxx.T) / 2  # exactly symmetric
    scale = float(np.trace(cxx) / d) or 1.0
    # (Xc^T Xc + lam s I)^-1 Xc^T (Yc - Xc): eigh, so that a singular Cxx (N < d) is still solved
    evals, V = np.linalg.eigh(cxx)
    evals = np.maximum(evals, 0.0)
    D = (V / (evals + lam * scale)) @ (V.T @ (cxy - cxx))
    W = np.eye(d) + D
    return W, (my - mx @ W if bias else None)


def incline_from_stats(s: LayerStats, *, bias: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """`fit.fit_incline` from statistics: the minimum-norm least-squares map (W, b or None).

    pinv(X^T X) X^T Y equals pinv(X) Y. X^T X holds X's directions only to its own rounding
    (about eps * max(N, d) * its largest eigenvalue), so eigenvalues below 100 times that are
    treated as zero: directions whose singular value is under ~1e-6 of the largest are dropped,
    where lstsq would keep those above ~1e-13. Equal to lstsq for well-conditioned X and for
    N < d with X of full row rank (the null space is cut either way)."""
    d = s.sx.shape[0]
    mx, my, cxx, cxy = _moments(s, bias, "incline")
    evals, V = np.linalg.eigh((cxx + cxx.T) / 2)
    top = float(evals.max()) if evals.size else 0.0
    cut = 100 * np.finfo(np.float64).eps * max(s.n, d) * top
    keep = evals > max(cut, 0.0)
    inv = np.zeros_like(evals)
    inv[keep] = 1.0 / evals[keep]
    W = (V * inv) @ (V.T @ cxy)
    return W, (my - mx @ W if bias else None)


def meanshift_from_stats(s: LayerStats) -> np.ndarray:
    """mean(Y) - mean(X)."""
    return s.sy / s.n - s.sx / s.n


def _within_scatter(s: LayerStats) -> tuple[np.ndarray, np.ndarray]:
    """`fit._within_scatter` from statistics: (pooled within-language covariance, mean(Y) - mean(X))."""
    if s.xx is None or s.yy is None:
        raise LingalignError("lda needs the second moments X^T X and Y^T Y")
    mx, my = s.sx / s.n, s.sy / s.n
    cxx = s.xx - s.n * np.outer(mx, mx)
    cyy = s.yy - s.n * np.outer(my, my)
    Sw = (cxx + cyy) / max(2 * s.n - 2, 1)
    return (Sw + Sw.T) / 2, my - mx


def lda_from_stats(s: LayerStats, shrinkage: float) -> np.ndarray:
    """`fit.fit_lda` with a given shrinkage, from statistics: the vector along Fisher's direction."""
    from .fit import _fisher_direction

    Sw, diff = _within_scatter(s)
    w = _fisher_direction(Sw, diff, float(shrinkage))
    return w * float(w @ diff)


def choose_lambda(train: LayerStats, X: np.ndarray, Y: np.ndarray, *, bias: bool = True,
                  lambdas: Sequence[float] | None = None) -> tuple[float, dict[str, float]]:
    """Ridge's lambda for statistics: the candidate (fit.RIDGE_LAMBDAS) whose map, fitted from the
    `train` statistics, has the least mean squared error on the held-out rows X -> Y [M, d].
    Returns (lambda, {heldout_mse_identity, heldout_mse_fitted}), as `fit.fit_ridge` reports."""
    from .fit import RIDGE_LAMBDAS, pick_lambda

    return pick_lambda(lambda lam: ridge_from_stats(train, lam, bias=bias), X.astype(np.float64),
                       Y.astype(np.float64), lambdas or RIDGE_LAMBDAS)


def choose_shrinkage(train: LayerStats, X: np.ndarray, Y: np.ndarray) -> float:
    """LDA's shrinkage for statistics: the candidate (fit.LDA_SHRINKAGES) whose direction, fitted
    from the `train` statistics, separates the held-out rows X, Y best, as `fit.fit_lda` chooses."""
    from .fit import pick_shrinkage

    return pick_shrinkage(*_within_scatter(train), X.astype(np.float64), Y.astype(np.float64))


def fit_from_stats(
    stats: Stats,
    *,
    method: str,
    lam: float | dict[int, float] | None = None,
    bias: bool | None = None,
    rank: int | None = None,
    shrinkage: float | dict[int, float] | None = None,
) -> tuple[dict[int, LayerMap], dict[str, Any]]:
    """One LayerMap per layer of `stats` for a statistics method: (layer maps, fit record),
    the same record keys as `fit.fit_layers` gives. `lam` (ridge) and `shrinkage` (lda) are one
    value for every layer or one per layer (as `choose_lambda` / `choose_shrinkage` chose them)."""
    from .fit import truncate_map  # fit is numpy only too

    if method not in STATS_METHODS:
        raise LingalignError(f"{method} cannot be fitted from sufficient statistics (one of {', '.join(STATS_METHODS)})")
    if method == "ridge" and lam is None:
        raise LingalignError("ridge from statistics needs lambda (--lambda) or held-out rows to choose it")
    if method == "lda" and shrinkage is None:
        raise LingalignError("lda from statistics needs a shrinkage or held-out rows to choose it")
    layers = sorted(stats)

    def per_layer(value: float | dict[int, float] | None, il: int) -> float:
        assert value is not None
        return float(value[il]) if isinstance(value, dict) else float(value)

    n = stats[layers[0]].n
    info: dict[str, Any] = {"pairs": n, "reduced": "sufficient statistics, float64, shard order"}
    use_bias = (method == "ridge") if bias is None else bool(bias)
    if method not in ("meanshift", "langvec", "lda"):
        info["bias"] = use_bias
    out: dict[int, LayerMap] = {}
    ranks: dict[str, int | str] = {}
    for il in layers:
        s = stats[il]
        if method == "meanshift":
            out[il] = LayerMap(vector=meanshift_from_stats(s).astype(np.float32))
            continue
        if method == "langvec":
            out[il] = LayerMap(shift=meanshift_from_stats(s).astype(np.float32))
            continue
        if method == "lda":
            out[il] = LayerMap(vector=lda_from_stats(s, per_layer(shrinkage, il)).astype(np.float32))
            continue
        if method == "ridge":
            W, b = ridge_from_stats(s, per_layer(lam, il), bias=use_bias)
        else:
            W, b = incline_from_stats(s, bias=use_bias)
        d = W.shape[0]
        ranks[str(il)] = rank if rank is not None and rank < d else "full"
        if rank is None or rank >= d:
            out[il] = LayerMap(matrix=W.astype(np.float32), bias=None if b is None else b.astype(np.float32))
            continue
        U, Vt = truncate_map(W, rank)
        b32 = None
        if b is not None:
            Wr = np.eye(d) + U @ Vt
            b32 = (s.sy / s.n - (s.sx / s.n) @ Wr).astype(np.float32)
        out[il] = LayerMap(lowrank_u=U.astype(np.float32), lowrank_vt=Vt.astype(np.float32), bias=b32)
    if method == "ridge":
        info["ridge_lambda"] = {str(il): per_layer(lam, il) for il in layers}
    if method == "lda":
        info["lda_shrinkage"] = {str(il): per_layer(shrinkage, il) for il in layers}
    if method not in ("meanshift", "langvec", "lda"):
        info["rank"] = ranks
    return out, info
