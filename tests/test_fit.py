"""Fitted maps reduce the error they minimize on held-out pairs (synthetic data, no model)."""

from __future__ import annotations

import numpy as np
import pytest

import lingalign
from lingalign import Captures, LayerMap, LingalignError, Transform
from lingalign.fit import fit_incline, fit_meanshift, fit_ridge, squared_error
from lingalign.metrics import retrieval_top1
from lingalign.model import ModelFingerprint

D = 32
FP = ModelFingerprint("llama", D, 3, "v" * 64, "w" * 64)


def _pairs(n, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    A = np.eye(D) + 0.3 * rng.standard_normal((D, D)) / np.sqrt(D)
    shift = rng.standard_normal(D)
    X = rng.standard_normal((n, D)) + 2.0
    Y = X @ A + shift + noise * rng.standard_normal((n, D))
    return X.astype(np.float32), Y.astype(np.float32)


def _split(n_train=200, n_test=200):
    X, Y = _pairs(n_train + n_test)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def test_ridge_reduces_held_out_error():
    Xtr, Ytr, Xte, Yte = _split()
    W, b, lam = fit_ridge(Xtr, Ytr)
    before = squared_error(Xte, Yte, LayerMap(matrix=np.eye(D, dtype=np.float32)))
    after = squared_error(Xte, Yte, LayerMap(matrix=W.astype(np.float32), bias=b.astype(np.float32)))
    assert after < 0.1 * before
    assert lam > 0


def test_incline_is_least_squares():
    Xtr, Ytr, Xte, Yte = _split()
    W, _ = fit_incline(Xtr, Ytr)
    # normal equations hold at the minimum
    grad = Xtr.astype(np.float64).T @ (Xtr @ W - Ytr)
    assert np.abs(grad).max() < 1e-6 * np.abs(Xtr.T @ Ytr).max()
    before = squared_error(Xte, Yte, LayerMap(matrix=np.eye(D, dtype=np.float32)))
    assert squared_error(Xte, Yte, LayerMap(matrix=W.astype(np.float32))) < before


def test_incline_interpolates_when_fewer_pairs_than_dimensions():
    X, Y = _pairs(10)
    W, _ = fit_incline(X, Y)
    np.testing.assert_allclose(X @ W, Y, atol=1e-4)
    W, b = fit_incline(X, Y, bias=True)
    np.testing.assert_allclose(X @ W + b, Y, atol=1e-4)


def test_ridge_shrinks_to_identity_and_beats_incline_with_few_pairs():
    Xtr, Ytr, Xte, Yte = _split(n_train=20)
    W_big, b_big, _ = fit_ridge(Xtr, Ytr, lam=1e9)
    np.testing.assert_allclose(W_big, np.eye(D), atol=1e-5)
    W_nob, b_nob, _ = fit_ridge(Xtr, Ytr, lam=1.0, bias=False)
    assert b_nob is None
    W, b, _ = fit_ridge(Xtr, Ytr)
    ridge = squared_error(Xte, Yte, LayerMap(matrix=W.astype(np.float32), bias=b.astype(np.float32)))
    incline = squared_error(Xte, Yte, LayerMap(matrix=fit_incline(Xtr, Ytr)[0].astype(np.float32)))
    assert ridge < incline


def test_meanshift_is_difference_of_means_and_reduces_error():
    Xtr, Ytr, Xte, Yte = _split()
    v = fit_meanshift(Xtr, Ytr)
    np.testing.assert_allclose(v, Ytr.mean(0) - Xtr.mean(0), rtol=1e-5, atol=1e-5)
    assert squared_error(Xte, Yte, LayerMap(vector=v.astype(np.float32))) < squared_error(Xte, Yte, LayerMap(vector=np.zeros(D, np.float32)))


def _caps(activations, layers=(0, 1, 2), model=FP):
    return Captures(np.asarray(activations, dtype=np.float32), tuple(layers), model)


def test_transform_fit_builds_valid_transform_per_layer():
    X, Y = _pairs(100)
    src = _caps(np.stack([X, X * 2, X], axis=1))
    tgt = _caps(np.stack([Y, Y * 2, Y], axis=1))
    for method in ("ridge", "incline", "meanshift"):
        t = Transform.fit(src, tgt, method=method, layers=[1, 2], source_lang="xxx")
        assert sorted(t.layers) == [1, 2] and t.model == FP
        assert t.method == method and t.fit_info["pairs"] == 100
        assert (t.layers[1].bias is not None) == (method == "ridge")
    t = Transform.fit(src, tgt, method="incline", bias=True)
    assert t.layers[0].bias is not None and t.fit_info["bias"] is True
    with pytest.raises(LingalignError, match="unknown method"):
        Transform.fit(src, tgt, method="magic")
    with pytest.raises(LingalignError, match="not captured"):
        Transform.fit(src, tgt, layers=[5])
    with pytest.raises(LingalignError, match="different models"):
        Transform.fit(src, _caps(tgt.activations, model=ModelFingerprint("llama", D, 3, "x" * 64, "w" * 64)))
    with pytest.raises(LingalignError, match="paired"):
        Transform.fit(src, tgt.rows(slice(0, 50)), method="ridge")
    bad = src.activations.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(LingalignError, match="NaN"):
        Transform.fit(_caps(bad), tgt, method="ridge")


def test_captures_round_trip_and_refuse_other_files(tmp_path):
    X, _ = _pairs(20)
    caps = Captures(np.stack([X, X], axis=1).astype(np.float32), (0, 2), FP, site="residual", pool="last",
                    info={"sha256": "abc"})
    caps.save(tmp_path / "c.npz")
    back = Captures.load(tmp_path / "c.npz")
    assert np.array_equal(back.activations, caps.activations) and back.layers == (0, 2)
    assert (back.model, back.site, back.pool, back.info) == (FP, "residual", "last", {"sha256": "abc"})
    assert np.array_equal(back.layer(2), X.astype(np.float32))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LingalignError, match="not a lingalign captures file"):
        Captures.load(tmp_path / "bad.npz")
    with pytest.raises(LingalignError, match="sorted"):
        Captures(caps.activations, (2, 0), FP)
    with pytest.raises(LingalignError, match="width"):
        Captures(np.zeros((2, 1, 5), np.float32), (0,), FP)


