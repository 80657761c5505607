"""Contrastive map fitting: analytic gradient, training, pull toward the identity, retrieval gain
(synthetic data, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from lingalign import LingalignError
from lingalign.contrastive import ANCHOR, contrastive_loss, fit_contrastive

D = 16


def _states(n, d=D, seed=0):
    """Vectors like pooled hidden states: a large shared direction plus per-sentence variation."""
    rng = np.random.default_rng(seed)
    common = 4.0 * rng.standard_normal(d)
    return common + rng.standard_normal((n, d))


def _rotation(d, seed):
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def _top1(A, B):
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    return float(((A @ B.T).argmax(axis=1) == np.arange(len(A))).mean())


def _distance_from_identity(W):
    return float(np.linalg.norm(W - np.eye(len(W))) / np.sqrt(len(W)))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    n, d = 6, 4
    X = 10.0 * (_states(n, d, seed=2))  # large norms, as in a residual stream
    Y = _states(n, d, seed=3)
    W = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    b = 5.0 * rng.standard_normal(d)
    kw = dict(temperature=0.05, weight_decay=0.1, anchor=0.5)
    loss, dW, db = contrastive_loss(X, Y, W, b, **kw)
    # the anchor term must carry weight in the gradient, or a wrong one could hide
    _, dW0, db0 = contrastive_loss(X, Y, W, b, temperature=0.05, weight_decay=0.1, anchor=0.0)
    assert np.abs(dW - dW0).max() > 1e-2 * np.abs(dW).max() and np.abs(db - db0).max() > 1e-2 * np.abs(db).max()
    h = 1e-6
    num_W = np.zeros_like(W)
    for i in range(d):
        for j in range(d):
            E = np.zeros_like(W)
            E[i, j] = h
            num_W[i, j] = (contrastive_loss(X, Y, W + E, b, **kw)[0] - contrastive_loss(X, Y, W - E, b, **kw)[0]) / (2 * h)
    num_b = np.array(
        [(contrastive_loss(X, Y, W, b + h * e, **kw)[0] - contrastive_loss(X, Y, W, b - h * e, **kw)[0]) / (2 * h) for e in np.eye(d)]
    )
    assert np.isfinite(loss) and loss > 0
    # both parts must carry weight, or a wrong one could hide behind the other
    assert np.abs(dW).max() > 1e-3 and np.abs(db).max() > 1e-4
    np.testing.assert_allclose(dW, num_W, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, num_b, rtol=1e-5, atol=1e-7)


def test_weight_decay_term_and_gradient():
    X, Y = _states(8, seed=4), _states(8, seed=5)
    W = np.eye(D) + 0.1 * np.random.default_rng(6).standard_normal((D, D))
    b = np.full(D, 0.5)
    l0, dW0, db0 = contrastive_loss(X, Y, W, b, weight_decay=0.0)
    l1, dW1, db1 = contrastive_loss(X, Y, W, b, weight_decay=0.2)
    scale = float(np.mean(X * X))
    assert l1 - l0 == pytest.approx(0.2 * (((W - np.eye(D)) ** 2).sum() + (b @ b) / scale))
    np.testing.assert_allclose(dW1 - dW0, 0.4 * (W - np.eye(D)), atol=1e-12)
    np.testing.assert_allclose(db1 - db0, 0.4 * b / scale, atol=1e-12)


def test_anchor_term_and_gradient():
    X, Y = _states(8, seed=4), 3.0 * _states(8, seed=5)
    W = np.eye(D) + 0.1 * np.random.default_rng(6).standard_normal((D, D))
    b = np.full(D, 0.5)
    l0, dW0, db0 = contrastive_loss(X, Y, W, b, weight_decay=0.1, anchor=0.0)
    l1, dW1, db1 = contrastive_loss(X, Y, W, b, weight_decay=0.1, anchor=2.0)
    R = X @ W + b - Y
    y2 = float(np.mean((Y * Y).sum(axis=1)))
    assert l1 - l0 == pytest.approx(2.0 * float(np.mean((R * R).sum(axis=1))) / y2)
    np.testing.assert_allclose(dW1 - dW0, 4.0 * X.T @ R / (8 * y2), atol=1e-12)
    np.testing.assert_allclose(db1 - db0, 4.0 * R.sum(axis=0) / (8 * y2), atol=1e-12)
    # the default objective is the anchored one
    assert contrastive_loss(X, Y, W, b)[0] == pytest.approx(contrastive_loss(X, Y, W, b, anchor=ANCHOR)[0])


def test_anchor_keeps_norms_where_infonce_alone_shrinks_them():
    # a large direction every state shares (98% of the norm, as in a residual stream) and
    # translations that differ in the per-sentence part: cosine InfoNCE alone gains by shrinking
    # the shared direction and maps states to a fraction of their norm; the anchor keeps them
    d, n_fit, n_test = 16, 300, 200
    rng = np.random.default_rng(30)
    common = 6.0 * rng.standard_normal(d)
    R = rng.standard_normal((n_fit + n_test, d))
    X = common + R
    Y = common + R @ (0.6 * np.eye(d) + 0.8 * _rotation(d, 31)) + 0.3 * rng.standard_normal(R.shape)
    Xt, Yt = X[n_fit:], Y[n_fit:]

    def ratio(W, b):
        return float(np.mean(np.linalg.norm(Xt @ W + b, axis=1) / np.linalg.norm(Xt, axis=1)))

    W, b = fit_contrastive(X[:n_fit], Y[:n_fit])
    W0, b0 = fit_contrastive(X[:n_fit], Y[:n_fit], anchor=0.0)  # the objective without the anchor
    before = _top1(Xt, Yt)
    assert 0.8 < ratio(W, b) < 1.2
    assert ratio(W0, b0) < 0.5
    assert _top1(Xt @ W + b, Yt) > before + 0.4
    assert _top1(Xt @ W + b, Yt) >= _top1(Xt @ W0 + b0, Yt)
    dist = lambda Z: float(np.mean(np.linalg.norm(Z - Yt, axis=1) / np.linalg.norm(Yt, axis=1)))  # noqa: E731
    assert dist(Xt @ W + b) < 0.5 * dist(Xt @ W0 + b0)


def test_fitting_lowers_the_loss():
    X = _states(200, seed=7)
    Y = X @ _rotation(D, 8) + 0.3 * np.random.default_rng(9).standard_normal((200, D))
    report: dict[str, float] = {}
    W, b = fit_contrastive(X.astype(np.float32), Y.astype(np.float32), weight_decay=1e-3, report=report)
    assert W.dtype == np.float64 and W.shape == (D, D) and b.dtype == np.float64 and b.shape == (D,)
    assert report["weight_decay"] == 1e-3 and report["anchor"] == ANCHOR
    loss = lambda W, b: contrastive_loss(X, Y, W, b, weight_decay=1e-3)[0]  # noqa: E731
    assert loss(W, b) < 0.5 * loss(np.eye(D), np.zeros(D))
    assert "heldout_top1_fitted" not in report  # nothing held out when weight_decay is given


def test_aligned_data_keep_the_map_near_identity():
    X = _states(300, seed=10)
    Y = X + 0.05 * np.random.default_rng(11).standard_normal(X.shape)
    fits = {wd: fit_contrastive(X, Y, weight_decay=wd) for wd in (0.0, 1e-2, 1.0, 10.0)}
    dist = {wd: _distance_from_identity(W) for wd, (W, _) in fits.items()}
    W, b = fits[10.0]
    assert dist[10.0] < 0.05
    assert np.linalg.norm(b) < 0.05 * np.linalg.norm(X, axis=1).mean()
    # without weight decay the fit does move W (InfoNCE gains by shrinking the shared direction,
    # which the anchor only partly resists); the pull toward the identity is what holds it back,
    # the more the stronger it is
    assert dist[0.0] > 10 * dist[10.0]
    assert dist[0.0] > dist[1e-2] > dist[1.0] > dist[10.0]


def test_full_batch_fit_reaches_a_stationary_point_of_the_loss():
    X = _states(100, seed=17)
    Y = 0.7 * X + 0.3 * X @ _rotation(D, 18) + 0.3 * np.random.default_rng(19).standard_normal(X.shape)
    _, dW0, db0 = contrastive_loss(X, Y, np.eye(D), np.zeros(D), weight_decay=0.1)
    W, b = fit_contrastive(X, Y, weight_decay=0.1, batch_size=100, steps=300)
    _, dW, db = contrastive_loss(X, Y, W, b, weight_decay=0.1)
    # the fit minimises exactly the objective contrastive_loss states, bias penalty included
    assert np.linalg.norm(dW) < 1e-3 * np.linalg.norm(dW0)
    assert np.linalg.norm(db) < 1e-3 * np.linalg.norm(db0)


def test_rotation_is_learned_and_improves_held_out_retrieval():
    d, n_fit, n_test = 24, 400, 200
    X = _states(n_fit + n_test, d, seed=12)
    Y = X @ _rotation(d, 13) + 0.2 * np.random.default_rng(14).standard_normal(X.shape)
    report: dict[str, float] = {}
    W, b = fit_contrastive(X[:n_fit], Y[:n_fit], report=report)
    before = _top1(X[n_fit:], Y[n_fit:])
    after = _top1(X[n_fit:] @ W + b, Y[n_fit:])
    assert before < 0.2
    assert after > 0.8
    assert report["weight_decay"] in (1e-4, 1e-3, 1e-2)
    assert report["heldout_top1_identity"] < 0.2 < 0.8 < report["heldout_top1_fitted"]


def test_weight_decay_is_chosen_on_the_last_fifth():
    X = _states(200, seed=20)
    Y = X @ _rotation(D, 21)
    report: dict[str, float] = {}
    fit_contrastive(X, Y, weight_decays=(10.0, 1e-4), report=report)
    assert report["weight_decay"] == 1e-4  # the strong pull cannot learn the rotation
    # on aligned pairs both candidates retrieve every held-out pair: the held-out loss decides
    X = _states(100, seed=22)
    Y = X + 0.05 * np.random.default_rng(23).standard_normal(X.shape)
    candidates = (1e-3, 10.0)
    fit_contrastive(X, Y, weight_decays=candidates, report=report)
    assert report["heldout_top1_identity"] == report["heldout_top1_fitted"] == 1.0
    heldout_loss = []
    for wd in candidates:
        W, b = fit_contrastive(X[:80], Y[:80], weight_decay=wd)
        heldout_loss.append(contrastive_loss(X[80:], Y[80:], W, b)[0])
    assert heldout_loss[0] != heldout_loss[1]
    assert report["weight_decay"] == candidates[int(np.argmin(heldout_loss))]
    # the held-out pairs are the last fifth, in order: here the only ones not rotated
    Y = X @ _rotation(D, 24)
    Y[80:] = X[80:]
    fit_contrastive(X, Y, steps=5, report=report)
    assert report["heldout_top1_identity"] == 1.0


def test_fit_is_deterministic_for_a_seed():
    X = _states(100, seed=15)
    Y = X @ _rotation(D, 16)
    W1, b1 = fit_contrastive(X, Y, steps=20, seed=3)
    W2, b2 = fit_contrastive(X, Y, steps=20, seed=3)
    W3, _ = fit_contrastive(X, Y, steps=20, seed=4)
    np.testing.assert_array_equal(W1, W2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(W1, W3)


def test_bad_input_raises():
    X = _states(20)
    Y = X.copy()
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(LingalignError, match="NaN"):
        fit_contrastive(bad, Y)
    bad[3, 2] = np.inf
    with pytest.raises(LingalignError, match="NaN or Inf"):
        contrastive_loss(X, bad, np.eye(D), np.zeros(D))
    with pytest.raises(LingalignError, match=r"\[N, d\]"):
        fit_contrastive(X, Y[:, :-1])
    with pytest.raises(LingalignError, match=r"\[N, d\]"):
        fit_contrastive(X[0], Y[0])
    with pytest.raises(LingalignError, match="at least 2"):
        fit_contrastive(X[:1], Y[:1], weight_decay=1e-3)
    with pytest.raises(LingalignError, match="W must be"):
        contrastive_loss(X, Y, np.eye(D + 1), np.zeros(D))
    with pytest.raises(LingalignError, match="too few pairs"):
        fit_contrastive(X[:5], Y[:5])  # no held-out fifth worth the name
    with pytest.raises(LingalignError, match="anchor"):
        fit_contrastive(X, Y, anchor=-1.0, weight_decay=1e-3)
    with pytest.raises(LingalignError, match="temperature"):
        fit_contrastive(X, Y, temperature=0.0, weight_decay=1e-3)
    W, b = fit_contrastive(X[:2], Y[:2], weight_decay=1e-3, steps=5)  # two pairs do fit
    assert np.isfinite(W).all() and np.isfinite(b).all()
