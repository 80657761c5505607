"""Does `lingalign check` tell which languages a model reads? Its verdict, set beside test accuracy.

    python bench/language_check.py --model qwen2.5-coder-1.5b --task sib200 [--langs ...] [--threads 1]
    python bench/language_check.py --task xstorycloze     # also: xcopa, embedded (the packaged corpus)
    python bench/language_check.py --report               # docs/language_check.md from the records
    python bench/language_check.py --ship                 # the verdicts into matrices/'s manifests

`lingalign check` lets the model translate 24 sentences of a language into English and scores its
translations with chrF against the reference English (lingalign.language_check). Its threshold,
chrF 40, was chosen once on bench/self_translate.py's dev rows: the dev languages whose own
translation reached it gained from reading that translation, those below did not. This script
runs exactly that check, on every language of a task (dev and hidden), with the first items of
the task's dev split (SIB-200's dev sentences, XStoryCloze's train stories, XCOPA's val premises,
each beside the dataset's English), and the report sets each verdict beside what
bench/downstream.py measured on the task's test split: the model's accuracy with no transform,
with English, and the default transform's change. If the check works, the languages it says the
model barely reads are those with the large gaps to English, where no method here has gained.
Records (scores, no text: the translations are of evaluation data) in
bench/results/language_check/<model>/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT / "python"))
from downstream import (DEV, HIDDEN, _records as downstream_records, dev_file, english_file,  # noqa: E402
                        english_record, read_record)

from lingalign.language_check import DEFAULT_SENTENCES, READS_CHRF, check_language  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "language_check"
SELF_TRANSLATE = ROOT / "bench" / "results" / "self_translate"
DOC = ROOT / "docs" / "language_check.md"
TASKS = ("sib200", "xstorycloze", "xcopa", "embedded")


def task_langs(task: str) -> list[str]:
    from lingalign.data import EMBEDDED_LANGUAGES

    if task == "embedded":
        return [lang for lang in EMBEDDED_LANGUAGES if lang != "eng"]
    return DEV[task] + HIDDEN[task]


def pairs(task: str, lang: str, n: int) -> tuple[list[str], list[str]]:
    """The first n dev sentences (stories, premises) of a language and their English."""
    from lingalign.data import embedded_path, read_pairs
    from lingalign.tasks import item_text, load_task

    if task == "embedded":
        return read_pairs(embedded_path(lang), embedded_path("eng"), limit=n)
    if task == "sib200":
        return read_pairs(dev_file(task, lang), english_file(task, lang, "dev"), limit=n)
    items, en_items = load_task(dev_file(task, lang)).items[:n], load_task(english_file(task, lang, "dev")).items[:n]
    if [it.uid for it in items] != [it.uid for it in en_items]:
        raise SystemExit(f"{task} {lang}: the dev items and their English are not the same items")
    return [item_text(it) for it in items], [item_text(it) for it in en_items]


def run(args: argparse.Namespace) -> None:
    from lingalign.hook import open_model

    command = " ".join(["python bench/language_check.py", *sys.argv[1:]])
    llm = None
    for lang in args.langs:
        path = RESULTS / args.model / f"{args.task}-{lang}-n{args.n}.json"
        if path.is_file():
            continue
        if llm is None:
            llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
        src, tgt = pairs(args.task, lang, args.n)
        result = check_language(llm, src, tgt, lang)
        rec = {"command": command, "model": args.model, "task": args.task, **result.as_dict(), "lang": lang,
               "chrf_items": [round(s, 1) for s in result.scores],
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(f"  {args.task} {lang}: chrF {result.chrf:.1f} (untranslated {result.chrf_untranslated:.1f}), "
              f"{'reads' if result.reads else 'barely reads'}; {result.seconds:.0f} s", flush=True)


def sib_folder(code: str) -> str:
    """SIB-200's folder of a shipped transform's language (any code lingalign.data.normalize_lang takes)."""
    from lingalign.data import normalize_lang

    found = [f for f in DEV["sib200"] + HIDDEN["sib200"] if normalize_lang(f) == normalize_lang(code)]
    if not found:
        raise SystemExit(f"no SIB-200 language of this script for {code!r}")
    return found[0]


def shipped_check(model: str, code: str) -> dict[str, Any]:
    """The check's verdict on a shipped transform's language, for matrices/'s manifest: this
    script's SIB-200 record (the first 24 dev sentences), the same data for every model."""
    folder = sib_folder(code)
    path = RESULTS / model / f"sib200-{folder}-n{DEFAULT_SENTENCES}.json"
    rec = read_record(path)
    if rec is None:
        raise SystemExit(f"no check record {path}: run python bench/language_check.py --model {model} "
                         f"--task sib200 --langs {folder}")
    return {"data": f"SIB-200 {folder} dev, first {rec['n']} sentences", "chrf": rec["chrf"],
            "chrf_untranslated": rec["chrf_untranslated"], "reads": rec["reads"], "threshold": rec["threshold"],
            "command": rec["command"]}


