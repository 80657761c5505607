"""The `lingalign` field of a request: what it may say, the transform it selects, and what the
response reports about it.

    "lingalign": {"transform": NAME | "auto" | "none" | null, "alpha": A, "positions": P,
                  "lexicon": true | false | LANG}

Every key is optional: a missing `transform` is the server's default (--default), a missing
alpha or positions the transform's own, a missing `lexicon` the server's (--lexicon auto: the
prompt's language where the server reads it by default, serve/lexicons.py). `auto` detects the
language of the prompt (of the last user message for chat) and selects the transform listed
for it, or none (English, a language no transform is for, an uncertain detection). `lexicon`
reads the prompt (the last user message) with its word-by-word English gloss before it
(lingalign.lexicon), from the lexicon the server has for LANG (the user's --lexicon-file, else
the shipped one), or with `true` for the prompt's language (the selected transform's, else the
detected one; none for English, a language with no lexicon or an uncertain detection).
Anything else is a RequestError (HTTP 400). All of this is decided from the request alone,
before the request waits for the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..data import normalize_lang
from ..errors import LingalignError, RequestError
from ..lexicon import Lexicon
from ..prepared import Prepared
from ..route import detect_language
from ..transform import check_alpha, check_positions
from .catalog import RESERVED, Catalog
from .lexicons import Lexicons

FIELD = "lingalign"
AUTO, NONE = RESERVED
KEYS = ("transform", "alpha", "positions", "lexicon")
HEADER_TRANSFORM = "x-lingalign-transform"
HEADER_LANGUAGE = "x-lingalign-language"


@dataclass(frozen=True)
class Ask:
    """What a request asks for: a listed name, AUTO or None (no transform), and the settings."""

    transform: str | None
    alpha: float | None = None
    positions: str | None = None
    # True: the prompt's language; a code: that language's lexicon; None: the server's default
    lexicon: bool | str | None = None


def _kind(value: Any) -> str:
    """A JSON value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def parse(body: Any, default: str | None) -> Ask:
    """The request's ask from its JSON body (`default`: the server's --default, a name, AUTO or
    None). Raises RequestError with a one-line message for a malformed field."""
    field = body.get(FIELD) if isinstance(body, Mapping) else None
    if field is None:
        return Ask(default)
    if not isinstance(field, Mapping):
        raise RequestError(f'"{FIELD}" must be an object such as {{"transform": "auto"}}, not {_kind(field)}')
    unknown = sorted(str(k) for k in field if k not in KEYS)
    if unknown:
        raise RequestError(f'unknown key {unknown[0]!r} in "{FIELD}" (it takes {", ".join(KEYS)})')
    transform = field["transform"] if "transform" in field else default
    if transform is not None and not isinstance(transform, str):
        raise RequestError(f'"{FIELD}.transform" must be a transform name, "auto" or null, not {_kind(transform)}')
    if transform == NONE:
        transform = None
    alpha = field.get("alpha")
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise RequestError(f'"{FIELD}.alpha" must be a number, not {_kind(alpha)}')
        try:
            alpha = check_alpha(alpha)
        except LingalignError as e:
            raise RequestError(f'"{FIELD}.alpha": {e}') from None
    positions = field.get("positions")
    if positions is not None:
        if not isinstance(positions, str):
            raise RequestError(f'"{FIELD}.positions" must be a string, not {_kind(positions)}')
        try:
            check_positions(positions)
        except LingalignError as e:
            raise RequestError(f'"{FIELD}.positions": {e}') from None
    lexicon = field.get("lexicon")
    if "lexicon" in field and lexicon is None:
        lexicon = False
    if lexicon is not None and not isinstance(lexicon, (bool, str)):
        raise RequestError(f'"{FIELD}.lexicon" must be true, false or a language code, not {_kind(lexicon)}')
    return Ask(transform, alpha, positions, lexicon)


