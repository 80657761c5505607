"""Sufficient statistics (lingalign.stats): shard-order merge and the fits from statistics equal
the fits on the concatenated rows (numpy only; no model)."""

from __future__ import annotations

import numpy as np
import pytest

from lingalign.errors import LingalignError
from lingalign.fit import fit_incline, fit_lda, fit_meanshift, fit_ridge
from lingalign.metrics import heldout_split
from lingalign.stats import (
    LayerStats,
    choose_lambda,
    choose_shrinkage,
    fit_from_stats,
    incline_from_stats,
    lda_from_stats,
    merge,
    meanshift_from_stats,
    ridge_from_stats,
    shard_stats,
    stats_from_arrays,
    stats_to_arrays,
)

# Ridge: the SVD of the centred rows (fit_ridge) and eigh of X^T X - n mx mx^T are two roundings
# of the same closed form; measured largest relative difference 1e-13 (N < d) and 1e-15 (N > d) on these data; 1e-9 allowed.
RTOL = 1e-9


def _pairs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32) + 0.5
    A = np.eye(d) + 0.1 * rng.normal(size=(d, d))
    Y = (X @ A + 0.3 + 0.05 * rng.normal(size=(n, d))).astype(np.float32)
    return X, Y


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _sharded(X: np.ndarray, Y: np.ndarray, size: int) -> LayerStats:
    shards = [shard_stats(X[i : i + size, None], Y[i : i + size, None], [0]) for i in range(0, len(X), size)]
    return merge(shards)[0]


@pytest.mark.parametrize("n", [200, 20])  # more rows than width, and fewer (singular X^T X)
def test_ridge_from_stats_equals_fit_ridge(n):
    X, Y = _pairs(n, 32)
    s = _sharded(X, Y, 7)
    for bias in (True, False):
        for lam in (1e-2, 1.0):
            W, b, _ = fit_ridge(X, Y, lam=lam, bias=bias)
            Ws, bs = ridge_from_stats(s, lam, bias=bias)
            assert _rel(Ws, W) < RTOL
            if bias:
                assert _rel(bs, b) < RTOL
            else:
                assert bs is None and b is None


@pytest.mark.parametrize("bias", [False, True])
def test_incline_from_stats_equals_lstsq(bias):
    X, Y = _pairs(300, 16, seed=1)
    W, b = fit_incline(X, Y, bias=bias)
    Ws, bs = incline_from_stats(_sharded(X, Y, 64), bias=bias)
    # the normal equations square the condition number: ~1e-12 here (well conditioned)
    assert _rel(Ws, W) < 1e-8
    if bias:
        assert _rel(bs, b) < 1e-8


def test_meanshift_from_stats_equals_difference_of_means():
    X, Y = _pairs(101, 8, seed=2)
    v = meanshift_from_stats(_sharded(X, Y, 10))
    assert np.allclose(v, fit_meanshift(X, Y), rtol=0, atol=1e-14)


def test_merge_in_shard_order_is_bit_reproducible_and_round_trips():
    X, Y = _pairs(90, 12, seed=3)
    A = np.stack([X, X * 2], axis=1)
    B = np.stack([Y, Y - 1], axis=1)
    parts = [shard_stats(A[i : i + 20], B[i : i + 20], [3, 5]) for i in range(0, 90, 20)]
    one = merge(parts)
    again = merge(stats_from_arrays(stats_to_arrays(p), [3, 5]) for p in parts)
    for il in (3, 5):
        assert one[il].n == 90
        for key in ("sx", "sy", "xx", "xy"):
            assert np.array_equal(getattr(one[il], key), getattr(again[il], key))
    whole = shard_stats(A, B, [3, 5])
    assert np.allclose(one[5].xx, whole[5].xx, rtol=1e-12)


def test_fit_from_stats_record_and_refusals():
    X, Y = _pairs(60, 8, seed=4)
    stats = merge([shard_stats(X[:30, None], Y[:30, None], [2]), shard_stats(X[30:, None], Y[30:, None], [2])])
    maps, info = fit_from_stats(stats, method="ridge", lam=0.1)
    assert info["pairs"] == 60 and info["ridge_lambda"] == {"2": 0.1} and maps[2].kind == "affine"
    shift, _ = fit_from_stats(stats, method="langvec")
    assert shift[2].kind == "shift"
    low, _ = fit_from_stats(stats, method="incline", rank=2)
    assert low[2].kind == "lowrank"
    with pytest.raises(LingalignError, match="lambda"):
        fit_from_stats(stats, method="ridge")
    with pytest.raises(LingalignError, match="cannot be fitted"):
        fit_from_stats(stats, method="contrastive")


def test_choices_on_heldout_rows_equal_fits_own_choices():
    """Given the rows fit holds out (its seeded fifth) and the statistics of the others, ridge's
    lambda and LDA's shrinkage come out as fit_ridge and fit_lda choose them, and the LDA vector
    from statistics (X^T X, Y^T Y) is fit_lda's."""
    X, Y = _pairs(120, 16, seed=5)
    Y[:, :4] += 2.0  # a language difference for LDA to find
    tr, va = heldout_split(len(X), seed=0)
    _, _, lam = fit_ridge(X, Y)
    got, report = choose_lambda(LayerStats.of(X[tr], Y[tr]), X[va], Y[va])
    assert got == lam and report["heldout_mse_fitted"] < report["heldout_mse_identity"]
    v, g = fit_lda(X, Y)
    assert choose_shrinkage(LayerStats.of(X[tr], Y[tr], moments=("xx", "yy")), X[va], Y[va]) == g
    from_stats = lda_from_stats(_sharded_moments(X, Y, 25, ("xx", "yy")), g)
    assert _rel(from_stats, v) < RTOL


def _sharded_moments(X: np.ndarray, Y: np.ndarray, size: int, moments: tuple[str, ...]) -> LayerStats:
    return merge([shard_stats(X[i : i + size, None], Y[i : i + size, None], [0], moments=moments)
                  for i in range(0, len(X), size)])[0]


def test_moments_must_match_to_merge_and_lda_needs_yy():
    X, Y = _pairs(30, 4)
    with pytest.raises(LingalignError, match="different second moments"):
        LayerStats.of(X, Y) + LayerStats.of(X, Y, moments=("xx", "yy"))
    with pytest.raises(LingalignError, match="unknown second moments"):
        LayerStats.of(X, Y, moments=("xz",))
    with pytest.raises(LingalignError, match="Y\\^T Y"):
        lda_from_stats(LayerStats.of(X, Y), 0.1)
    stats = {1: LayerStats.of(X, Y, moments=("xx", "yy"))}
    with pytest.raises(LingalignError, match="shrinkage"):
        fit_from_stats(stats, method="lda")
    maps, info = fit_from_stats(stats, method="lda", shrinkage={1: 0.3})
    assert maps[1].kind == "additive" and info["lda_shrinkage"] == {"1": 0.3}
