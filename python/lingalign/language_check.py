"""Does a model read a language? It translates sentences into English, and chrF scores its
translations against reference English.

What decides whether lingalign can help a language is whether the model understands it: where a
model's own translation shares little more with the real English than the untranslated text
does, no method here has raised its accuracy, because no shift of hidden states supplies meaning
the model never had (docs/language_check.md, docs/self_translate.md). The check needs the model
and a few dozen parallel sentences; no fitting, no transform.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .data import LANGUAGE_NAMES, normalize_lang, shipped_entry
from .errors import LingalignError

# Chosen once on dev data (bench/self_translate.py): the dev languages whose own translation
# reached it gained from reading that translation, those below did not; any value from 26 to 42
# separated them the same way.
READS_CHRF = 40.0
DEFAULT_SENTENCES = 24
INSTRUCTION = "Translate this {name} text into English. Reply with the translation only.\n\n{text}"
INSTRUCTION_UNNAMED = "Translate this text into English. Reply with the translation only.\n\n{text}"
# a base model (no chat template) continues a labelled pair; its first non-empty line is the answer
COMPLETION = "{name}: {text}\nEnglish:"


def chrf(hypothesis: str, reference: str, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF in points (Popovic 2015; sacrebleu's defaults: character n-grams of 1 to 6
    with whitespace removed, precision and recall averaged over the orders, recall weighted by beta)."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    precisions, recalls = [], []
    for n in range(1, order + 1):
        h = Counter(hyp[i:i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i:i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            continue
        match = sum((h & r).values())
        precisions.append(match / sum(h.values()))
        recalls.append(match / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 0.0 if p + r == 0 else 100 * (1 + beta**2) * p * r / (beta**2 * p + r)


def language_name(lang: str | None) -> str | None:
    """English name of a language code ('sw', 'swh_Latn' -> 'Swahili'), None when unknown."""
    return LANGUAGE_NAMES.get(normalize_lang(lang)) if lang else None


def translate(llm: Any, text: str, name: str | None, *, chat: bool | None = None) -> str:
    """The model's greedy translation of text into English (at most 1.5 times the source's tokens
    plus 16, so a looping answer ends); whitespace collapsed. chat (default: whether the model has
    a chat template): ask in a user message; else a base model continues "Swahili: ...\nEnglish:"
    and its first non-empty line is taken."""
    from ._llama import has_chat_template

    budget = int(1.5 * len(llm.tokenize(text.encode("utf-8"), add_bos=False))) + 16
    if has_chat_template(llm) if chat is None else chat:
        prompt = INSTRUCTION.format(name=name, text=text) if name else INSTRUCTION_UNNAMED.format(text=text)
        r = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], temperature=0.0,
                                       max_tokens=budget)
        out = r["choices"][0]["message"]["content"]
    else:
        r = llm.create_completion(COMPLETION.format(name=name or "Text", text=" ".join(text.split())),
                                  temperature=0.0, max_tokens=budget)
        out = next((line for line in r["choices"][0]["text"].splitlines() if line.strip()), "")
    return " ".join((out or "").split())


def verdict(reads: bool, who: str, threshold: float = READS_CHRF) -> str:
    """What a check's outcome means for the language `who`, for people (the check's last line, and
    what `run --lang` says of a shipped transform's language)."""
    if reads:
        return (f"the model reads {who}: its translations reach chrF {threshold:.0f} (what that means for "
                "answers, per model and task: docs/language_check.md)")
    return (f"the model barely reads {who}: its translations stay below chrF {threshold:.0f}. Where a model "
            "barely reads a language, its gap to English is largest; a transform or its own translation has not "
            "narrowed it, a word lexicon (--lexicon) has on SIB-200 (docs/language_check.md, docs/gloss.md)")


@dataclass(frozen=True)
class LanguageCheck:
    """How well a model translated n sentences of a language into English."""

    lang: str
    name: str | None
    translations: tuple[str, ...]
    scores: tuple[float, ...]  # each translation's sentence chrF against its reference English
    untranslated_scores: tuple[float, ...]  # the same for each source sentence as it is: what names and numbers share
    seconds: float

    @property
    def n(self) -> int:
        return len(self.translations)

    @property
    def chrf(self) -> float:
        """Mean sentence chrF of the translations."""
        return sum(self.scores) / len(self.scores)

    @property
    def chrf_untranslated(self) -> float:
        """Mean sentence chrF of the untranslated sentences: the floor the translations start from."""
        return sum(self.untranslated_scores) / len(self.untranslated_scores)

    @property
    def reads(self) -> bool:
        """Whether the model reads the language well enough for reading it to be helped (READS_CHRF)."""
        return self.chrf >= READS_CHRF

    def verdict(self) -> str:
        """One line for people: what the numbers mean for this language."""
        return verdict(self.reads, self.name or self.lang)

    def as_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "name": self.name, "n": self.n, "chrf": round(self.chrf, 2),
                "chrf_untranslated": round(self.chrf_untranslated, 2), "reads": self.reads,
                "threshold": READS_CHRF, "seconds": round(self.seconds, 1)}


def check_language(llm: Any, src: Sequence[str], tgt: Sequence[str], lang: str | None = None, *,
                   on_sentence: Callable[[int], None] | None = None) -> LanguageCheck:
    """Let the model translate each src sentence into English and score it against tgt, its
    reference English (chrF, averaged over sentences), next to the untranslated src's score.
    `lang` names the language in the instruction when its name is known (language_name)."""
    if len(src) != len(tgt):
        raise LingalignError(f"{len(src)} source sentences but {len(tgt)} English ones: they must be pairs")
    if not src:
        raise LingalignError("no sentence pairs to check")
    name = language_name(lang)
    t0 = time.perf_counter()
    out = []
    for k, text in enumerate(src):
        try:
            out.append(translate(llm, text, name))
        except ValueError as e:  # llama-cpp-python: the prompt and its budget exceed the context
            raise LingalignError(f"source sentence {k + 1}: {e}") from None
        if on_sentence is not None:
            on_sentence(k)
    seconds = time.perf_counter() - t0
    return LanguageCheck(lang=normalize_lang(lang) if lang else "", name=name, translations=tuple(out),
                         scores=tuple(chrf(h, r) for h, r in zip(out, tgt)),
                         untranslated_scores=tuple(chrf(s, r) for s, r in zip(src, tgt)), seconds=seconds)


def shipped_language_check(lang: str, model: str | os.PathLike[str] | None = None) -> str | None:
    """What `lingalign check` measured of the model in the shipped <lang>-eng transform's
    language, as the manifest records it (chrF of the model's own translations into English and
    the verdict), one line; None when none is recorded."""
    c = shipped_entry(lang, model).get("check")
    try:
        score, floor, threshold, reads, data = (float(c["chrf"]), float(c["chrf_untranslated"]), float(c["threshold"]),
                                                bool(c["reads"]), str(c["data"]))
    except (KeyError, ValueError, TypeError):
        return None
    return (f"lingalign check on {data}: the model's translations into English score chrF {score:.1f} "
            f"(untranslated {floor:.1f}); {verdict(reads, language_name(lang) or normalize_lang(lang), threshold)}")
