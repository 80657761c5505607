"""The word lexicons a server reads prompts through: the user's own files (`serve
--lexicon-file`, learned with `lingalign lexicon` and measured with `tune --lexicon`) before the
shipped ones, and the languages a request that does not mention the lexicon is read in
(`serve --lexicon auto`). No server packages needed."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..data import normalize_lang, shipped_lexicon_languages, shipped_lexicon_reads
from ..errors import LingalignError
from ..lexicon import Lexicon, shipped_lexicon

MODES = ("auto", "none")


@dataclass(frozen=True)
class Lexicons:
    """Language (ISO 639-3) -> the user's lexicon for it (`own`), the shipped ones behind them,
    and the languages read through their lexicon unless a request says (`default`)."""

    own: Mapping[str, Lexicon] = field(default_factory=dict)
    default: frozenset[str] = frozenset()
    files: Mapping[str, str] = field(default_factory=dict)  # language -> the file it was read from

    def get(self, lang: str) -> Lexicon | None:
        """The lexicon a prompt in `lang` is read through: the user's, else the shipped one."""
        code = normalize_lang(lang)
        own = self.own.get(code)
        return own if own is not None else shipped_lexicon(code)

    def languages(self) -> list[str]:
        """Every language a lexicon is served for."""
        return sorted(set(self.own) | set(shipped_lexicon_languages()))

    def describe(self) -> str:
        """The server's startup line about its lexicons."""
        own = "; own: " + ", ".join(f"{lang} ({self.files[lang]}, {_verdict(lex)})" for lang, lex in sorted(self.own.items()))
        return f"lexicon by default: {', '.join(sorted(self.default)) or 'none'}" + (own if self.own else "")

    @classmethod
    def load(cls, files: Iterable[str | os.PathLike[str]] = (), mode: str = "none",
             model: str | os.PathLike[str] | None = None) -> Lexicons:
        """The user's lexicon files read (a clear error for a bad file, one without its source
        language, two for one language) and the default set: with mode "auto", the languages the
        shipped lexicons' rule reads with `model`, where the user's file for a language decides
        instead: read by default where `tune --lexicon` measured it on (`reads=true`), not where
        it measured it off or never measured it; with "none", no language."""
        if mode not in MODES:
            raise LingalignError(f"--lexicon {mode!r}: not auto or none")
        own: dict[str, Lexicon] = {}
        names: dict[str, str] = {}
        for f in files:
            lex = Lexicon.load(f)
            if not lex.source_lang:
                raise LingalignError(f"{f}: the lexicon does not say its language (no '# source_lang=' line)")
            lang = normalize_lang(lex.source_lang)
            if lang in own:
                raise LingalignError(f"{f}: a second lexicon for {lang} (the first: {names[lang]})")
            own[lang] = lex
            names[lang] = Path(f).name
        default: frozenset[str] = frozenset()
        if mode == "auto":
            shipped = {lang for lang in shipped_lexicon_reads(model) if lang not in own}
            default = frozenset(shipped | {lang for lang, lex in own.items() if lex.reads})
        return cls(own=own, default=default, files=names)


def _verdict(lex: Lexicon) -> str:
    return "not tuned" if lex.reads is None else "tuned on" if lex.reads else "tuned off"
