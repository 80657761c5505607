"""Language expert neurons (Sundar et al. 2025, after the "finding experts" method), with numpy.

A neuron is one unit of a layer's MLP activation (the input of the down projection). Its
expertise for a language is the AUROC of its sentence-pooled activation as a classifier of
"this sentence is in the target language" (positives) against other languages (negatives).
The transform clamps the top-k neurons, over all layers together, to their mean activation on
the target language: do(z_m = mean_m) at every position. The random-neuron control clamps k
neurons drawn at random the same way, to show the effect is not just any clamp.

Inputs are captures [N, n_layers, n_ff] as `capture(..., site="ffn")` returns them; nothing
here touches the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import LingalignError
from .layer import LayerMap

DEFAULT_K = 500
_CHUNK = 2048  # neurons ranked at once: bounds the memory of the sort to N x _CHUNK


def auroc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every column of `scores` [N, M] as a classifier of the boolean labels `positive` [N].

    Exact with ties (a tied positive/negative pair counts 1/2): the Mann-Whitney U statistic
    from average ranks, computed for all columns at once.
    """
    scores = np.asarray(scores)
    positive = np.asarray(positive, dtype=bool)
    if scores.ndim != 2 or positive.shape != (scores.shape[0],):
        raise LingalignError(f"auroc needs scores [N, M] and labels [N]; got {scores.shape} and {positive.shape}")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise LingalignError("auroc needs at least one positive and one negative sentence")
    if not np.isfinite(scores).all():
        raise LingalignError("activations contain NaN or Inf")
    out = np.empty(scores.shape[1])
    for c0 in range(0, scores.shape[1], _CHUNK):
        out[c0 : c0 + _CHUNK] = _auroc_columns(scores[:, c0 : c0 + _CHUNK], positive, n_pos, n_neg)
    return out


def _auroc_columns(scores: np.ndarray, positive: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    n = scores.shape[0]
    order = np.argsort(scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=0)
    starts = np.ones(ranked.shape, dtype=bool)  # first row of each run of equal values
    starts[1:] = ranked[1:] != ranked[:-1]
    ends = np.ones(ranked.shape, dtype=bool)  # last row of each run
    ends[:-1] = starts[1:]
    row = np.arange(n)[:, None]
    first = np.maximum.accumulate(np.where(starts, row, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, row, n - 1)[::-1], axis=0)[::-1]
    avg_rank = (first + last) / 2.0 + 1.0  # 1-based average rank of each sorted row's tie group
    ranks = np.empty_like(avg_rank)
    np.put_along_axis(ranks, order, avg_rank, axis=0)
    rank_sum = ranks[positive].sum(axis=0)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def find_experts(
    positive: np.ndarray, negative: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k neurons whose activation best tells positives from negatives, over all layers.

    positive [P, L, F], negative [Q, L, F] -> (layer slot [k], neuron [k], AUROC [k]), best first
    (ties broken by position, so the result is deterministic).
    """
    _check_captures(positive, negative)
    _, n_layers, n_ff = positive.shape
    if not 1 <= k <= n_layers * n_ff:
        raise LingalignError(f"k must be in 1..{n_layers * n_ff} (the captured neurons), not {k}")
    scores = np.concatenate([positive, negative]).reshape(positive.shape[0] + negative.shape[0], -1)
    labels = np.zeros(scores.shape[0], dtype=bool)
    labels[: positive.shape[0]] = True
    a = auroc(scores, labels)
    best = np.argsort(-a, kind="stable")[:k]
    return best // n_ff, best % n_ff, a[best]


def random_neurons(n_layers: int, n_ff: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k distinct neurons drawn uniformly over all layers: (layer slot [k], neuron [k])."""
    if not 1 <= k <= n_layers * n_ff:
        raise LingalignError(f"k must be in 1..{n_layers * n_ff} (the captured neurons), not {k}")
    flat = np.random.default_rng(seed).choice(n_layers * n_ff, size=k, replace=False)
    return flat // n_ff, flat % n_ff


def _check_captures(positive: np.ndarray, negative: np.ndarray) -> None:
    if positive.ndim != 3 or negative.ndim != 3 or positive.shape[1:] != negative.shape[1:]:
        raise LingalignError(
            f"captures must be [N, layers, n_ff] with the same layers and width; got {positive.shape} and {negative.shape}"
        )
    if positive.shape[0] < 1 or negative.shape[0] < 1:
        raise LingalignError("need at least one positive and one negative sentence")


def expert_layers(
    positive: np.ndarray,
    negative: np.ndarray,
    layers: Sequence[int],
    *,
    k: int = DEFAULT_K,
    random_control: bool = False,
    seed: int = 0,
) -> tuple[dict[int, LayerMap], dict[str, Any]]:
    """Clamps of the language's top-k expert neurons to their mean on `positive`: (layer maps, record).

    `positive` are FFN captures of the language's sentences, `negative` of the others (both
    [N, len(layers), n_ff]); `layers` names the model layer of each captured slice. With
    `random_control`, k random neurons are clamped the same way (the paper's control).
    """
    _check_captures(positive, negative)
    if len(layers) != positive.shape[1]:
        raise LingalignError(f"captures have {positive.shape[1]} layers, but {len(layers)} layer numbers were given")
    if not (np.isfinite(positive).all() and np.isfinite(negative).all()):
        raise LingalignError("activations contain NaN or Inf")
    n_ff = positive.shape[2]
    info: dict[str, Any] = {}
    info.update(k=int(k), n_ff=int(n_ff), positives=int(positive.shape[0]), negatives=int(negative.shape[0]))
    if random_control:
        slot, neuron = random_neurons(len(layers), n_ff, k, seed)
        info["random_seed"] = int(seed)
    else:
        slot, neuron, score = find_experts(positive, negative, k)
        info["auroc_min"] = round(float(score.min()), 4)
        info["auroc_max"] = round(float(score.max()), 4)
    mean = positive.astype(np.float64).mean(axis=0)  # [L, F]
    out: dict[int, LayerMap] = {}
    per_layer: dict[str, int] = {}
    for s in np.unique(slot):
        chosen = np.sort(neuron[slot == s])
        il = int(layers[int(s)])
        out[il] = LayerMap(clamp_index=chosen.astype(np.int32), clamp_value=mean[s, chosen].astype(np.float32))
        per_layer[str(il)] = int(chosen.size)
    info["neurons_per_layer"] = per_layer
    return out, info
