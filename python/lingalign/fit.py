"""Fitting alignment transforms from pooled hidden states, with numpy only.

Inputs are paired arrays [N, n_layers, d] (source sentences, their English translations) as
`capture` returns them; nothing here touches the model. Per layer:

- incline: INCLINE's reference fit, W = argmin ||X W - Y|| by least squares (minimum norm when
  N < d), no bias. Interpolates the training pairs; overfits when N < d.
- ridge: the same map shrunk toward the identity, W = I + D with D minimizing
  ||Xc (I + D) - Yc||^2 + lam * s * ||D||^2 on centred data (s = mean squared singular value of
  Xc, so lam is scale-free), plus a bias. lam is picked on a held-out fifth of the pairs unless
  given. Shrinking toward I rather than 0 means a weak fit leaves hidden states almost unchanged.
- meanshift: additive vector v = mean(Y) - mean(X) (difference of means).
- langvec: the same vector as a language shift, applied with each hidden state's norm kept,
  h' = (h + v) |h| / |h + v| (after ReCoVeR: subtract the source language's mean, add English's).
- lda: one vector along the direction that best tells the two languages apart (Fisher's linear
  discriminant on the pooled states, within-language covariance shrunk toward its mean
  variance), sized so that the source mean's projection on it lands on English's (after ITLC).
- contrastive: an affine map fitted by in-batch InfoNCE over cosine similarities (AFP's
  objective), started at and decayed toward the identity; see `contrastive`.
- staged (after MRRE): langvec toward English at the alignment layers, and at the later
  `anchor_layers` the language vector the other way, toward the source language, so that the
  model reads the prompt as it reads English but answers in the prompt's language. The anchor
  layers act on generated tokens only (the transform's generated_layers), at `anchor_strength`
  times the alignment stage's strength: at the late layers the same strength turns a hidden
  state's direction several times as much as in the middle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .captures import Captures
from .contrastive import WEIGHT_DECAYS, fit_contrastive
from .errors import LingalignError
from .experts import DEFAULT_K, expert_layers
from .layer import LayerMap
from .metrics import check_pair, heldout_split, retrieval_top1
from .progress import Progress

METHODS = ("ridge", "incline", "meanshift", "contrastive", "langvec", "lda", "staged")
VECTOR_METHODS = ("meanshift", "langvec", "lda", "staged")  # fitted from means (and covariances) only
EXPERT_METHODS = ("experts", "random-neurons")  # clamps fitted on FFN captures of one language against others
DEFAULT_METHOD = "contrastive"  # the best mean held-out retrieval at both metrics in docs/results.md
# The default method's strength, chosen on task dev data (XStoryCloze train, Swahili and
# Indonesian, Qwen2.5-Coder-1.5B; bench/methods.py, docs/methods.md): the method and strength
# with the best mean dev accuracy among those that kept the answers in the prompt's language.
DEFAULT_ALPHA = 0.5
FIDELITY_CHECK_PROMPTS = 8  # source sentences fit's fidelity check answers (fit --fidelity-check, tune.faithful_alpha)
RIDGE_LAMBDAS = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)
RANK_CANDIDATES = (8, 16, 32, 64, 128, 256)
RANK_TOLERANCE = 0.005  # a low rank is kept when its held-out error is within 0.5% of the full map's


def fit_incline(X: np.ndarray, Y: np.ndarray, *, bias: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Minimum-norm least squares: W ([d, d]) with X @ W (+ b) ~ Y. Returns (W, b or None)."""
    check_pair(X, Y)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    if not bias:
        W, *_ = np.linalg.lstsq(X64, Y64, rcond=None)
        return W, None
    mx, my = X64.mean(axis=0), Y64.mean(axis=0)
    W, *_ = np.linalg.lstsq(X64 - mx, Y64 - my, rcond=None)
    return W, my - mx @ W


