"""Captures: pooled hidden states of a list of sentences, with what they were read from.

`lingalign.capture(llm, sentences)` returns one; `Transform.fit(src, tgt)` takes two. It carries
the activations (float32 [sentences, layers, width]), the model layers they come from, the site
(the residual stream, or the MLP activation for expert neurons), the pooling, and the model's
fingerprint, so nothing downstream threads the model by hand. Saved as .npz (numpy only).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LingalignError
from .model import ModelFingerprint

POOLS = ("mean", "last")
SITES = ("residual", "ffn")
_FORMAT = 1


@dataclass(frozen=True, eq=False)
class Captures:
    """Pooled activations of N sentences at some layers of one model.

    activations: float32 [N, len(layers), width] (read-only); layers: sorted model layers;
    site: "residual" (width n_embd) or "ffn" (width n_ff); pool: "mean" (over a sentence's
    tokens but BOS) or "last" (its last token); info: provenance (data hashes and the like).
    """

    activations: np.ndarray
    layers: tuple[int, ...]
    model: ModelFingerprint
    site: str = "residual"
    pool: str = "mean"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = np.array(self.activations, dtype=np.float32, copy=True)
        a.setflags(write=False)
        layers = tuple(int(il) for il in self.layers)
        object.__setattr__(self, "activations", a)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "info", dict(self.info))
        if self.site not in SITES:
            raise LingalignError(f"unknown capture site {self.site!r} (one of {', '.join(SITES)})")
        if self.pool not in POOLS:
            raise LingalignError(f"unknown pooling {self.pool!r} (one of {', '.join(POOLS)})")
        if a.ndim != 3 or a.shape[1] != len(layers):
            raise LingalignError(f"activations must be [N, {len(layers)} layers, width]; got {a.shape}")
        if list(layers) != sorted(set(layers)) or any(not 0 <= il < self.model.n_layer for il in layers):
            raise LingalignError(f"layers {list(layers)} must be sorted, distinct, within 0..{self.model.n_layer - 1}")
        if self.site == "residual" and a.shape[2] != self.model.n_embd:
            raise LingalignError(f"residual captures have width {a.shape[2]}, the model has n_embd={self.model.n_embd}")

    def __len__(self) -> int:
        return int(self.activations.shape[0])

    @property
    def width(self) -> int:
        return int(self.activations.shape[2])

    def layer(self, il: int) -> np.ndarray:
        """[N, width] activations at model layer il."""
        if il not in self.layers:
            raise LingalignError(f"layer {il} was not captured (captured: {list(self.layers)})")
        return self.activations[:, self.layers.index(il)]

    def rows(self, index: Any) -> Captures:
        """The captures of a subset of the sentences (a slice or an index array), same layers."""
        return Captures(self.activations[index], self.layers, self.model, self.site, self.pool, self.info)

    def same_kind(self, other: Captures, what: str = "captures") -> None:
        """Raise LingalignError unless `other` was read like this one (model, layers, site, pool)."""
        if other.model != self.model:
            raise LingalignError(f"{what} come from different models ({self.model.name} vs {other.model.name})")
        if (other.layers, other.site, other.pool, other.width) != (self.layers, self.site, self.pool, self.width):
            raise LingalignError(
                f"{what} differ: layers {list(self.layers)} / {list(other.layers)}, site {self.site} / {other.site}, "
                f"pool {self.pool} / {other.pool}, width {self.width} / {other.width}"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as .npz: the activations, the layers, and the rest as JSON."""
        meta = {"format": _FORMAT, "model": self.model.to_dict(), "site": self.site, "pool": self.pool,
                "info": self.info}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, activations=self.activations, layers=np.asarray(self.layers, dtype=np.int32),
                 meta=np.asarray(json.dumps(meta, sort_keys=True)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Captures:
        """Read a .npz written by `save`; LingalignError naming the problem otherwise."""
        p = Path(path)
        if not p.is_file():
            raise LingalignError(f"captures file not found: {p}")
        try:
            with np.load(p, allow_pickle=False) as z:
                activations, layers, meta = z["activations"], z["layers"], json.loads(str(z["meta"]))
            model = ModelFingerprint(**meta["model"])
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            return cls(activations, tuple(int(il) for il in layers), model, meta["site"], meta["pool"], meta["info"])
        except LingalignError as e:
            raise LingalignError(f"{p}: {e}") from None
        except Exception as e:  # zip, key, JSON and type errors of a file that is not ours
            raise LingalignError(f"{p}: not a lingalign captures file ({type(e).__name__}: {e})") from None
