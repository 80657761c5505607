"""Does the model know what the weak language's words mean? Its own translation into English, measured.

    python bench/self_translate.py --model qwen2.5-coder-1.5b --langs sw,id [--threads 1]
    python bench/self_translate.py --report   # docs/self_translate.md from the records

The oracle (bench/oracle.py) showed that moving a story's mean hidden state onto its English
translation's does not help the model choose the right ending. The simplest explanation is that
the model does not know what the story says. This measures that directly, on the same 200
XStoryCloze dev stories a language that bench/methods.py and bench/oracle.py score: the model
translates each story and each of its two endings into English (its chat template, greedy, the
instruction "Translate this <language> text into English. Reply with the translation only."),
and is then scored on its own translation, in English, with the likelihood protocol: the
translate-test baseline of Etxaniz et al. (2023, "Do multilingual language models think better
in English?"), which needs no fitting, no parallel data and no hook. chrF (character 6-grams,
beta 2, in points) compares each translated story with the dataset's English story.

If the model translates well, the meaning is there and reading its own English helps; if its
"translations" share little with the real story, no shift of its hidden states can supply what
it never understood. Translations are cached outside the repository (they are derived from
evaluation data); records in bench/results/self_translate/<model>/ hold the scores only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from downstream import CACHE, dev_file  # noqa: E402
from methods import RESULTS as METHODS, STORY_DEV_N, english_right  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "self_translate"
DOC = ROOT / "docs" / "self_translate.md"
NAMES = {"sw": "Swahili", "id": "Indonesian", "zh": "Chinese", "es": "Spanish", "ru": "Russian", "ar": "Arabic",
         "hi": "Hindi"}
INSTRUCTION = "Translate this {name} text into English. Reply with the translation only.\n\n{text}"


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


def translate(llm: Any, text: str, name: str) -> str:
    """The model's greedy translation of text into English (at most 1.5 times the source's tokens
    plus 16, so a looping answer ends)."""
    budget = int(1.5 * len(llm.tokenize(text.encode("utf-8"), add_bos=False))) + 16
    r = llm.create_chat_completion(messages=[{"role": "user", "content": INSTRUCTION.format(name=name, text=text)}],
                                   temperature=0.0, max_tokens=budget)
    return " ".join(r["choices"][0]["message"]["content"].split())


def translations(llm: Any, model: str, lang: str, items: Any) -> list[dict[str, Any]]:
    """{'story', 'endings'} in English for each item, made once and cached (one line an item, so
    an interrupted run resumes)."""
    from lingalign.tasks import story

    path = CACHE / model / f"xstorycloze-{lang}-dev{len(items)}-self-translated.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    t0 = time.time()
    with path.open("a", encoding="utf-8") as out:
        for k, item in enumerate(items[len(done):], start=len(done)):
            row = {"uid": item.uid, "story": translate(llm, story(item), NAMES[lang]),
                   "endings": [translate(llm, o, NAMES[lang]) for o in item.options]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            done.append(row)
            if (k + 1) % 20 == 0:
                print(f"  {lang}: {k + 1} / {len(items)} translated ({time.time() - t0:.0f} s)", flush=True)
    if [r["uid"] for r in done] != [it.uid for it in items]:
        raise SystemExit(f"{path} holds other stories than the {lang} dev sample: delete it")
    return done


def as_english(item: Any, row: dict[str, Any]) -> Any:
    """The item with its story (all in sentence1) and endings replaced by the translation."""
    from lingalign.tasks import ChoiceItem

    fields = (("sentence1", row["story"]), ("sentence2", ""), ("sentence3", ""), ("sentence4", ""))
    return ChoiceItem(task=item.task, uid=item.uid, fields=fields, options=tuple(row["endings"]), label=item.label)


def run(args: argparse.Namespace, llm: Any) -> None:
    from lingalign.evaluate import eval_choice
    from lingalign.metrics import changed_answers, sign_test_p
    from lingalign.tasks import load_task, story

    command = " ".join(["python bench/self_translate.py", *sys.argv[1:]])
    en_items = load_task(dev_file("xstorycloze", "en"), limit=STORY_DEV_N, seed=0).items
    for lang in args.langs:
        path = RESULTS / args.model / f"{lang}-n{STORY_DEV_N}.json"
        if path.is_file():
            continue
        none = json.loads((METHODS / args.model / f"dev-{lang}-none-0-n{STORY_DEV_N}.json").read_text(encoding="utf-8"))
        items = load_task(dev_file("xstorycloze", lang), limit=STORY_DEV_N, seed=0).items
        if [it.uid for it in items] != [it.uid for it in en_items]:
            raise SystemExit(f"the {lang} and en dev samples hold different stories")
        t0 = time.time()
        rows = translations(llm, args.model, lang, items)
        seconds = time.time() - t0
        scores = [chrf(r["story"], story(e)) for r, e in zip(rows, en_items)]
        ending_scores = [chrf(h, ref) for r, e in zip(rows, en_items) for h, ref in zip(r["endings"], e.options)]
        t1 = time.time()
        correct = eval_choice(llm, [as_english(it, r) for it, r in zip(items, rows)], lang="en")["correct"]
        fixed, broken = changed_answers(correct, none["correct"])
        rec = {"command": command, "model": args.model, "lang": lang, "n": len(correct),
               "accuracy": sum(correct) / len(correct), "accuracy_without": none["accuracy"],
               "fixed": fixed, "broken": broken, "sign_p": sign_test_p(fixed, broken), "correct": correct,
               "chrf_story": sum(scores) / len(scores), "chrf_endings": sum(ending_scores) / len(ending_scores),
               "chrf_stories": [round(s, 1) for s in scores],
               "translate_seconds": round(seconds, 1), "score_seconds": round(time.time() - t1, 1),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(f"  {lang}: self-translated accuracy {rec['accuracy']:.3f} (without {none['accuracy']:.3f}), "
              f"fixed {fixed} / broken {broken}, p {rec['sign_p']:.3f}; chrF story {rec['chrf_story']:.1f}, "
              f"endings {rec['chrf_endings']:.1f}", flush=True)


def report() -> None:
    lines = ["# The model's own translation into English", "",
             "Made by `python bench/self_translate.py` (records in `bench/results/self_translate/<model>/`); this "
             "page by `python bench/self_translate.py --report`.", "",
             *(line for par in __doc__.split("\n\n")[1:3] for line in (" ".join(par.split()), "")),
             "No transform / English: the model reading the same stories in the language and in the dataset's "
             "English (bench/methods.py's records). Fixed / broken against no transform; p: the one-sided sign "
             "test; English right: of the fixed and of the broken items, how many the model answers right in "
             "the dataset's English. chrF: the translated story and endings against the dataset's English.", ""]
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        en_path = METHODS / model_dir.name / f"dev-en-none-0-n{STORY_DEV_N}.json"
        en = json.loads(en_path.read_text(encoding="utf-8")) if en_path.is_file() else None
        lines += [f"## {model_dir.name}", "",
                  "| language | n | no transform | own translation | English | fixed / broken | p | English right "
                  "| chrF story | chrF endings |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for p in sorted(model_dir.glob("*.json")):
            r = json.loads(p.read_text(encoding="utf-8"))
            none = json.loads((METHODS / model_dir.name / f"dev-{r['lang']}-none-0-n{r['n']}.json")
                              .read_text(encoding="utf-8"))
            lines.append(f"| {r['lang']} | {r['n']} | {r['accuracy_without']:.3f} | {r['accuracy']:.3f} | "
                         f"{en['accuracy']:.3f} | {r['fixed']} / {r['broken']} | {r['sign_p']:.3f} | "
                         f"{english_right(r, none, en)} | {r['chrf_story']:.1f} | {r['chrf_endings']:.1f} |"
                         if en else "")
        lines.append("")
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--langs", default="sw", help=f"XStoryCloze languages, comma-separated (of {', '.join(NAMES)})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "python"))
    if args.report:
        report()
        return
    args.langs = args.langs.split(",")
    if set(args.langs) - set(NAMES):
        raise SystemExit(f"unknown language(s) {sorted(set(args.langs) - set(NAMES))} (of {', '.join(NAMES)})")
    from lingalign.hook import open_model

    llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    run(args, llm)


if __name__ == "__main__":
    main()
