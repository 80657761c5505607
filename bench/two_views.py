"""Reading both: the item as it is and the model's own English translation of it, their votes combined.

    python bench/two_views.py --task xstorycloze --split dev --langs sw,id,es,zh [--threads 1]
    python bench/two_views.py --task sib200 --split test          # downstream.py's test samples
    python bench/two_views.py --report                            # docs/two_views.md from the records

bench/self_translate.py scores an item either as it is or through the model's own translation
into English, and the rule that picks one (translate where `lingalign check`'s chrF reaches 40)
gains in some languages and drops by up to 5 points in others. Reading both and adding up the
two readings' evidence (an ensemble of the two, a product of experts) is meant to keep the
gains without the drops: where the translation is poor its reading should be unsure and the
item's own reading decide; where it is good it should correct the weak language's reading.
Each option's score is its summed log-likelihood, normalized over the item's options (a
log-softmax), in each reading; the combined score is (1 - w) * as-is + w * translated. The weight w and the chrF gate below which a language is read
as it is only are chosen once, on the dev rows of XStoryCloze and SIB-200 (the issue's goal
tasks), and applied unchanged to test, to XCOPA and to the hidden languages.

The same items as bench/self_translate.py, the same cached translations (made there if
missing); a record holds each item's option scores in both readings, so every weight is
evaluated from the records without the model.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT / "python"))
from downstream import HIDDEN, MIN_GAP, read_record  # noqa: E402
from self_translate import (TASKS, as_english, downstream_n, english_of, main_of, plain, plain_path,  # noqa: E402
                            rule_input, rule_summary, samples, translations)

RESULTS = ROOT / "bench" / "results" / "two_views"
DOC = ROOT / "docs" / "two_views.md"
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
GATES = (0.0, 30.0, 40.0, 50.0)  # chrF a language's check must reach for its translation to be read at all
RULE_TASKS = ("xstorycloze", "sib200")  # the goal tasks; XCOPA gets the same rule, reported


def run(args: argparse.Namespace, llm: Any) -> None:
    from lingalign.evaluate import score_prompts
    from lingalign.tasks import likelihood_prompt

    command = " ".join(["python bench/two_views.py", *sys.argv[1:]])
    for lang in args.langs:
        items, en_items = samples(args.model, args.task, args.split, lang, args.n)
        path = RESULTS / args.model / f"{args.task}-{args.split}-{lang}-n{len(items)}.json"
        if path.is_file():
            continue
        plain(llm, args.model, args.task, args.split, english_of(args.task, lang), en_items, command)  # the reference
        rows = translations(llm, args.model, args.task, args.split, lang, items)
        t0 = time.time()
        as_is, _, _ = score_prompts(llm, [likelihood_prompt(it, lang) for it in items])
        translated, _, _ = score_prompts(llm, [likelihood_prompt(as_english(it, r), "en")
                                               for it, r in zip(items, rows)])
        rec = {"command": command, "model": args.model, "task": args.task, "split": args.split, "lang": lang,
               "n": len(items), "labels": [it.label for it in items],
               "as_is": [[round(float(x), 4) for x in s] for s in as_is],
               "translated": [[round(float(x), 4) for x in s] for s in translated],
               "score_seconds": round(time.time() - t0, 1),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec) + "\n", encoding="utf-8")
        print(f"  {args.task} {args.split} {lang}: as it is {accuracy(rec, 0.0):.3f}, translated "
              f"{accuracy(rec, 1.0):.3f}, both (w 0.5) {accuracy(rec, 0.5):.3f} ({rec['score_seconds']:.0f} s)",
              flush=True)


def log_softmax(scores: list[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return s - (s.max() + np.log(np.exp(s - s.max()).sum()))


def correct(rec: dict[str, Any], w: float) -> list[bool]:
    """Whether each item is answered right with the readings weighted (1 - w) as it is, w translated;
    a tie goes to the first option, as in lingalign.evaluate."""
    out = []
    for a, t, label in zip(rec["as_is"], rec["translated"], rec["labels"]):
        combined = (1 - w) * log_softmax(a) + w * log_softmax(t)
        out.append(int(np.argmax(combined)) == label)
    return out


def accuracy(rec: dict[str, Any], w: float) -> float:
    c = correct(rec, w)
    return sum(c) / len(c)


@functools.lru_cache(maxsize=None)
def gate_chrf(model: str, task: str, lang: str) -> float | None:
    """The chrF the gate reads: self_translate's dev record where there is one, else `lingalign check`'s
    (read once a language: the report asks for it for every rule it weighs)."""
    rec, _ = rule_input(model, task, lang)
    return None if rec is None else float(rec["chrf"])


def rule_weight(model: str, task: str, lang: str, w: float, gate: float) -> float:
    """The weight a rule (w, gate) gives a language's translated reading: w where its chrF reaches the gate."""
    chrf = gate_chrf(model, task, lang)
    return w if chrf is not None and chrf >= gate else 0.0


def records(model: str, split: str) -> dict[str, list[dict[str, Any]]]:
    """This script's records of a split, by task."""
    out: dict[str, list[dict[str, Any]]] = {}
    for task in TASKS:
        recs = [r for r in (read_record(p) for p in sorted((RESULTS / model).glob(f"{task}-{split}-*-n*.json"))) if r]
        out[task] = recs
    return out


