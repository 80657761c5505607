"""Prepared transforms: a Transform checked against a model and packed for the C++ hook once,
with its strength and position policy, so that a hook switches to it (or to none) in O(1).

`prepare` does everything that can fail (model fingerprint, layers, alpha, positions, neuron
indices against the model's FFN width, packing); selecting a prepared transform on a hook then
cannot fail. That is what makes `Steering.set` all-or-nothing and lets a server switch
transforms per request without re-packing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import sites
from ._abi import _core
from .errors import LingalignError, TransformFileError
from .layer import LayerMap
from .model import ModelFingerprint
from .transform import Transform, check_alpha, check_positions

# LayerMap kind -> the hook's tag
_KINDS = {"affine": _core.KIND_AFFINE, "lowrank": _core.KIND_LOWRANK, "additive": _core.KIND_ADDITIVE,
          "clamp": _core.KIND_CLAMP, "shift": _core.KIND_SHIFT}


@dataclass(frozen=True, eq=False)
class Prepared:
    """A transform ready for a hook: what it is, the settings it runs with, and its packed form."""

    transform: Transform
    alpha: float
    positions: str
    layers: tuple[int, ...]
    warnings: tuple[str, ...]
    core: Any  # _core.Prepared

    def summary(self) -> dict[str, Any]:
        return {"method": self.transform.method, "source_lang": self.transform.source_lang,
                "alpha": self.alpha, "positions": self.positions, "layers": list(self.layers),
                "generated_layers": list(self.transform.generated_layers)}

    def with_settings(self, *, alpha: float | None = None, positions: str | None = None) -> Prepared:
        """The same packed maps at another strength or position policy (None: keep this one's).

        Costs no packing: a hook takes alpha and the policy apart from the maps, so variants
        share them. Raises for an alpha or policy `prepare` would refuse.
        """
        a = self.alpha if alpha is None else check_alpha(alpha)
        p = self.positions if positions is None else check_positions(positions)
        return Prepared(self.transform, a, p, self.layers, self.warnings, self.core)


def _core_layer(lm: LayerMap) -> tuple[int, dict[str, Any]]:
    """(kind tag, tensors) as the binding takes them: numpy arrays are buffers, float16 included."""
    return _KINDS[lm.kind], dict(lm.tensors)


def prepare(
    hook: Any,
    transform: Transform,
    model: ModelFingerprint,
    *,
    alpha: float | None = None,
    positions: str | None = None,
    layers: Sequence[int] | None = None,
    force: bool = False,
) -> Prepared:
    """Check `transform` against `model` and pack it (all of it or `layers`) for hooks shaped like
    `hook`. alpha and positions default to the transform's. Raises, changing nothing, if it
    cannot be applied."""
    warnings = transform.model.check(model, force=force)
    use = transform if layers is None else transform.with_layers(layers)
    a = check_alpha(transform.alpha if alpha is None else alpha)
    p = check_positions(transform.positions if positions is None else positions)
    core = _core.Prepared(hook.n_embd, hook.n_layer, hook.n_ff)
    for il, lm in use.layers.items():
        if lm.kind == "clamp" and hook.n_ff == 0:
            raise LingalignError(
                f"this transform clamps MLP neurons, which lingalign cannot do for this model's architecture "
                f"(supported: {sites.supported_ffn_architectures()})"
            )
        kind, tensors = _core_layer(lm)
        try:
            core.set_layer(il, kind, tensors, il in use.generated_layers)
        except _core.LayerError as e:  # a neuron past this model's FFN width, a shape
            raise TransformFileError(str(e)) from None
    return Prepared(use, a, p, tuple(use.layers), tuple(warnings), core)
