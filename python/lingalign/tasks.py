"""Multiple-choice tasks read from their files, and the prompts each protocol scores.

Three formats, detected from the file (or named with `task=`): XCOPA jsonl (premise, choice1,
choice2, question, label), XStoryCloze tsv (four story sentences, two endings, the right one 1|2)
and SIB-200 tsv (index_id, category, text; 7 topics, the labels.txt beside it). Each becomes a
list of ChoiceItems. `limit` takes a fixed, seeded sample, stratified by label: the SIB-200 files
are sorted by topic, so their first rows are never a sample.

Two protocols turn an item into (context, continuations) to score by log-likelihood:
- likelihood: the options as continuations of the item's own text (the XCOPA premise and
  connector, the story, a SIB-200 text and "Topic:"), summed and length-normalized;
- letter (INCLINE's): an English instruction listing the options as A, B, ..., after which the
  likelihood of each letter is read; with an instruct model's chat template when it has one.
  Every item is scored in two option orders (reversed), so that a model's preference for one
  letter cannot pass for accuracy; the share of "A" answers is reported.
Numpy-free, model-free: `evaluate` runs the model on these prompts.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LingalignError

TASKS = ("xcopa", "xstorycloze", "sib200")
PROTOCOLS = ("likelihood", "letter")
LETTERS = "ABCDEFGHIJ"

# XCOPA connectors (cause, effect) per language, as in lm-evaluation-harness's xcopa task.
XCOPA_CONNECTORS: dict[str, tuple[str, str]] = {
    "en": ("because", "therefore"),
    "et": ("sest", "seetõttu"),
    "ht": ("poukisa", "donk sa"),
    "id": ("karena", "maka"),
    "it": ("perché", "quindi"),
    "qu": ("imataq", "chaymi"),
    "sw": ("kwa sababu", "kwa hiyo"),
    "ta": ("காரணமாக", "எனவே"),
    "th": ("เพราะ", "ดังนั้น"),
    "tr": ("çünkü", "bu yüzden"),
    "vi": ("bởi vì", "vì vậy"),
    "zh": ("因为", "所以"),
}
_XCOPA_FIELDS = ("premise", "choice1", "choice2", "question", "label")
_STORY_COLUMNS = ("InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
                  "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding")
_SIB_COLUMNS = ("index_id", "category", "text")
SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice item: which task, its id, its fields, the options and the right one."""

    task: str
    uid: str
    fields: tuple[tuple[str, str], ...]  # the item's own text fields (premise, question, sentences, text)
    options: tuple[str, ...]
    label: int

    def field(self, name: str) -> str:
        return dict(self.fields)[name]


@dataclass(frozen=True)
class Task:
    """The items of one task file in one language."""

    name: str
    lang: str  # the file's language code (xcopa: it, sw; xstorycloze: sw; sib200: swh_Latn)
    items: tuple[ChoiceItem, ...]
    path: str

    def __len__(self) -> int:
        return len(self.items)


def detect_task(path: str | os.PathLike[str]) -> str:
    """The task a file holds, from its first line."""
    p = Path(path)
    if not p.is_file():
        raise LingalignError(f"data file not found: {p}")
    with open(p, encoding="utf-8") as f:
        first = f.readline()
    if first.lstrip().startswith("{") or p.name.endswith(".jsonl"):
        return "xcopa"
    header = tuple(first.rstrip("\n").split("\t"))
    if header == _STORY_COLUMNS:
        return "xstorycloze"
    if header == _SIB_COLUMNS:
        return "sib200"
    raise LingalignError(f"{p}:1: not a task file lingalign reads (XCOPA jsonl, XStoryCloze tsv or SIB-200 tsv)")


def file_language(path: str | os.PathLike[str], task: str) -> str:
    """The language code in a task file's name or folder: val.sw.jsonl -> sw, sw.train.tsv -> sw,
    sib200/swh_Latn/dev.tsv -> swh_Latn."""
    p = Path(path)
    parts = p.name.split(".")
    if task == "xcopa":
        return parts[-2] if len(parts) >= 3 else "en"
    if task == "xstorycloze":
        return parts[0]
    return p.parent.name