def test_deprecated_fit_transform_warns_and_still_fits():
    X, Y = _pairs(50)
    src, tgt = np.stack([X], axis=1).astype(np.float32), np.stack([Y], axis=1).astype(np.float32)
    with pytest.warns(DeprecationWarning, match="Transform.fit"):
        fit_transform = lingalign.fit_transform
    old = fit_transform(src, tgt, model=FP, layers=[1], method="ridge")
    new = Transform.fit(_caps(src, (1,)), _caps(tgt, (1,)), method="ridge")
    assert np.array_equal(old.layers[1].matrix, new.layers[1].matrix)


def test_retrieval_top1():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, D))
    assert retrieval_top1(A, A + 0.01 * rng.standard_normal((50, D))) == (1.0, 1.0)
    assert retrieval_top1(A, rng.standard_normal((50, D)))[0] < 0.3


def test_rank_auto_finds_low_rank_maps_and_keeps_full_ones():
    from lingalign.fit import choose_rank, fit_ridge, truncate_map

    rng = np.random.default_rng(0)
    d, n = 32, 400
    X = rng.standard_normal((n, d))
    low = rng.standard_normal((d, 4)) @ rng.standard_normal((4, d)) / d
    Y = X @ (np.eye(d) + low) + 0.01 * rng.standard_normal((n, d))

    def ridge(Xa, Ya):
        W, b, _ = fit_ridge(Xa, Ya, lam=1e-3)
        return W, b

    assert choose_rank(X, Y, ridge, candidates=(2, 4, 8, 16)) == 4
    dense = rng.standard_normal((d, d)) / np.sqrt(d)
    assert choose_rank(X, X @ (np.eye(d) + dense), ridge, candidates=(2, 4, 8, 16)) is None
    U, Vt = truncate_map(np.eye(d) + low, 4)
    np.testing.assert_allclose(U @ Vt, low, atol=1e-10)

    fp = ModelFingerprint("llama", d, 1, "v", "w")
    t = Transform.fit(_caps(X[:, None, :], (0,), fp), _caps(Y[:, None, :], (0,), fp), method="ridge", rank="auto", lam=1e-3)
    # default candidates start at 8: the smallest one that holds the rank-4 map
    assert t.layers[0].kind == "lowrank" and t.layers[0].lowrank_u.shape == (d, 8) and t.fit_info["rank"] == {"0": 8}
    with pytest.raises(LingalignError, match="rank"):
        Transform.fit(_caps(X[:, None, :], (0,), fp), _caps(Y[:, None, :], (0,), fp), rank=0)