def ship() -> None:
    """Write shipped_check into the manifest of every shipped set (bench/make_matrices.py and
    bench/methods.py --ship write it too when they remake a set)."""
    from lingalign.models import DEFAULT_MODEL, KNOWN_MODELS

    for model in KNOWN_MODELS:
        path = ROOT / "matrices" / ("" if model == DEFAULT_MODEL else model) / "manifest.json"
        if not path.is_file():
            continue
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for code, entry in manifest["transforms"].items():
            entry["check"] = shipped_check(model, code)
        sort_keys = manifest.get("command") == "python bench/make_matrices.py"  # as each writer writes it
        path.write_text(json.dumps(manifest, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        print(f"written to {path}")


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    import numpy as np

    def ranks(v: list[float]) -> Any:
        a = np.asarray(v, dtype=np.float64)
        order = a.argsort(kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for value in np.unique(a):
            r[a == value] = r[a == value].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def test_row(recs: dict[str, dict[str, Any]], task: str, lang: str) -> dict[str, Any]:
    """bench/downstream.py's test numbers for a language (likelihood protocol), where its records
    `recs` (one model's) have them."""
    none = recs.get(f"{task}-{lang}-likelihood-none")
    default = recs.get(f"{task}-{lang}-likelihood-default")
    english = english_record(recs, task, lang)
    out: dict[str, Any] = {}
    if none:
        out["none"], out["n"] = none["summary"]["accuracy"], none["n"]
    if english:
        out["english"] = english["summary"]["accuracy"]
    if none and default:
        out["change"] = default["summary"]["accuracy"] - out["none"]
    if none and english:
        out["gap"] = out["english"] - out["none"]
    return out


def report() -> None:
    lines = ["# Does the model read the language? `lingalign check`", "",
             "Made by `python bench/language_check.py` (records in `bench/results/language_check/<model>/`); this "
             "page by `python bench/language_check.py --report`.", "",
             " ".join(__doc__.split("\n\n")[2].split()), "",
             f"chrF: the model's translations of the first {DEFAULT_SENTENCES} dev items (SIB-200 sentences, "
             "XStoryCloze stories, XCOPA premises, the embedded corpus's sentences) against the dataset's English, "
             "averaged over items; untranslated: the items as they are against the same English. Test columns from "
             "bench/downstream.py (likelihood protocol, its test samples): accuracy with no transform, with the "
             "dataset's English, the gap between them, and the default transform's change (points). Dev languages "
             "are those downstream.py chose settings on; the others are its hidden set.", ""]
    downstream = downstream_records()
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        model = model_dir.name
        lines += [f"## {model}", ""]
        for task in TASKS:
            recs = [r for r in (read_record(p) for p in sorted(model_dir.glob(f"{task}-*.json"))) if r]
            if not recs:
                continue
            langs = task_langs(task)
            recs.sort(key=lambda r: langs.index(r["lang"]) if r["lang"] in langs else len(langs))
            lines += [f"### {task}", "",
                      "| language | set | n | chrF | untranslated | verdict | no transform | English | gap | "
                      "default transform | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            chrfs, gaps, nones = [], [], []
            for r in recs:
                t = test_row(downstream.get(model, {}), task, r["lang"]) if task != "embedded" else {}
                where = "" if task == "embedded" else ("dev" if r["lang"] in DEV[task] else "hidden")
                cells = [f"{t['none']:.3f}" if "none" in t else "", f"{t['english']:.3f}" if "english" in t else "",
                         f"{100 * t['gap']:+.1f}" if "gap" in t else "",
                         f"{100 * t['change']:+.1f}" if "change" in t else ""]
                lines.append(f"| {r['lang']} | {where} | {r['n']} | {r['chrf']:.1f} | {r['chrf_untranslated']:.1f} | "
                             f"{'reads' if r['reads'] else 'barely reads'} | {' | '.join(cells)} | {r['seconds']:.0f} |")
                if "gap" in t:
                    chrfs.append(r["chrf"])
                    gaps.append(t["gap"])
                    nones.append(t["none"])
            lines.append("")
            if len(chrfs) >= 4:
                reads = [g for c, g in zip(chrfs, gaps) if c >= READS_CHRF]
                barely = [g for c, g in zip(chrfs, gaps) if c < READS_CHRF]
                mean = lambda v: f"{100 * sum(v) / len(v):+.1f}" if v else "none"  # noqa: E731
                lines += [f"Over the {len(chrfs)} languages with test records: Spearman's rank correlation of chrF "
                          f"with the gap to English {spearman(chrfs, gaps):+.2f}, with no-transform accuracy "
                          f"{spearman(chrfs, nones):+.2f}. Mean gap where the check says *reads*: {mean(reads)} "
                          f"points (languages: {len(reads)}); *barely reads*: {mean(barely)} ({len(barely)}).", ""]
        dev = [(r, read_record(SELF_TRANSLATE / model / f"sib200-dev-{r['lang']}-n99.json"))
               for r in (read_record(p) for p in sorted(model_dir.glob("sib200-*.json"))) if r]
        dev = [(r, full) for r, full in dev if full]
        if dev:
            lines += [f"Against the full dev split: the check's {dev[0][0]['n']} SIB-200 sentences and "
                      "bench/self_translate.py's 99 (the rows its threshold was chosen on): " +
                      "; ".join(f"{r['lang']} {r['chrf']:.1f} vs {full['chrf']:.1f}" for r, full in dev) + ".", ""]
    DOC.write_text("\n".join(lines), encoding="utf-8")
    print(f"written to {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--task", choices=TASKS, default="sib200")
    ap.add_argument("--langs", help="language codes, comma-separated (default: the task's dev and hidden languages)")
    ap.add_argument("--n", type=int, default=DEFAULT_SENTENCES, help=f"items a language (default {DEFAULT_SENTENCES})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--ship", action="store_true", help="record the check in every shipped set's manifest")
    args = ap.parse_args()
    if args.report:
        report()
        return
    if args.ship:
        ship()
        return
    args.langs = args.langs.split(",") if args.langs else task_langs(args.task)
    run(args)


if __name__ == "__main__":
    main()