def load_task(path: str | os.PathLike[str], *, task: str | None = None, limit: int | None = None,
              seed: int = 0) -> Task:
    """The items of a task file; `limit` takes a seeded sample stratified by label (in file order).
    Malformed files are refused with a one-line message naming the file and line."""
    name = task or detect_task(path)
    if name not in TASKS:
        raise LingalignError(f"unknown task {name!r} (one of {', '.join(TASKS)})")
    p = Path(path)
    if not p.is_file():
        raise LingalignError(f"data file not found: {p}")
    reader = {"xcopa": _read_xcopa, "xstorycloze": _read_storycloze, "sib200": _read_sib}[name]
    items = reader(p)
    if not items:
        raise LingalignError(f"{p}: no items")
    if limit is not None:
        if limit < 1:
            raise LingalignError(f"--limit must be >= 1, not {limit}")
        items = stratified_sample(items, limit, seed)
    return Task(name, file_language(p, name), tuple(items), str(p))


def stratified_sample(items: Sequence[ChoiceItem], n: int, seed: int = 0) -> list[ChoiceItem]:
    """n items (all if fewer), each label kept in proportion, chosen with a seeded shuffle; the
    chosen items stay in file order."""
    if n >= len(items):
        return list(items)
    by_label: dict[int, list[int]] = {}
    for k, it in enumerate(items):
        by_label.setdefault(it.label, []).append(k)
    rng = random.Random(seed)
    for idx in by_label.values():
        rng.shuffle(idx)
    # largest remainders: each label's share of n, rounded so the shares add up to n
    quotas = {lab: n * len(idx) / len(items) for lab, idx in by_label.items()}
    take = {lab: int(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda lab: (take[lab] - quotas[lab], lab))[: n - sum(take.values())]:
        take[lab] += 1
    chosen = sorted(k for lab, idx in by_label.items() for k in idx[: take[lab]])
    return [items[k] for k in chosen]


def _read_xcopa(p: Path) -> list[ChoiceItem]:
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise LingalignError(f"{p}:{n}: not JSON ({e.msg})") from None
        if not isinstance(item, dict):
            raise LingalignError(f"{p}:{n}: not a JSON object")
        missing = [k for k in _XCOPA_FIELDS if k not in item]
        if missing:
            raise LingalignError(f"{p}:{n}: missing field(s) {', '.join(missing)}")
        if item["question"] not in ("cause", "effect") or item["label"] not in (0, 1):
            raise LingalignError(f"{p}:{n}: question must be cause|effect and label 0|1")
        texts = [item[k] for k in ("premise", "choice1", "choice2")]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise LingalignError(f"{p}:{n}: premise and choices must be non-empty text")
        items.append(xcopa_item(item, str(item.get("idx", n))))
    return items


def xcopa_item(item: dict[str, Any], uid: str) -> ChoiceItem:
    """A ChoiceItem from an XCOPA record (premise, choice1, choice2, question, label)."""
    return ChoiceItem("xcopa", uid, (("premise", str(item["premise"]).strip()), ("question", str(item["question"]))),
                      (str(item["choice1"]).strip(), str(item["choice2"]).strip()), int(item["label"]))


def _tsv_rows(p: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    with open(p, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or tuple(rows[0]) != columns:
        raise LingalignError(f"{p}:1: expected the columns {', '.join(columns)}")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not row or row == [""]:
            continue
        if len(row) != len(columns):
            raise LingalignError(f"{p}:{n}: {len(row)} columns, expected {len(columns)}")
        if not all(v.strip() for v in row):
            raise LingalignError(f"{p}:{n}: an empty field")
        out.append((n, row))
    return out


def _read_storycloze(p: Path) -> list[ChoiceItem]:
    items = []
    for n, row in _tsv_rows(p, _STORY_COLUMNS):
        if row[7] not in ("1", "2"):
            raise LingalignError(f"{p}:{n}: AnswerRightEnding must be 1 or 2, not {row[7]!r}")
        sentences = tuple((f"sentence{k}", row[k].strip()) for k in range(1, 5))
        items.append(ChoiceItem("xstorycloze", row[0], sentences, (row[5].strip(), row[6].strip()), int(row[7]) - 1))
    return items


def sib_labels(p: Path) -> tuple[str, ...]:
    """The topics of a SIB-200 folder (its labels.txt), or the standard seven."""
    path = p.parent / "labels.txt"
    if path.is_file():
        labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if labels:
            return labels
    return SIB_LABELS


def _read_sib(p: Path) -> list[ChoiceItem]:
    labels = sib_labels(p)
    items = []
    for n, row in _tsv_rows(p, _SIB_COLUMNS):
        if row[1] not in labels:
            raise LingalignError(f"{p}:{n}: unknown category {row[1]!r} (one of {', '.join(labels)})")
        items.append(ChoiceItem("sib200", row[0], (("text", row[2].strip()),), labels, labels.index(row[1])))
    return items


# -- prompts --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """What to score for one item: continuations of a context (text, or chat messages for the
    model's template), and which option each continuation stands for."""

    context: str
    continuations: tuple[str, ...]
    option_of: tuple[int, ...]  # continuation k stands for option option_of[k]
    chat: bool = False  # context is a user message, to be wrapped in the chat template


def story(item: ChoiceItem) -> str:
    """An XStoryCloze item's four sentences as one text (empty ones left out)."""
    return " ".join(s for s in (item.field(f"sentence{k}") for k in range(1, 5)) if s)


def item_text(item: ChoiceItem) -> str:
    """What an item gives its reader besides the options: the story (XStoryCloze), the text
    (SIB-200) or the premise (XCOPA)."""
    if item.task == "xstorycloze":
        return story(item)
    return item.field("text" if item.task == "sib200" else "premise")


def with_text(item: ChoiceItem, text: str, options: Sequence[str] | None = None) -> ChoiceItem:
    """The item with what item_text reads replaced by `text` (a story all in sentence1; a premise,
    its question kept; a SIB-200 text), and its options by `options` where given."""
    if item.task == "xstorycloze":
        fields: tuple[tuple[str, str], ...] = (("sentence1", text), ("sentence2", ""), ("sentence3", ""),
                                               ("sentence4", ""))
    elif item.task == "xcopa":
        fields = (("premise", text), ("question", item.field("question")))
    else:
        fields = (("text", text),)
    return ChoiceItem(task=item.task, uid=item.uid, fields=fields,
                      options=item.options if options is None else tuple(options), label=item.label)


def likelihood_prompt(item: ChoiceItem, lang: str) -> Prompt:
    """The options as continuations of the item's own text, as lm-evaluation-harness builds them."""
    if item.task == "xcopa":
        cause, effect = XCOPA_CONNECTORS.get(lang, XCOPA_CONNECTORS["en"])
        premise = item.field("premise")
        if premise[-1:] in ".。!?":
            premise = premise[:-1]
        context = f"{premise} {cause if item.field('question') == 'cause' else effect}"
        conts = tuple(" " + o[:1].lower() + o[1:] for o in item.options)
    elif item.task == "xstorycloze":
        context = story(item)
        conts = tuple(" " + o for o in item.options)
    else:
        context = f"{item.field('text')}\nTopic:"
        conts = tuple(" " + o for o in item.options)
    return Prompt(context, conts, tuple(range(len(conts))))


def letter_prompt(item: ChoiceItem, order: Sequence[int], *, chat: bool) -> Prompt:
    """INCLINE's protocol: an English instruction listing the options (in `order`) as letters; the
    continuations are the letters. With chat=True the context is the user's message (the caller
    applies the chat template); without, it ends in "Answer:" and the letters follow a space."""
    letters = LETTERS[: len(order)]
    listed = "\n".join(f"{letter}: {item.options[k]}" for letter, k in zip(letters, order))
    choices = ", ".join(f'"{c}"' for c in letters[:-1]) + f' or "{letters[-1]}"'
    if item.task == "xcopa":
        body = f"Premise: {item.field('premise')}\nWhat is the {item.field('question')}?\n{listed}"
    elif item.task == "xstorycloze":
        body = f"Story: {story(item)}\nWhich sentence ends the story?\n{listed}"
    else:
        body = f"Text: {item.field('text')}\nWhat is the topic of the text?\n{listed}"
    instruction = f"{body}\nAnswer with {choices} only."
    if chat:
        return Prompt(instruction, tuple(letters), tuple(order), chat=True)
    return Prompt(instruction + "\nAnswer:", tuple(" " + c for c in letters), tuple(order))


def letter_orders(n_options: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two option orders every item is scored in: as given, and reversed."""
    forward = tuple(range(n_options))
    return forward, forward[::-1]
