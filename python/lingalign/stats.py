"""Sufficient statistics of paired captures, and the fits that need only them (numpy only).

A shard of sentence pairs reduces, per fitted layer, to n, sum X, sum Y, X^T X and X^T Y in
float64 (d x d: 3.1 MB at d=640, 128 MB at d=4096). Shards merge by addition in shard order
(`merge`), so a reduction gives the same bits whatever order the shards were finished in. From
the merged statistics:

- meanshift / langvec: mean(Y) - mean(X) (sum Y / n - sum X / n);
- ridge: W = I + (Cxx + lam s I)^-1 (Cxy - Cxx) on centred statistics (Cxx = X^T X - n mx mx^T),
  s = trace(Cxx) / d, plus the bias my - mx W: the same map as `fit.fit_ridge`'s SVD of the
  centred data (the normal equations are its closed form), up to rounding;
- incline: the minimum-norm least-squares map pinv(X^T X) X^T Y (X^T X eigendecomposed, the
  eigenvalues below lstsq's cutoff dropped), with or without a bias.

What statistics cannot do: choose ridge's lambda on a random held-out fifth of the rows, or a
rank on held-out rows; the rows are gone. `fit_from_stats` therefore needs `lam` for ridge and
stores full maps or a given rank (see docs/cluster.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LingalignError
from .layer import LayerMap

STATS_METHODS = ("ridge", "incline", "meanshift", "langvec")
STATS_KEYS = ("n", "sx", "sy", "xx", "xy")


@dataclass
class LayerStats:
    """Sums over the rows of one layer: n, sum X [d], sum Y [d], X^T X [d, d], X^T Y [d, d] (float64).

    With `moments=False` only n and the sums are kept (enough for the mean difference)."""

    n: int
    sx: np.ndarray
    sy: np.ndarray
    xx: np.ndarray | None = None
    xy: np.ndarray | None = None

    @classmethod
    def of(cls, X: np.ndarray, Y: np.ndarray, *, moments: bool = True) -> LayerStats:
        if X.shape != Y.shape or X.ndim != 2:
            raise LingalignError(f"paired rows must have the same [N, d] shape, got {X.shape} and {Y.shape}")
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        return cls(
            n=int(X64.shape[0]),
            sx=X64.sum(axis=0),
            sy=Y64.sum(axis=0),
            xx=X64.T @ X64 if moments else None,
            xy=X64.T @ Y64 if moments else None,
        )

    def __add__(self, other: LayerStats) -> LayerStats:
        if (self.xx is None) != (other.xx is None):
            raise LingalignError("cannot merge statistics with and without second moments")
        return LayerStats(
            n=self.n + other.n,
            sx=self.sx + other.sx,
            sy=self.sy + other.sy,
            xx=None if self.xx is None else self.xx + other.xx,
            xy=None if self.xy is None else self.xy + other.xy,
        )

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}n": np.array(self.n, dtype=np.int64), f"{prefix}sx": self.sx, f"{prefix}sy": self.sy}
        if self.xx is not None:
            out[f"{prefix}xx"], out[f"{prefix}xy"] = self.xx, self.xy
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str) -> LayerStats:
        has = f"{prefix}xx" in arrays
        return cls(
            n=int(arrays[f"{prefix}n"]),
            sx=np.asarray(arrays[f"{prefix}sx"], dtype=np.float64),
            sy=np.asarray(arrays[f"{prefix}sy"], dtype=np.float64),
            xx=np.asarray(arrays[f"{prefix}xx"], dtype=np.float64) if has else None,
            xy=np.asarray(arrays[f"{prefix}xy"], dtype=np.float64) if has else None,
        )


Stats = dict[int, LayerStats]  # one LayerStats per fitted layer


def needs_moments(method: str) -> bool:
    return method in ("ridge", "incline")


def shard_stats(X: np.ndarray, Y: np.ndarray, layers: Sequence[int], *, moments: bool = True) -> Stats:
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


def fit_from_stats(
    stats: Stats,
    *,
    method: str,
    lam: float | None = None,
    bias: bool | None = None,
    rank: int | None = None,
) -> tuple[dict[int, LayerMap], dict[str, Any]]:
    """One LayerMap per layer of `stats` for a statistics method: (layer maps, fit record),
    the same record keys as `fit.fit_layers` gives."""
    from .fit import truncate_map  # fit is numpy only too

    if method not in STATS_METHODS:
        raise LingalignError(f"{method} cannot be fitted from sufficient statistics (one of {', '.join(STATS_METHODS)})")
    if method == "ridge" and lam is None:
        raise LingalignError("ridge from statistics needs lambda (--lambda): the held-out rows that choose it are not kept")
    layers = sorted(stats)
    n = stats[layers[0]].n
    info: dict[str, Any] = {"pairs": n, "reduced": "sufficient statistics, float64, shard order"}
    use_bias = (method == "ridge") if bias is None else bool(bias)
    if method not in ("meanshift", "langvec"):
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
        if method == "ridge":
            assert lam is not None
            W, b = ridge_from_stats(s, lam, bias=use_bias)
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
        info["ridge_lambda"] = {str(il): float(lam) for il in layers}  # type: ignore[arg-type]
    if method not in ("meanshift", "langvec"):
        info["rank"] = ranks
    return out, info