class _RidgeProblem:
    """Centred data and its SVD, computed once and reused for every lambda."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, bias: bool) -> None:
        d = X.shape[1]
        self.mx, self.my = (X.mean(axis=0), Y.mean(axis=0)) if bias else (np.zeros(d), np.zeros(d))
        Xc = X - self.mx
        self.U, self.S, self.Vt = np.linalg.svd(Xc, full_matrices=False)
        self.UtR = self.U.T @ ((Y - self.my) - Xc)  # residual of the identity map, projected
        self.scale = float((self.S**2).sum() / d) or 1.0  # makes lambda scale-free
        self.bias = bias

    def solve(self, lam: float) -> tuple[np.ndarray, np.ndarray | None]:
        shrink = self.S / (self.S**2 + lam * self.scale)
        W = np.eye(self.Vt.shape[1]) + (self.Vt.T * shrink) @ self.UtR  # I + V diag(.) U^T R
        return W, (self.my - self.mx @ W if self.bias else None)


def pick_lambda(
    solve: Callable[[float], tuple[np.ndarray, np.ndarray | None]],
    Xv: np.ndarray,
    Yv: np.ndarray,
    lambdas: Sequence[float] = RIDGE_LAMBDAS,
) -> tuple[float, dict[str, float]]:
    """The lambda whose map `solve(lam) -> (W, b or None)` has the least mean squared error on the
    held-out rows Xv -> Yv (float64), and the held-out MSE of no transform and of that map."""
    errors = []
    for lam in lambdas:
        W, b = solve(lam)
        pred = Xv @ W if b is None else Xv @ W + b
        errors.append(float(((pred - Yv) ** 2).mean()))
    k = int(np.argmin(errors))
    return float(lambdas[k]), {"heldout_mse_identity": float(((Xv - Yv) ** 2).mean()), "heldout_mse_fitted": errors[k]}


def fit_ridge(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    lam: float | None = None,
    bias: bool = True,
    lambdas: Sequence[float] = RIDGE_LAMBDAS,
    val_fraction: float = 0.2,
    seed: int = 0,
    report: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Ridge map toward the identity: returns (W [d, d], b [d] or None, lam).

    When lam is chosen here, `report` (if given) receives the held-out mean squared error of
    the identity (no transform) and of the chosen map: numbers a model card can quote.
    """
    check_pair(X, Y)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    if lam is None:
        n = X64.shape[0]
        tr, va = heldout_split(n, fraction=val_fraction, seed=seed)
        if len(tr) < 2:
            raise LingalignError(f"too few pairs ({n}) to choose lambda; pass lam explicitly")
        lam, scores = pick_lambda(_RidgeProblem(X64[tr], Y64[tr], bias).solve, X64[va], Y64[va], lambdas)
        if report is not None:
            report.update(scores)
    W, b = _RidgeProblem(X64, Y64, bias).solve(lam)
    return W, b, float(lam)


