"""The 0.1 fitting entry point, kept for one release behind lingalign.fit_transform's warning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .captures import Captures
from .model import ModelFingerprint
from .transform import Transform


def fit_transform(
    src: np.ndarray, tgt: np.ndarray, *, model: ModelFingerprint, layers: Sequence[int],
    fit_layers: Sequence[int] | None = None, **kwargs: Any,
) -> Transform:
    """0.1's fit from arrays [N, len(layers), d]: Transform.fit on Captures made from them."""
    return Transform.fit(Captures(src, tuple(layers), model), Captures(tgt, tuple(layers), model),
                         layers=fit_layers, **kwargs)
