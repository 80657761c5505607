"""Does the model know what the weak language's words mean? Its own translation into English, measured.

    python bench/self_translate.py --model qwen2.5-coder-1.5b --task xstorycloze --langs sw,id [--threads 1]
    python bench/self_translate.py --task sib200     # SIB-200's six dev languages
    python bench/self_translate.py --task sib200 --split test   # downstream.py's test samples
    python bench/self_translate.py --task xcopa      # XCOPA's four dev languages
    python bench/self_translate.py --task xcopa --split test --n 200 --langs zh   # a larger test sample
    python bench/self_translate.py --report          # docs/self_translate.md from the records

The oracle (bench/oracle.py) showed that moving a story's mean hidden state onto its English
translation's does not help the model choose the right ending. The simplest explanation is that
the model does not know what the story says. This measures that directly: the model translates
each item into English (its chat template, greedy, the instruction "Translate this <language>
text into English. Reply with the translation only.") and is then scored on its own
translation, in English, with the likelihood protocol: the translate-test baseline of Etxaniz et
al. (2023, "Do multilingual language models think better in English?"), which needs no fitting,
no parallel data and no hook. Items: the same 200 XStoryCloze dev stories a language that
bench/methods.py and bench/oracle.py score (the story and each ending translated), and SIB-200's
99 dev sentences a language (the text translated; the options are English topic names), and
XCOPA's 100 val items a language (the premise and both alternatives translated).

chrF (character 6-grams, beta 2, in points, equal to sacrebleu's) compares each translation with
the dataset's English; the untranslated text scores what names and numbers alone share with it.
If the model translates well, the meaning is there and reading its own English may help; if its
"translations" share little more with the real text than the untranslated text does, no shift
of its hidden states can supply what it never understood. Translations are cached outside the
repository (they are derived from evaluation data); records in
bench/results/self_translate/<model>/ hold the scores only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT / "python"))
from downstream import (CACHE, HIDDEN, MIN_GAP, RESULTS as DOWNSTREAM, dev_file, english_file,  # noqa: E402
                        read_record, test_file)
from language_check import RESULTS as LANGUAGE_CHECK  # noqa: E402
from methods import RESULTS as METHODS, STORY_DEV_N, english_right  # noqa: E402

from lingalign.language_check import DEFAULT_SENTENCES, READS_CHRF, chrf, language_name, translate  # noqa: E402
from lingalign.tasks import item_text  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "self_translate"
DOC = ROOT / "docs" / "self_translate.md"
TASKS = ("xstorycloze", "sib200", "xcopa")
DEV_LANGS = {"xstorycloze": "sw,id", "sib200": "swh_Latn,ind_Latn,zho_Hans,tur_Latn,yor_Latn,hau_Latn",
             "xcopa": "sw,id,zh,tr"}
RULE_CHRF = READS_CHRF  # chosen on the dev rows this script records (lingalign.language_check)


def english_of(task: str, lang: str) -> str:
    """The name the records give the English counterpart of a language's items: the task's English,
    or for XCOPA, whose English is each language's own translation of its items, "en-<lang>"."""
    return {"xstorycloze": "en", "sib200": "eng_Latn"}.get(task, f"en-{lang}")


def translations(llm: Any, model: str, task: str, split: str, lang: str, items: Any) -> list[dict[str, Any]]:
    """{'text', 'options'} in English for each item (SIB-200's options, English topic names, are
    kept), made once and cached (one line an item, so an interrupted run resumes)."""
    path = CACHE / model / f"{task}-{lang}-{split}{len(items)}-self-translated.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    name = language_name(lang)
    t0 = time.time()
    with path.open("a", encoding="utf-8") as out:
        for k, item in enumerate(items[len(done):], start=len(done)):
            options = (list(item.options) if task == "sib200"  # English topic names
                       else [translate(llm, o, name) for o in item.options])
            row = {"uid": item.uid, "text": translate(llm, item_text(item), name), "options": options}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            done.append(row)
            if (k + 1) % 20 == 0:
                print(f"  {task} {lang}: {k + 1} / {len(items)} translated ({time.time() - t0:.0f} s)", flush=True)
    if [r["uid"] for r in done] != [it.uid for it in items]:
        raise SystemExit(f"{path} holds other items than the {task} {lang} {split} sample: delete it")
    return done