def with_lexicon(kwargs: dict[str, Any], lexicon: Lexicon | None, chat: bool) -> dict[str, Any]:
    """The Llama call's arguments with the prompt, or the last user message's text, annotated."""
    if lexicon is None:
        return kwargs
    if not chat:
        prompt = kwargs.get("prompt")
        return {**kwargs, "prompt": lexicon.annotate(prompt)} if isinstance(prompt, str) else kwargs
    messages = list(kwargs.get("messages") or [])
    for k in range(len(messages) - 1, -1, -1):
        m = messages[k]
        if isinstance(m, Mapping) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                messages[k] = {**m, "content": lexicon.annotate(content)}
            elif isinstance(content, list):
                messages[k] = {**m, "content": [
                    {**part, "text": lexicon.annotate(part["text"])}
                    if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
                    else part for part in content]}
            break
    return {**kwargs, "messages": messages}


def completion_text(body: Mapping[str, Any]) -> str | None:
    """The text `auto` reads in a completion request: its prompt."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else None


def chat_text(body: Mapping[str, Any]) -> str | None:
    """The text `auto` reads in a chat request: the last user message (its text parts)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for m in reversed(messages):
        if isinstance(m, Mapping) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(p["text"] for p in content
                                 if isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str))
            return None
    return None


@dataclass(frozen=True)
class Selection:
    """The transform a request runs with (None: none) and how it was chosen."""

    requested: str | None  # what the request (or the server's default) asked: a name, AUTO or None
    name: str | None
    prepared: Prepared | None
    language: str | None = None  # detected, for AUTO
    confidence: float | None = None
    lexicon: Lexicon | None = None

    def report(self) -> dict[str, Any]:
        """The response's `lingalign` object."""
        p = self.prepared
        return {"transform": self.name, "requested": self.requested, "language": self.language,
                "confidence": None if self.confidence is None else round(self.confidence, 4),
                "alpha": p.alpha if p is not None else None, "positions": p.positions if p is not None else None,
                "lexicon": normalize_lang(self.lexicon.source_lang) if self.lexicon is not None else None}

    def headers(self) -> dict[str, str]:
        out = {HEADER_TRANSFORM: self.name or NONE}
        if self.requested == AUTO:
            out[HEADER_LANGUAGE] = self.language or "unknown"
        return out


def select(ask: Ask, catalog: Catalog, text: str | None, lexicons: Lexicons | None = None) -> Selection:
    """The transform and lexicon `ask` selects from `catalog` and `lexicons` (default: the
    shipped ones, none read by default) for a prompt whose text is `text` (read for AUTO and
    `lexicon: true`). A request that does not mention the lexicon gets the prompt's language's
    lexicon when that language is in `lexicons.default` (the server's --lexicon auto). Raises
    RequestError for a name the catalog does not list or a language with no lexicon."""
    lexicons = lexicons if lexicons is not None else Lexicons()
    lang: str | None = None
    confidence: float | None = None
    name: str | None = None
    by_default = ask.lexicon is None and bool(lexicons.default)
    if ask.transform == AUTO or ask.lexicon is True or by_default:
        lang, confidence = detect_language(text) if text and text.strip() else (None, 0.0)
    if ask.transform == AUTO:
        entry = catalog.for_language(lang) if lang != "eng" else None
        name = entry.name if entry is not None else None
    elif ask.transform is not None:
        entry = catalog.entry(ask.transform)
        name = entry.name
        if (ask.lexicon is True or by_default) and entry.file.transform.source_lang:
            lang = normalize_lang(entry.file.transform.source_lang)
    prepared = catalog.prepared(name, ask.alpha, ask.positions) if name is not None else None
    lexicon = None
    if isinstance(ask.lexicon, str):
        lexicon = lexicons.get(ask.lexicon)
        if lexicon is None:
            raise RequestError(f'"{FIELD}.lexicon": no lexicon is served for {ask.lexicon!r} (served: '
                               f'{", ".join(lexicons.languages())})')
    elif ask.lexicon is True and lang is not None and lang != "eng":
        lexicon = lexicons.get(lang)
    elif by_default and lang in lexicons.default:
        lexicon = lexicons.get(lang)
    if ask.transform != AUTO:
        lang, confidence = None, None  # the response reports a detection only for auto
    return Selection(ask.transform, name, prepared, lang, confidence, lexicon)