def truncate_map(W: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-`rank` factors of W - I (SVD): W ~ I + U @ Vt, U [d, r], Vt [r, d]."""
    P, S, Qt = np.linalg.svd(W - np.eye(W.shape[0]), full_matrices=False)
    return P[:, :rank] * S[:rank], Qt[:rank]


def choose_rank(
    X: np.ndarray,
    Y: np.ndarray,
    fit: Any,
    *,
    candidates: Sequence[int] = RANK_CANDIDATES,
    tolerance: float = RANK_TOLERANCE,
    val_fraction: float = 0.2,
    seed: int = 1,
) -> int | None:
    """Smallest candidate rank whose truncated map is no worse on held-out pairs than the full
    map (within `tolerance`), or None for full rank. `fit(X, Y)` returns (W, b or None)."""
    d = X.shape[1]
    tr, va = heldout_split(X.shape[0], fraction=val_fraction, seed=seed)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    W, b = fit(X64[tr], Y64[tr])
    mx, my = X64[tr].mean(axis=0), Y64[tr].mean(axis=0)

    def val_error(Wk: np.ndarray, bk: np.ndarray | None) -> float:
        pred = X64[va] @ Wk if bk is None else X64[va] @ Wk + bk
        return float(((pred - Y64[va]) ** 2).mean())

    full = val_error(W, b)
    P, S, Qt = np.linalg.svd(W - np.eye(d), full_matrices=False)
    for r in sorted(candidates):
        if r >= d:
            break
        Wr = np.eye(d) + (P[:, :r] * S[:r]) @ Qt[:r]
        br = None if b is None else my - mx @ Wr
        if val_error(Wr, br) <= full * (1.0 + tolerance):
            return r
    return None


def fit_meanshift(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Difference of means, mean(Y) - mean(X)."""
    check_pair(X, Y)
    return Y.astype(np.float64).mean(axis=0) - X.astype(np.float64).mean(axis=0)


LDA_SHRINKAGES = (0.01, 0.1, 0.3, 0.6, 0.9)


def _within_scatter(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pooled within-language covariance Sw of X and Y, and mean(Y) - mean(X)."""
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    return (Xc.T @ Xc + Yc.T @ Yc) / max(X.shape[0] + Y.shape[0] - 2, 1), my - mx


def _fisher_direction(Sw: np.ndarray, diff: np.ndarray, shrinkage: float) -> np.ndarray:
    """Unit w maximising between- over within-language variance, Sw shrunk toward tr(Sw)/d * I."""
    d = Sw.shape[0]
    w = np.linalg.solve((1.0 - shrinkage) * Sw + shrinkage * (np.trace(Sw) / d) * np.eye(d), diff)
    return w / (np.linalg.norm(w) or 1.0)


def _fisher_ratio(X: np.ndarray, Y: np.ndarray, w: np.ndarray) -> float:
    px, py = X @ w, Y @ w
    within = px.var() + py.var()
    return float((py.mean() - px.mean()) ** 2 / within) if within > 0 else 0.0


def pick_shrinkage(Sw: np.ndarray, diff: np.ndarray, Xv: np.ndarray, Yv: np.ndarray) -> float:
    """The shrinkage (LDA_SHRINKAGES) whose direction from the within-language covariance Sw and
    mean difference `diff` separates the held-out rows Xv, Yv best (Fisher ratio; ties go to the
    smaller shrinkage)."""
    scores = [(_fisher_ratio(Xv, Yv, _fisher_direction(Sw, diff, g)), -g) for g in LDA_SHRINKAGES]
    return -max(scores)[1]


def fit_lda(X: np.ndarray, Y: np.ndarray, *, shrinkage: float | None = None, seed: int = 0) -> tuple[np.ndarray, float]:
    """The LDA language vector: (v [d], shrinkage). v lies along Fisher's discriminant w of the
    source (X) and English (Y) states and moves the source mean's projection on w onto English's,
    v = w (w . (mean(Y) - mean(X))). With fewer sentences than dimensions the within-language
    covariance is singular; its shrinkage is the one whose direction separates a held-out fifth
    best (Fisher ratio) unless given (with under 10 pairs, the middle candidate)."""
    check_pair(X, Y)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    if shrinkage is None:
        tr, va = heldout_split(X64.shape[0], seed=seed)
        if len(tr) < 2 or len(va) < 2:  # too few pairs to choose: the middle candidate
            shrinkage = LDA_SHRINKAGES[len(LDA_SHRINKAGES) // 2]
        else:
            shrinkage = pick_shrinkage(*_within_scatter(X64[tr], Y64[tr]), X64[va], Y64[va])
    if not 0.0 <= shrinkage <= 1.0:
        raise LingalignError(f"shrinkage must be in [0, 1], not {shrinkage!r}")
    Sw, diff = _within_scatter(X64, Y64)
    w = _fisher_direction(Sw, diff, float(shrinkage))
    return w * float(w @ diff), float(shrinkage)


def shuffled_pairs(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of range(n) that moves every index (n >= 2): each source sentence gets
    another sentence's translation, the control that shows what pairing contributes."""
    if n < 2:
        raise LingalignError("shuffling pairs needs at least 2 pairs")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)  # one cycle through a random order: nobody keeps its own
    return perm


def default_stages(layers: Sequence[int], n_layer: int) -> tuple[list[int], list[int]]:
    """staged's default (alignment layers, anchor layers) among `layers` of an n_layer model: the
    middle layers from a quarter to two thirds of the depth, and the last sixth."""
    align = [il for il in layers if n_layer // 4 <= il < (2 * n_layer) // 3]
    anchor = [il for il in layers if il >= n_layer - max(1, n_layer // 6)]
    return align, anchor


def apply_map(X: np.ndarray, layer_map: LayerMap, alpha: float = 1.0) -> np.ndarray:
    """What the hook does to residual-stream rows X [N, d] (float64 here): maps and vectors only."""
    X64 = X.astype(np.float64)
    if layer_map.kind in ("affine", "lowrank"):
        target = X64 @ layer_map.dense().astype(np.float64)
        if layer_map.bias is not None:
            target = target + layer_map.bias
        return X64 + alpha * (target - X64)
    if layer_map.kind == "shift":
        moved = X64 + alpha * layer_map.shift.astype(np.float64)
        norms = np.linalg.norm(moved, axis=1, keepdims=True)
        return moved * np.where(norms > 0, np.linalg.norm(X64, axis=1, keepdims=True) / np.maximum(norms, 1e-300), 1.0)
    if layer_map.vector is None:
        raise LingalignError(f"a {layer_map.kind} transform does not act on the residual stream")
    return X64 + alpha * layer_map.vector.astype(np.float64)


def squared_error(X: np.ndarray, Y: np.ndarray, layer_map: LayerMap, alpha: float = 1.0) -> float:
    """Mean squared distance between transformed X and Y (the error the maps minimize at alpha 1)."""
    moved = apply_map(X, layer_map, alpha)
    return float(((moved - Y.astype(np.float64)) ** 2).sum(axis=1).mean())




def fit_layers(
    src: Captures,
    tgt: Captures,
    *,
    method: str = DEFAULT_METHOD,
    layers: Sequence[int] | None = None,
    lam: float | None = None,
    bias: bool | None = None,
    rank: int | str | None = None,
    k: int = DEFAULT_K,
    seed: int = 0,
    weight_decay: float | None = None,
    anchor_layers: Sequence[int] = (),
    anchor_strength: float = 1.0,
    progress: bool | None = None,
) -> tuple[dict[int, LayerMap], dict[str, Any]]:
    """Fit one LayerMap per layer from paired captures: (layer maps, fit record).

    For the map and vector methods, src and tgt are residual-stream captures of translation
    pairs (row i of each is one pair). `layers` (default: every captured layer) chooses which get
    a transform. `bias` defaults to False for incline (the reference) and True for ridge and
    contrastive. `rank` stores maps as I + U @ Vt: an int, "auto" (the smallest rank no worse on
    held-out pairs, see choose_rank), or None for full matrices.

    `weight_decay` is contrastive's (None: chosen on a held-out fifth of the pairs, per layer).
    staged puts langvec at `layers` and its reverse, toward the source language, at
    `anchor_layers` (which must not overlap them), scaled by `anchor_strength` (> 0). `progress`
    shows a bar over the layers.

    For "experts" (and its control "random-neurons"), src are FFN captures of the language and
    tgt of other languages; the k neurons that tell them apart best are clamped to their mean on
    src (see `experts`). `Transform.fit` wraps this with the provenance.
    """
    src.same_kind(tgt)
    chosen = list(src.layers) if layers is None else sorted({int(il) for il in layers})
    missing = [il for il in chosen if il not in src.layers]
    if missing:
        raise LingalignError(f"layer(s) {missing} were not captured (captured: {list(src.layers)})")
    if not chosen:
        raise LingalignError("no layers to fit")
    if method in EXPERT_METHODS:
        if src.site != "ffn":
            raise LingalignError(f"{method} needs captures of the MLP activation (site 'ffn'), not of the {src.site}")
        k_index = [src.layers.index(il) for il in chosen]
        return expert_layers(src.activations[:, k_index], tgt.activations[:, k_index], chosen, k=k,
                             random_control=method == "random-neurons", seed=seed)
    if method not in METHODS:
        raise LingalignError(f"unknown method {method!r} (one of {', '.join(METHODS + EXPERT_METHODS)})")
    if src.site != "residual":
        raise LingalignError(f"{method} fits the residual stream; these captures are of the {src.site}")
    anchors = sorted({int(il) for il in anchor_layers})
    if anchors and method != "staged":
        raise LingalignError(f"anchor layers are staged's; {method} fits one stage")
    if method == "staged":
        if not anchors:
            raise LingalignError("staged needs anchor layers (the late layers that keep the answer's language)")
        both = sorted(set(anchors) & set(chosen))
        if both:
            raise LingalignError(f"layer(s) {both} are both alignment and anchor layers")
        missing = [il for il in anchors if il not in src.layers]
        if missing:
            raise LingalignError(f"anchor layer(s) {missing} were not captured (captured: {list(src.layers)})")
        if not (np.isfinite(anchor_strength) and anchor_strength > 0):
            raise LingalignError(f"the anchor strength must be a positive number, not {anchor_strength!r}")
    elif anchor_strength != 1.0:
        raise LingalignError(f"the anchor strength is staged's; {method} fits one stage")
    if len(src) != len(tgt):
        raise LingalignError(f"{len(src)} source but {len(tgt)} target sentences: captures must be paired")
    d = src.width
    if rank is not None and rank != "auto" and not (isinstance(rank, int) and 1 <= rank <= d):
        raise LingalignError(f"rank must be 'auto' or 1..{d}, not {rank!r}")
    info: dict[str, Any] = {"pairs": len(src)}
    use_bias = (method in ("ridge", "contrastive")) if bias is None else bool(bias)
    if method not in VECTOR_METHODS:
        info["bias"] = use_bias
    if method == "staged":
        info["stages"] = {"align": chosen, "anchor": anchors, "anchor_strength": float(anchor_strength)}
    out: dict[int, LayerMap] = {}
    lambdas: dict[str, float] = {}
    ranks: dict[str, int | str] = {}
    measured: dict[str, str] = {}
    shrinkages: dict[str, float] = {}
    bar = Progress(len(chosen) + len(anchors), progress, f"fitting {method}", unit="layer", min_total=4)
    for il in chosen + anchors:
        bar.update()
        X, Y = src.layer(il), tgt.layer(il)
        if method == "meanshift":
            out[il] = LayerMap(vector=fit_meanshift(X, Y).astype(np.float32))
            continue
        if method in ("langvec", "staged"):  # ReCoVeR: English minus source-language mean, norms kept
            if il in anchors:  # staged's second stage: back toward the prompt's language
                v = anchor_strength * fit_meanshift(Y, X)
            else:
                v = fit_meanshift(X, Y)
            out[il] = LayerMap(shift=v.astype(np.float32))
            continue
        if method == "lda":
            v, shrinkages[str(il)] = fit_lda(X, Y, seed=seed)
            out[il] = LayerMap(vector=v.astype(np.float32))
            continue
        if method == "incline":
            W, b = fit_incline(X, Y, bias=use_bias)
        elif method == "contrastive":
            creport: dict[str, float] = {}
            # the weight decay is chosen on a held-out fifth; with very few pairs, the middle one
            wd = weight_decay
            if wd is None and X.shape[0] < 10:
                wd = WEIGHT_DECAYS[len(WEIGHT_DECAYS) // 2]
            W, b = fit_contrastive(X, Y, weight_decay=wd, report=creport)
            if not use_bias:
                b = None
            if "heldout_top1_identity" in creport:
                measured[f"layer {il} held-out top-1 (no transform -> map)"] = (
                    f"{creport['heldout_top1_identity']:.3f} -> {creport['heldout_top1_fitted']:.3f}"
                )
        else:
            report: dict[str, float] = {}
            W, b, lambdas[str(il)] = fit_ridge(X, Y, lam=lam, bias=use_bias, report=report)
            if report:
                measured[f"layer {il} held-out MSE (no transform -> map)"] = (
                    f"{report['heldout_mse_identity']:.4g} -> {report['heldout_mse_fitted']:.4g}"
                )
        r: int | None = rank if isinstance(rank, int) else None
        if rank == "auto" and method != "contrastive":  # refitting per candidate rank would cost minutes
            used_lam = lambdas.get(str(il))

            def refit(Xa: np.ndarray, Ya: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
                if method == "incline":
                    return fit_incline(Xa, Ya, bias=use_bias)
                Wa, ba, _ = fit_ridge(Xa, Ya, lam=used_lam, bias=use_bias)
                return Wa, ba

            r = choose_rank(X, Y, refit)
        ranks[str(il)] = r if r is not None else "full"
        b32 = None if b is None else b.astype(np.float32)
        if r is None or r >= d:
            out[il] = LayerMap(matrix=W.astype(np.float32), bias=b32)
            continue
        U, Vt = truncate_map(W, r)
        if b is not None:  # the bias that goes with the truncated map
            Wr = np.eye(W.shape[0]) + U @ Vt
            b32 = (Y.astype(np.float64).mean(axis=0) - X.astype(np.float64).mean(axis=0) @ Wr).astype(np.float32)
        out[il] = LayerMap(lowrank_u=U.astype(np.float32), lowrank_vt=Vt.astype(np.float32), bias=b32)
    bar.close()
    if lambdas:
        info["ridge_lambda"] = lambdas
    if shrinkages:
        info["lda_shrinkage"] = shrinkages
    if method not in VECTOR_METHODS:
        info["rank"] = ranks
    if measured:
        info["measured"] = measured
    return out, info


LAYER_ALPHAS = (0.25, 0.5, 0.75, 1.0)


def stored_alpha(method: str, retrieval_alpha: float) -> float:
    """The strength `fit --layers auto` stores: DEFAULT_ALPHA for the default method (the rule
    chosen on task dev data), otherwise the one that helped held-out retrieval most."""
    return DEFAULT_ALPHA if method == DEFAULT_METHOD else retrieval_alpha


def choose_layer(
    src: Captures,
    tgt: Captures,
    *,
    method: str = DEFAULT_METHOD,
    candidates: Sequence[int] | None = None,
    lam: float | None = None,
    bias: bool | None = None,
    alphas: Sequence[float] = LAYER_ALPHAS,
    progress: bool | None = None,
) -> tuple[int, float, dict[str, Any]]:
    """The layer (and strength) where one map helps retrieval most: (layer, alpha, record).

    Fits every candidate layer on the pairs but the held-out fifth (the last rows) and scores,
    on that fifth, the top-1 retrieval (cosine, source -> target) of the moved source states at
    that layer. That is what the model's own l_out at that layer would give with the map live,
    so no model run is needed. Ties go to the gentler strength, then the later layer.

    contrastive's candidates are fitted with one weight decay (the middle of WEIGHT_DECAYS):
    choosing it per candidate layer tripled the time (bench/fit_speed.py); the fit at the chosen
    layer chooses it as usual. staged is one-stage langvec here (its stages are layer ranges).
    """
    if len(src) < 10:
        raise LingalignError(f"choosing a layer needs at least 10 sentence pairs, got {len(src)}")
    train, held = heldout_split(len(src))
    cands = list(src.layers) if candidates is None else sorted(set(candidates))
    if method == "staged":
        method = "langvec"
    wd = WEIGHT_DECAYS[len(WEIGHT_DECAYS) // 2] if method == "contrastive" else None
    fitted, _ = fit_layers(src.rows(train), tgt.rows(train), method=method, layers=cands, lam=lam, bias=bias,
                           weight_decay=wd, progress=progress)
    scores: list[tuple[float, float, int]] = []
    per_layer: dict[str, float] = {}
    for il in cands:
        Xv, Yv = src.layer(il)[held], tgt.layer(il)[held]
        base = retrieval_top1(Xv, Yv)[0]
        best_here = max((retrieval_top1(apply_map(Xv, fitted[il], a), Yv)[0], -a) for a in alphas)
        scores.append((best_here[0], best_here[1], il))
        per_layer[str(il)] = round(best_here[0] - base, 4)
    score, neg_alpha, layer = max(scores)
    record = {"heldout_pairs": len(held), "heldout_top1": round(score, 4), "gain_by_layer": per_layer}
    return layer, -neg_alpha, record