def as_english(item: Any, row: dict[str, Any]) -> Any:
    """The item with its text (a story: all in sentence1; a premise) and options replaced by the translation."""
    from lingalign.tasks import with_text

    return with_text(item, row["text"], row["options"])


def samples(model: str, task: str, split: str, lang: str, n: int | None = None) -> tuple[Any, Any]:
    """The items scored and their English counterparts. dev: bench/methods.py's 200 XStoryCloze
    stories, or SIB-200's dev split, or XCOPA's val split; test: bench/downstream.py's test sample
    of the language (its size read from downstream's no-transform record, the same seed), or a
    seeded sample of n items, which holds downstream's (lingalign.tasks.stratified_sample)."""
    from lingalign.tasks import load_task

    if split == "dev":
        limit = STORY_DEV_N if task == "xstorycloze" else None
        items = load_task(dev_file(task, lang), limit=limit, seed=0).items
        en_items = load_task(english_file(task, lang, "dev"), limit=limit, seed=0).items
    else:
        n = n or downstream_n(model, task, lang)
        items = load_task(test_file(task, lang), limit=n, seed=0).items
        en_items = load_task(english_file(task, lang), limit=n, seed=0).items
    if [it.uid for it in items] != [it.uid for it in en_items]:
        raise SystemExit(f"the {task} {lang} and English {split} samples hold different items")
    return items, en_items


def plain_path(model: str, task: str, split: str, lang: str, n: int) -> Path:
    """Where the record of the model's answers to the n items as they are (no transform) is:
    bench/methods.py's for its XStoryCloze dev stories where it has one, else one this script makes."""
    methods = METHODS / model / f"dev-{lang}-none-0-n{n}.json"
    if task == "xstorycloze" and split == "dev" and methods.is_file():
        return methods
    return RESULTS / model / f"{task}-{split}-{lang}-none-n{n}.json"


