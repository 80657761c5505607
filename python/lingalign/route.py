"""Automatic language routing: detect a prompt's language offline and pick the transform for it.

Detection uses py3langid (a maintained fork of langid.py; offline, its model ships in the wheel).
English, an unknown language or a low-confidence detection selects no transform; a detection
that fails for any reason also selects none: routing fails safe, it never raises.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from .data import normalize_lang
from .transform import Transform

MIN_CONFIDENCE = 0.5
# Detector codes routed to a close language's transform: Malay text reads like Indonesian,
# and Wu Chinese is reported for some Mandarin sentences.
ALIASES = {"ms": "ind", "wuu": "cmn"}

_log = logging.getLogger("lingalign")


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """The detector's best guess for `text`, whatever its confidence: (ISO 639-3 code, probability)."""
    code, prob = _identifier().classify(text)
    return normalize_lang(ALIASES.get(code, code)), float(prob)


def detect_language(text: str) -> tuple[str | None, float]:
    """(ISO 639-3 code or None, confidence). None below MIN_CONFIDENCE or on any failure."""
    try:
        code, prob = identify(text)
    except Exception as e:  # a detector problem must not stop generation
        _log.warning("language detection failed (%s): no transform", type(e).__name__)
        return None, 0.0
    if prob < MIN_CONFIDENCE:
        return None, prob
    return code, prob


class Router:
    """Transforms by source language; `select(text)` picks the one for the text's language."""

    def __init__(self, transforms: Iterable[Transform]) -> None:
        self.transforms: dict[str, Transform] = {}
        for t in transforms:
            if t.source_lang:
                self.transforms[normalize_lang(t.source_lang)] = t

    @classmethod
    def shipped(cls, model: str | os.PathLike[str] | None = None) -> Router:
        """A router over the transforms shipped for `model` (default: the default model)."""
        from .data import shipped_dir

        return cls(Transform.load(p) for p in sorted(shipped_dir(model).glob("*-eng.gguf")))

    def select(self, text: str) -> tuple[str | None, Transform | None]:
        lang, _ = detect_language(text)
        if lang is None or lang == "eng":
            return lang, None
        return lang, self.transforms.get(lang)