def choose_rule(model: str) -> tuple[float, float, dict[tuple[float, float], float]]:
    """The (w, gate) with the best mean change over the dev languages' dev rows of RULE_TASKS, each
    task weighted equally; a tie goes to the smaller weight, then the higher gate (the more cautious rule)."""
    dev = {task: recs for task, recs in records(model, "dev").items() if task in RULE_TASKS}
    scores: dict[tuple[float, float], float] = {}
    for w in WEIGHTS:
        for gate in GATES:
            per_task = []
            for task, recs in dev.items():
                ch = [accuracy(r, rule_weight(model, task, r["lang"], w, gate)) - accuracy(r, 0.0) for r in recs]
                if ch:
                    per_task.append(sum(ch) / len(ch))
            scores[(w, gate)] = 100 * sum(per_task) / max(1, len(per_task))
    best = max(scores, key=lambda k: (round(scores[k], 6), -k[0], k[1]))
    return best[0], best[1], scores


def task_table(model: str, task: str, split: str, recs: list[dict[str, Any]], w: float, gate: float,
               title: str, summarize: bool) -> list[str]:
    """A task's table of records with the rule (w, gate) applied, and with `summarize` (a table of
    bench/downstream.py's test samples) the issue's goal measure under it (dev languages, hidden
    ones), also at equal weights where the rule chose otherwise, marked as not chosen."""
    from lingalign.metrics import changed_answers, sign_test_p

    if not recs:
        return []
    lines = [title, "",
             "| language | n | as it is | translated | both (w 0.5) | English | with the rule | fixed / broken | p "
             "| gate chrF |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    recs = sorted(recs, key=lambda r: (r["lang"] in HIDDEN[task], r["lang"]))
    for r in recs:
        en = read_record(plain_path(model, task, split, english_of(task, r["lang"]), r["n"]))
        ruled, as_is = correct(r, rule_weight(model, task, r["lang"], w, gate)), correct(r, 0.0)
        fixed, broken = changed_answers(ruled, as_is)
        chrf = gate_chrf(model, task, r["lang"])
        lines.append(f"| {r['lang']} | {r['n']} | {sum(as_is) / len(as_is):.3f} | {accuracy(r, 1.0):.3f} | "
                     f"{accuracy(r, 0.5):.3f} | {en['accuracy'] if en else float('nan'):.3f} | "
                     f"{sum(ruled) / len(ruled):.3f} | {fixed} / {broken} | {sign_test_p(fixed, broken):.3f} | "
                     f"{'' if chrf is None else f'{chrf:.1f}'} |")
    if summarize:
        lines += rule_summary(*goal_measure(model, task, split, recs, w, gate))
        if w != 0.5:
            lines += rule_summary(*goal_measure(model, task, split, recs, 0.5, gate), " at w = 0.5 (not chosen)")
    return lines + [""]


def goal_measure(model: str, task: str, split: str, recs: list[dict[str, Any]], w: float,
                 gate: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The change in points and the gap closed the rule (w, gate) gives each language, by group (dev, hidden)."""
    from lingalign.evaluate import gap_closed

    changes: dict[str, list[float]] = {}
    gaps: dict[str, list[float]] = {}
    for r in recs:
        en = read_record(plain_path(model, task, split, english_of(task, r["lang"]), r["n"]))
        acc, acc0 = accuracy(r, rule_weight(model, task, r["lang"], w, gate)), accuracy(r, 0.0)
        group = "hidden" if r["lang"] in HIDDEN[task] else "dev"
        changes.setdefault(group, []).append(100 * (acc - acc0))
        if en and en["accuracy"] - acc0 >= MIN_GAP:
            gaps.setdefault(group, []).append(gap_closed(acc, acc0, en["accuracy"]))
    return changes, gaps


def report() -> None:
    lines = ["# Reading both: the item as it is and the model's own translation", "",
             "Made by `python bench/two_views.py` (records in `bench/results/two_views/<model>/`); this page by "
             "`python bench/two_views.py --report`.", "",
             *(line for par in __doc__.split("\n\n")[2:4] for line in (" ".join(par.split()), "")),
             "As it is / translated / both: accuracy with w = 0, 1 and 0.5 for every language; English: the "
             "model reading the dataset's English of the same items; with the rule: the chosen (w, gate) applied, "
             "fixed / broken against the item as it is, p the one-sided sign test; gate chrF: the language's "
             "chrF the gate reads (bench/self_translate.py's dev record, else `lingalign check`'s on 24 dev "
             "items). The summary under a test table is the issue's goal measure on bench/downstream.py's "
             "samples, over the dev languages and, on its own line, the hidden ones.", ""]
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        model = model_dir.name
        w, gate, scores = choose_rule(model)
        lines += [f"## {model}", "",
                  "The rule's choice on the dev rows: mean change in points over the dev languages' dev items, "
                  "averaged over XStoryCloze and SIB-200, for each weight w of the translated reading (rows) and "
                  "chrF gate (columns).", "",
                  "| w | " + " | ".join(f"gate {g:g}" for g in GATES) + " |",
                  "|---|" + "---|" * len(GATES)]
        lines += [f"| {wt:g} | " + " | ".join(f"{scores[(wt, g)]:+.1f}" for g in GATES) + " |" for wt in WEIGHTS]
        lines += ["", f"Chosen: w = {w:g}, gate chrF {gate:g}.", ""]
        for split in ("dev", "test"):
            for task, recs in records(model, split).items():
                usual = [r for r in recs if split == "dev" or r["n"] == downstream_n(model, task, r["lang"])]
                lines += task_table(model, task, split, usual, w, gate, f"### {task}, {split}", split == "test")
                lines += task_table(model, task, split, [r for r in recs if r not in usual], w, gate,
                                    f"### {task}, {split}, a larger sample (bench/downstream.py's items and more)",
                                    False)
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {DOC}")


def main() -> None:
    main_of(__doc__, run, report)


if __name__ == "__main__":
    main()
