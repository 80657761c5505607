"""Pictures of what a transform does (matplotlib, an optional extra: pip install "lingalign[plot]").

- plot_retrieval: per-layer top-1 bitext retrieval with and without a transform;
- plot_pca: sentences of several languages in the first two principal components of one
  layer's states, before and after their transforms, each sentence joined to its translation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import LingalignError


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LingalignError('pictures need matplotlib: pip install "lingalign[plot]"') from None
    return plt


def plot_retrieval(without: Sequence[Mapping[str, Any]], with_transform: Sequence[Mapping[str, Any]] | None,
                   path: str | os.PathLike[str], *, title: str = "") -> None:
    """Top-1 (source -> English) per layer: rows as eval_retrieval's "layers" gives them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([r["layer"] for r in without], [r["src2tgt"] for r in without], "o-", label="no transform")
    if with_transform is not None:
        ax.plot([r["layer"] for r in with_transform], [r["src2tgt"] for r in with_transform], "s-",
                label="with the transform")
    ax.set_xticks([r["layer"] for r in without])
    ax.set_xlabel("layer")
    ax.set_ylabel("top-1 retrieval of the translation")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pca(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], english: np.ndarray,
             path: str | os.PathLike[str], *, title: str = "", pairs: int = 12) -> None:
    """Sentences [N, d] per language (before and after their transforms) and their English
    translations (row i of each is a translation pair), in the two principal components of all
    the states before; the first `pairs` sentences are joined to their translations."""
    plt = _pyplot()
    stacked = np.concatenate([english, *before.values()]).astype(np.float64)
    mean = stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(stacked - mean, full_matrices=False)
    basis = vt[:2].T

    def project(a: np.ndarray) -> np.ndarray:
        return (np.asarray(a, np.float64) - mean) @ basis

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    e = project(english)
    for ax, states, name in ((axes[0], before, "no transform"), (axes[1], after, "with each language's transform")):
        ax.scatter(e[:, 0], e[:, 1], s=8, c="black", label="English")
        for lang, a in states.items():
            p = project(a)
            dots = ax.scatter(p[:, 0], p[:, 1], s=8, label=lang, alpha=0.7)
            for i in range(min(pairs, len(p))):
                ax.plot([p[i, 0], e[i, 0]], [p[i, 1], e[i, 1]], color=dots.get_facecolor()[0], linewidth=0.4, alpha=0.6)
        ax.set_title(name, fontsize=9)
    axes[0].legend(fontsize=7, markerscale=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