def test_choose_layer_finds_the_layer_a_map_can_fix():
    from lingalign.fit import choose_layer

    rng = np.random.default_rng(5)
    n = 300
    base = rng.standard_normal((n, D))
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    src = np.stack([base + 2 * rng.standard_normal((n, D)), base @ Q, base + 2 * rng.standard_normal((n, D))], axis=1)
    tgt = np.stack([base, base, base], axis=1)  # layer 1 is a pure rotation away: a map fixes it exactly
    layer, alpha, record = choose_layer(_caps(src), _caps(tgt), method="ridge", lam=1e-3)
    assert layer == 1 and alpha in (0.25, 0.5, 0.75, 1.0)
    assert record["heldout_pairs"] == 60 and record["heldout_top1"] > 0.95
    assert record["gain_by_layer"]["1"] > record["gain_by_layer"]["0"]
    with pytest.raises(LingalignError, match="at least 10"):
        choose_layer(_caps(src[:9]), _caps(tgt[:9]))


def test_langvec_is_the_mean_difference_applied_with_norms_kept():
    X, Y = _pairs(60)
    src, tgt = _caps(np.stack([X, X, X], axis=1)), _caps(np.stack([Y, Y, Y], axis=1))
    t = Transform.fit(src, tgt, method="langvec", layers=[1])
    lm = t.layers[1]
    assert lm.kind == "shift" and t.method == "langvec" and "bias" not in t.fit_info
    np.testing.assert_allclose(lm.shift, Y.mean(axis=0) - X.mean(axis=0), rtol=1e-5, atol=1e-6)
    from lingalign.fit import apply_map

    moved = apply_map(X, lm)
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), np.linalg.norm(X.astype(np.float64), axis=1), rtol=1e-12)


def _two_languages(n, seed=0):
    """Pooled states of two 'languages': shared content plus a language offset along a direction
    the content also varies along (so the mean difference and the discriminant differ)."""
    rng = np.random.default_rng(seed)
    content = rng.standard_normal((n, D)) * np.linspace(3.0, 0.2, D)  # anisotropic content
    lang = np.zeros(D)
    lang[0], lang[-1] = 1.0, 1.0  # the offset: along a high- and a low-variance axis
    return (content + rng.standard_normal((n, D)) * 0.05).astype(np.float32), (content + lang).astype(np.float32)


def test_lda_vector_separates_better_than_the_mean_difference_and_lands_on_the_english_projection():
    from lingalign.fit import _fisher_ratio, fit_lda

    X, Y = _two_languages(400)
    v, shrinkage = fit_lda(X, Y)
    assert 0.0 <= shrinkage <= 1.0
    w = v / np.linalg.norm(v)
    md = fit_meanshift(X, Y)
    Xt, Yt = _two_languages(400, seed=1)  # held-out sentences
    # the discriminant leans on the low-variance axis, where the languages separate cleanly
    assert _fisher_ratio(Xt.astype(np.float64), Yt.astype(np.float64), w) > 3 * _fisher_ratio(
        Xt.astype(np.float64), Yt.astype(np.float64), md / np.linalg.norm(md))
    # moving the source by v puts its mean projection on English's, and leaves the rest alone
    np.testing.assert_allclose(((X + v) @ w).mean(), (Y @ w).mean(), rtol=1e-4)
    t = Transform.fit(_caps(np.stack([X] * 3, axis=1)), _caps(np.stack([Y] * 3, axis=1)), method="lda", layers=[2])
    assert t.layers[2].kind == "additive" and "2" in t.fit_info["lda_shrinkage"]
    with pytest.raises(LingalignError, match="shrinkage"):
        fit_lda(X, Y, shrinkage=1.5)


