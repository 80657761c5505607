"""Answer-language fidelity: does the model answer in the language it was asked in?

Prompts come from a file (an XStoryCloze tsv: the first four sentences of each story, which the
model continues; a SIB-200 tsv: its texts; a plain text file: one prompt a line); each is
answered greedily, with or without a transform, and each answer's language is detected offline
(py3langid). Reported: `fidelity` (share of answers in the prompts' language), `english_share`
and `looping` (share of answers that repeat a loop of words three times in a row).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .data import normalize_lang, read_lines
from .errors import LingalignError
from .route import identify
from .tasks import detect_task, item_text, load_task

MAX_LOOP_WORDS = 12  # the longest repeated phrase looked for
_WORD = re.compile(r"\w+", re.UNICODE)


def read_prompts(path: str | os.PathLike[str], *, limit: int | None = None, seed: int = 0) -> list[str]:
    """Prompts from a task file (XStoryCloze: the story's four sentences; SIB-200: the text; a
    seeded sample stratified by label with `limit`) or a text file (its lines, the first `limit`)."""
    p = Path(path)
    try:
        task = detect_task(p)
    except LingalignError:
        task = None
    if task == "xcopa":
        raise LingalignError(f"{p}: XCOPA items are no prompts to answer; use an XStoryCloze, SIB-200 or text file")
    if task is not None:
        return [item_text(it) for it in load_task(p, limit=limit, seed=seed).items]
    return read_lines(p, limit=limit)


def is_looping(text: str, *, repeats: int = 3) -> bool:
    """Whether some run of 1..MAX_LOOP_WORDS words appears `repeats` times in a row."""
    words = [w.lower() for w in _WORD.findall(text)]
    for n in range(1, MAX_LOOP_WORDS + 1):
        for i in range(0, len(words) - repeats * n + 1):
            if all(words[i : i + n] == words[i + r * n : i + (r + 1) * n] for r in range(1, repeats)):
                return True
    return False


def answer_language(text: str) -> str | None:
    """The detected language of an answer (ISO 639-3), or None for an answer without words."""
    if not _WORD.search(text):
        return None
    return identify(text)[0]


def describe_answer(text: str, lang: str) -> str:
    """What a reader should know about an answer to a prompt in `lang`: its detected language
    when that is another one, and whether it loops ("in Swahili" / "in English, not Swahili; looping")."""
    from .data import LANGUAGE_NAMES

    want = normalize_lang(lang)
    code = answer_language(text)
    name = LANGUAGE_NAMES.get(want, want)
    notes = ["no words" if code is None else f"in {name}" if code == want
             else f"in {LANGUAGE_NAMES.get(code, code)}, not {name}"]
    if is_looping(text):
        notes.append("looping")
    return "; ".join(notes)


def summarize(answers: Sequence[str], lang: str) -> dict[str, Any]:
    """fidelity, english_share, looping and empty shares of answers to prompts in `lang`."""
    want = normalize_lang(lang)
    langs = [answer_language(a) for a in answers]
    n = len(answers)

    def share(k: int) -> float:
        return k / n if n else 0.0

    counts: dict[str, int] = {}
    for code in langs:
        counts[code or "none"] = counts.get(code or "none", 0) + 1
    return {
        "lang": want,
        "n": n,
        "fidelity": share(sum(code == want for code in langs)),
        "english_share": share(sum(code == "eng" for code in langs)),
        "looping": share(sum(is_looping(a) for a in answers)),
        "empty": share(sum(code is None for code in langs)),
        "languages": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    }


def generate_answers(llm: Any, prompts: Sequence[str], *, max_tokens: int = 48, chat: bool = False,
                     progress: bool | None = None) -> list[str]:
    """Greedy answers of the Llama (with whatever its Steering applies) to each prompt; with chat,
    each prompt is the user's message in the model's chat template."""
    out = []
    for prompt in prompts:
        if chat:
            r = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                           temperature=0.0)
            out.append(str(r["choices"][0]["message"]["content"] or ""))
        else:
            r = llm(prompt, max_tokens=max_tokens, temperature=0.0)
            out.append(str(r["choices"][0]["text"]))
    return out


@contextlib.contextmanager
def steered(llm: Any, transform: Any = None, *, alpha: float | None = None, positions: str | None = None,
            force: bool = False) -> Iterator[tuple[Any, list[str]]]:
    """The Llama's Steering with `transform` in use for the block (None: none), and the warnings
    of setting it; what was in use before is put back after."""
    from .hook import attach

    steering = attach(llm)
    before = steering.active
    try:
        if transform is None:
            steering.use(None)
            warnings: list[str] = []
        else:
            warnings = steering.set(transform, alpha=alpha, positions=positions, force=force)
        yield steering, warnings
    finally:
        steering.use(before)


def eval_fidelity(
    llm: Any,
    prompts: Sequence[str],
    lang: str,
    *,
    transform: Any = None,
    alpha: float | None = None,
    positions: str | None = None,
    force: bool = False,
    max_tokens: int = 48,
    chat: bool = False,
    examples: int = 3,
    lexicon: Any = None,
) -> dict[str, Any]:
    """Fidelity of greedy answers without and (given a transform, or a lingalign.lexicon.Lexicon
    that reads each prompt with its gloss before it) with them, on the same prompts:
    {"without": summary, "with": summary, "examples": [...]} (see summarize)."""
    with steered(llm, None):
        plain = generate_answers(llm, prompts, max_tokens=max_tokens, chat=chat)
    result: dict[str, Any] = {"without": summarize(plain, lang), "max_tokens": max_tokens, "chat": chat}
    rows = [{"prompt": p, "without": a} for p, a in zip(prompts[:examples], plain)]
    if transform is not None or lexicon is not None:
        read = [lexicon.annotate(p) for p in prompts] if lexicon is not None else list(prompts)
        with steered(llm, transform, alpha=alpha, positions=positions, force=force) as (steering, warnings):
            result["warnings"] = warnings
            answers = generate_answers(llm, read, max_tokens=max_tokens, chat=chat)
            result["settings"] = steering.active.summary() if steering.active is not None else {}
        result["with"] = summarize(answers, lang)
        for row, a in zip(rows, answers):
            row["with"] = a
    result["examples"] = rows
    return result