def plain(llm: Any, model: str, task: str, split: str, lang: str, items: Any, command: str) -> dict[str, Any]:
    """The record of the model's answers to the items as they are, made here once where
    bench/methods.py has none."""
    from lingalign.evaluate import eval_choice

    path = plain_path(model, task, split, lang, len(items))
    if not path.is_file():
        correct = eval_choice(llm, items, lang="en" if lang.startswith("en-") else lang)["correct"]
        rec = {"command": command, "model": model, "task": task, "split": split, "lang": lang, "n": len(correct),
               "accuracy": sum(correct) / len(correct), "correct": correct}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def run(args: argparse.Namespace, llm: Any) -> None:
    from lingalign.evaluate import eval_choice
    from lingalign.fidelity import is_looping
    from lingalign.metrics import changed_answers, sign_test_p

    command = " ".join(["python bench/self_translate.py", *sys.argv[1:]])
    task, split = args.task, args.split
    for lang in args.langs:
        items, en_items = samples(args.model, task, split, lang, args.n)
        path = RESULTS / args.model / f"{task}-{split}-{lang}-n{len(items)}.json"
        if path.is_file():
            continue
        plain(llm, args.model, task, split, english_of(task, lang), en_items, command)
        none = plain(llm, args.model, task, split, lang, items, command)
        rows = translations(llm, args.model, task, split, lang, items)
        scores = [chrf(r["text"], item_text(e)) for r, e in zip(rows, en_items)]
        copied = [chrf(item_text(it), item_text(e)) for it, e in zip(items, en_items)]
        t0 = time.time()
        correct = eval_choice(llm, [as_english(it, r) for it, r in zip(items, rows)], lang="en")["correct"]
        fixed, broken = changed_answers(correct, none["correct"])
        rec = {"command": command, "model": args.model, "task": task, "split": split, "lang": lang, "n": len(correct),
               "accuracy": sum(correct) / len(correct), "accuracy_without": none["accuracy"],
               "fixed": fixed, "broken": broken, "sign_p": sign_test_p(fixed, broken), "correct": correct,
               "chrf": sum(scores) / len(scores), "chrf_items": [round(s, 1) for s in scores],
               "chrf_untranslated": sum(copied) / len(copied),
               "looping": sum(is_looping(r["text"]) for r in rows) / len(rows),
               "score_seconds": round(time.time() - t0, 1),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        if task == "xstorycloze":
            ending_scores = [chrf(h, ref) for r, e in zip(rows, en_items) for h, ref in zip(r["options"], e.options)]
            rec["chrf_endings"] = sum(ending_scores) / len(ending_scores)
        path.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(f"  {task} {split} {lang}: self-translated accuracy {rec['accuracy']:.3f} (without {none['accuracy']:.3f}), "
              f"fixed {fixed} / broken {broken}, p {rec['sign_p']:.3f}; chrF {rec['chrf']:.1f} "
              f"(untranslated {rec['chrf_untranslated']:.1f})", flush=True)


def downstream_n(model: str, task: str, lang: str) -> int:
    """The size of bench/downstream.py's test sample of a language (its no-transform record's)."""
    return int(json.loads((DOWNSTREAM / model / f"{task}-{lang}-likelihood-none.json").read_text(encoding="utf-8"))["n"])


def rule_input(model: str, task: str, lang: str) -> tuple[dict[str, Any] | None, str]:
    """The record whose chrF the rule reads for a language, and what it is: this script's dev
    record where there is one (the dev languages), else bench/language_check.py's, i.e. what
    `lingalign check` says on the first 24 dev items, which is all a user has for a new language."""
    for path in sorted((RESULTS / model).glob(f"{task}-dev-{lang}-n*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        if "chrf" in rec:
            return rec, "dev"
    check = read_record(LANGUAGE_CHECK / model / f"{task}-{lang}-n{DEFAULT_SENTENCES}.json")
    return (check, "check") if check else (None, "")


def rule_translates(dev: dict[str, Any] | None) -> bool | None:
    """The rule, chosen once on dev data: read a language through the model's own translation when
    that translation of the language's dev items reaches RULE_CHRF (None: no dev record)."""
    return None if dev is None else dev["chrf"] >= RULE_CHRF


def task_table(model: str, task: str, split: str, recs: list[dict[str, Any]], title: str) -> list[str]:
    """A task's table of records, and under a test table the rule's summary (dev, hidden)."""
    from lingalign.evaluate import gap_closed

    if not recs:
        return []
    lines = [title, "",
             "| language | n | no transform | own translation | English | fixed / broken | p "
             "| English right | chrF | chrF untranslated | chrF endings | looping |"
             + (" with the rule |" if split == "test" else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if split == "test" else "")]
    changes: dict[str, list[float]] = {}
    gaps: dict[str, list[float]] = {}
    for r in recs:
        none = read_record(plain_path(model, task, split, r["lang"], r["n"]))
        en = read_record(plain_path(model, task, split, english_of(task, r["lang"]), r["n"]))
        if not (none and en):
            continue
        endings = f"{r['chrf_endings']:.1f}" if "chrf_endings" in r else ""
        row = (f"| {r['lang']} | {r['n']} | {r['accuracy_without']:.3f} | {r['accuracy']:.3f} | "
               f"{en['accuracy']:.3f} | {r['fixed']} / {r['broken']} | {r['sign_p']:.3f} | "
               f"{english_right(r, none, en)} | {r['chrf']:.1f} | {r['chrf_untranslated']:.1f} | "
               f"{endings} | {r['looping']:.2f} |")
        if split == "test":
            dev, source = rule_input(model, task, r["lang"])
            translates = rule_translates(dev)
            acc = r["accuracy"] if translates else r["accuracy_without"]
            row += (" no dev record |" if dev is None else
                    f" {acc:.3f} ({'translated' if translates else 'as it is'}, {source} chrF "
                    f"{dev['chrf']:.1f}) |")
            if dev is not None:
                group = "hidden" if r["lang"] in HIDDEN[task] else "dev"
                changes.setdefault(group, []).append(100 * (acc - r["accuracy_without"]))
                if en["accuracy"] - r["accuracy_without"] >= MIN_GAP:
                    gaps.setdefault(group, []).append(gap_closed(acc, r["accuracy_without"], en["accuracy"]))
        lines.append(row)
    lines += rule_summary(changes, gaps)
    lines.append("")
    return lines


def rule_summary(changes: dict[str, list[float]], gaps: dict[str, list[float]], where: str = "") -> list[str]:
    """The issue's goal measure under a test table, a line per group of languages (dev, then hidden):
    mean change in points, largest drop, mean gap closed (changes in points, gaps as fractions)."""
    lines = []
    for group, ch in sorted(changes.items()):
        gs = gaps.get(group, [])
        gap = f"{100 * sum(gs) / len(gs):+.0f}% of the gap closed" if gs else "no gap to close"
        drop = f"largest drop {-min(ch):.1f}" if min(ch) < 0 else "no language drops"
        lines += ["", f"With the rule over the {len(ch)} {group} language{'s' if len(ch) > 1 else ''}{where}: mean "
                      f"change {round(sum(ch) / len(ch), 1) + 0.0:+.1f} points, {drop}, {gap}."]
    return lines


def report() -> None:
    lines = ["# The model's own translation into English", "",
             "Made by `python bench/self_translate.py` (records in `bench/results/self_translate/<model>/`); this "
             "page by `python bench/self_translate.py --report`.", "",
             *(line for par in __doc__.split("\n\n")[2:4] for line in (" ".join(par.split()), "")),
             "No transform / English: the model reading the same items in the language and in the dataset's "
             "English. Fixed / broken against no transform; p: the one-sided sign test; English right: of the "
             "fixed and of the broken items, how many the model answers right in the dataset's English. chrF: "
             "the translated story or text (and XStoryCloze's endings) against the dataset's English "
             "(untranslated: the item's own text against it); looping: the share of translated texts that "
             "repeat themselves.", "",
             f"The rule, chosen on the dev rows: translate a language where the model's own translation of its "
             f"dev items reaches chrF {RULE_CHRF:g}, else read it as it is. On test, *with the rule* is the "
             "accuracy it gives; the chrF it read is this script's dev record (the dev languages) or, for a "
             "language with none (the hidden ones), `lingalign check`'s on the first 24 dev items "
             "(bench/language_check.py's record), which is what a user has for a new language. The summary "
             "under each test table is the issue's goal measure, over the dev languages and, on its own line, "
             "over bench/downstream.py's hidden ones (mean change in points, largest drop, mean gap closed "
             "where English leads by 5 points or more).", ""]
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        model = model_dir.name
        lines += [f"## {model}", ""]
        for split in ("dev", "test"):
            for task in TASKS:
                recs = [r for r in (read_record(p) for p in sorted(model_dir.glob(f"{task}-{split}-*-n*.json")))
                        if r and "chrf" in r]
                if split == "dev":
                    lines += task_table(model, task, split, recs, f"### {task}, {split}")
                    continue
                usual = [r for r in recs if r["n"] == downstream_n(model, task, r["lang"])]
                lines += task_table(model, task, split, usual, f"### {task}, {split}")
                lines += task_table(model, task, split, [r for r in recs if r not in usual],
                                    f"### {task}, {split}, a larger sample (bench/downstream.py's items and more)")
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {DOC}")


def main_of(doc: str, run_langs: Callable[[argparse.Namespace, Any], None], report_all: Callable[[], None]) -> None:
    """The command line this script and bench/two_views.py share: --report, or run_langs(args, llm)
    over --langs of --task (its dev languages by default)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--task", default="xstorycloze", choices=TASKS)
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--langs", help="the task's language codes, comma-separated (default: its dev languages)")
    ap.add_argument("--n", type=int, help="test items a language (default: bench/downstream.py's sample)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        report_all()
        return
    if args.n is not None and (args.split != "test" or args.n < 1):
        raise SystemExit("--n: a number of test items (>= 1), with --split test")
    args.langs = (args.langs or DEV_LANGS[args.task]).split(",")
    unknown = [lang for lang in args.langs if language_name(lang) is None]
    if unknown:
        raise SystemExit(f"no language name for {', '.join(unknown)} (lingalign.data.LANGUAGE_NAMES)")
    from lingalign.hook import open_model

    llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    run_langs(args, llm)


def main() -> None:
    main_of(__doc__, run, report)


if __name__ == "__main__":
    main()