def test_staged_moves_toward_english_in_the_middle_and_back_toward_the_source_late():
    from lingalign.fit import default_stages

    X, Y = _pairs(60)
    src, tgt = _caps(np.stack([X, X, X], axis=1)), _caps(np.stack([Y, Y, Y], axis=1))
    t = Transform.fit(src, tgt, method="staged", layers=[0, 1], anchor_layers=[2])
    md = Y.mean(axis=0) - X.mean(axis=0)
    assert [t.layers[il].kind for il in (0, 1, 2)] == ["shift"] * 3
    np.testing.assert_allclose(t.layers[1].shift, md, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.layers[2].shift, -md, rtol=1e-5, atol=1e-6)
    assert t.fit_info["stages"] == {"align": [0, 1], "anchor": [2], "anchor_strength": 1.0}
    assert t.generated_layers == (2,)  # the output-language stage leaves the prompt alone
    light = Transform.fit(src, tgt, method="staged", layers=[0, 1], anchor_layers=[2], anchor_strength=0.2)
    np.testing.assert_allclose(light.layers[2].shift, -0.2 * md, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(light.layers[1].shift, t.layers[1].shift)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(LingalignError, match="anchor strength must be a positive number"):
            Transform.fit(src, tgt, method="staged", layers=[0, 1], anchor_layers=[2], anchor_strength=bad)
    with pytest.raises(LingalignError, match="anchor strength is staged's"):
        Transform.fit(src, tgt, method="langvec", layers=[1], anchor_strength=0.5)
    with pytest.raises(LingalignError, match="both alignment and anchor"):
        Transform.fit(src, tgt, method="staged", layers=[1, 2], anchor_layers=[2])
    with pytest.raises(LingalignError, match="needs anchor layers"):
        Transform.fit(src, tgt, method="staged", layers=[1])
    with pytest.raises(LingalignError, match="staged's"):
        Transform.fit(src, tgt, method="langvec", layers=[1], anchor_layers=[2])
    assert default_stages(range(28), 28) == (list(range(7, 18)), list(range(24, 28)))
    assert default_stages(range(18), 18) == (list(range(4, 12)), list(range(15, 18)))


def test_shuffled_pairs_moves_every_sentence_and_undoes_a_map():
    from lingalign.fit import shuffled_pairs

    for n in (2, 3, 10, 501):
        perm = shuffled_pairs(n, seed=n)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))
    X, Y, Xt, Yt = _split()
    honest = Transform.fit(_caps(X[:, None, :], (0,)), _caps(Y[:, None, :], (0,)), method="ridge", layers=[0])
    perm = shuffled_pairs(len(Y))
    control = Transform.fit(_caps(X[:, None, :], (0,)), _caps(Y[perm][:, None, :], (0,)), method="ridge", layers=[0])
    # the control fits the language's mean, not the pairs: its held-out error stays near no map's
    none = float(((Xt.astype(np.float64) - Yt) ** 2).sum(axis=1).mean())
    assert squared_error(Xt, Yt, honest.layers[0]) < 0.2 * squared_error(Xt, Yt, control.layers[0])
    assert squared_error(Xt, Yt, control.layers[0]) < none
    with pytest.raises(LingalignError, match="at least 2"):
        shuffled_pairs(1)


def test_blas_threads_limits_numpy_inside_the_block_only():
    from threadpoolctl import threadpool_info

    from lingalign.blas import blas_threads, default_fit_threads

    def blas_counts():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_counts()
    assert default_fit_threads() >= 1
    with blas_threads(1) as n:
        assert n == 1 and all(c == 1 for c in blas_counts())
    assert blas_counts() == before
