"""Downstream accuracy and answer-language fidelity, with and without the default transform.

    python bench/downstream.py --model qwen2.5-coder-1.5b [--n 100] [--only TASK:LANG,...]
    python bench/downstream.py --report          # docs/downstream.md and its picture

For each model, task (XStoryCloze, SIB-200, XCOPA) and dev language: test accuracy by both
protocols (option likelihood; INCLINE's lettered prompt, scored in both option orders), the
English reference (the same items in English; XCOPA: its English machine translation), and
answer-language fidelity of greedy continuations; then the same with the default transform:
`lingalign fit` with its defaults (contrastive at the layer chosen on held-out pairs, the
strength chosen once on dev data by bench/methods.py) on the 701 SIB-200 train pairs of the
language, stored at q8 as shipped. Test data is never tuned on. Every measurement is one JSON record under
bench/results/downstream/<model>/, written as soon as it is measured: an interrupted run
continues where it stopped, and a record says the command and sizes that made it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "downstream"
METHODS = ROOT / "bench" / "results" / "methods"
DOC = ROOT / "docs" / "downstream.md"
CACHE = Path.home() / ".cache" / "lingalign" / "bench"

# The dev languages every setting is chosen on; the others are a hidden set, measured only
# with a rule fixed on these.
DEV = {
    "xstorycloze": ["sw", "id", "zh", "es"],
    "sib200": ["swh_Latn", "ind_Latn", "zho_Hans", "tur_Latn", "yor_Latn", "hau_Latn"],
    "xcopa": ["sw", "id", "zh", "tr"],
}
HIDDEN = {
    "xstorycloze": ["ru", "ar", "hi"],
    "sib200": ["spa_Latn", "deu_Latn", "ita_Latn", "vie_Latn", "jpn_Jpan", "arb_Arab", "hin_Deva", "rus_Cyrl"],
    "xcopa": ["it", "vi"],
}
# the SIB-200 folder whose train pairs fit a language's transform
SIB_OF = {"sw": "swh_Latn", "id": "ind_Latn", "zh": "zho_Hans", "es": "spa_Latn", "tr": "tur_Latn",
          "ru": "rus_Cyrl", "ar": "arb_Arab", "hi": "hin_Deva", "it": "ita_Latn", "vi": "vie_Latn"}
PROTOCOLS = ("likelihood", "letter")
FIDELITY_MEASURES = ("fidelity", "english_share", "looping")  # a fidelity record's summary, without and with
MIN_GAP = 0.05  # gap closed is shown where English leads by 5 points or more (a smaller gap is noise at these n)


def task_file(task: str, lang: str, split: str = "test") -> Path:
    """A task's test or dev split (dev: XStoryCloze's train file, SIB-200's dev, XCOPA's val)."""
    names = {"xstorycloze": {"test": f"{lang}.eval.tsv", "dev": f"{lang}.train.tsv"},
             "sib200": {"test": f"{lang}/test.tsv", "dev": f"{lang}/dev.tsv"},
             "xcopa": {"test": f"{lang}/test.{lang}.jsonl", "dev": f"{lang}/val.{lang}.jsonl"}}
    return DATA / task / names[task][split]


def test_file(task: str, lang: str) -> Path:
    return task_file(task, lang, "test")


def english_file(task: str, lang: str, split: str = "test") -> Path:
    """The English counterpart of a language's test or dev split: the task's English, or for XCOPA
    that language's own English translation of its items."""
    if task == "xcopa":
        return DATA / "xcopa-en" / lang / f"{'test' if split == 'test' else 'val'}.{lang}.jsonl"
    return task_file(task, "en" if task == "xstorycloze" else "eng_Latn", split)


def dev_file(task: str, lang: str) -> Path:
    return task_file(task, lang, "dev")


def sib_train(sib: str) -> Path:
    """The 701 SIB-200 train sentences of a language: the pairs every default transform is fitted on."""
    return DATA / "sib200" / sib / "train.tsv"


def fidelity_file(task: str, lang: str) -> Path:
    """Prompts for answer-language fidelity: the stories (XStoryCloze) or texts (SIB-200)."""
    return test_file(task, lang)


def sib_code(task: str, lang: str) -> str:
    return lang if task == "sib200" else SIB_OF[lang]


class Recorder:
    """One JSON record per measurement under RESULTS/<model>/; skips what is there."""

    def __init__(self, model: str) -> None:
        self.dir = RESULTS / model
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def have(self, key: str) -> bool:
        return self.path(key).is_file()

    def write(self, key: str, record: dict[str, Any]) -> None:
        record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        tmp = self.path(key).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(self.path(key))
        print(f"  {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in record.get("summary", {}).items()), flush=True)


def cached_capture(llm: Any, path: Path, texts: Callable[[], list[str]], what: str) -> Any:
    """The texts captured at every layer, kept at `path` (outside the repository). A lock lets two
    runs (one a language) share a capture both need, the English one, instead of both making it."""
    import fcntl

    import lingalign

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return lingalign.Captures.load(path)
        listed = texts()
        print(f"  capturing {len(listed)} {what}", flush=True)
        t0 = time.time()
        caps = lingalign.capture(llm, listed, progress=False)
        caps.save(path)
        print(f"  captured in {time.time() - t0:.0f} s", flush=True)
        return caps


def captures(llm: Any, model: str, sib: str) -> Any:
    """The SIB-200 train sentences of `sib` captured at every layer, cached on disk (never in
    the repository): a Qwen capture of 701 sentences takes about 15 minutes on one thread."""
    from lingalign.data import read_lines

    return cached_capture(llm, CACHE / model / f"{sib}-train.npz", lambda: read_lines(sib_train(sib)),
                          f"SIB-200 {sib} train sentences")


def default_transform(llm: Any, model: str, sib: str) -> Path:
    """The default transform for a SIB-200 language, as `lingalign fit` makes it with its
    defaults on the 701 train pairs: contrastive at the layer chosen on held-out pairs, at the
    stored strength fit.DEFAULT_ALPHA, lowered by fit's fidelity check (answers to the first 8
    source sentences must stay in their language), stored at q8 as the shipped sets are. The
    rule that chose these defaults was fixed on dev data (bench/methods.py); test data never
    tunes it. A file from before the fidelity check is checked and rewritten."""
    import lingalign
    from lingalign import _llama
    from lingalign.blas import blas_threads
    from lingalign.data import read_lines
    from lingalign.fit import DEFAULT_METHOD, FIDELITY_CHECK_PROMPTS, choose_layer, stored_alpha
    from lingalign.tune import guard_strength

    out = RESULTS / model / "transforms" / f"{sib}-default.gguf"
    if out.is_file():
        t = lingalign.Transform.load(out)
        if "fidelity_check" in t.fit_info:
            return out
    else:
        X, Y = captures(llm, model, sib), captures(llm, model, "eng_Latn")
        t0 = time.time()
        with blas_threads():
            layer, retrieval_alpha, choice = choose_layer(X, Y)
            t = lingalign.Transform.fit(X, Y, method=DEFAULT_METHOD, layers=[layer], source_lang=sib.split("_")[0],
                                        alpha=stored_alpha(DEFAULT_METHOD, retrieval_alpha),
                                        fit_info={"data": "SIB-200 train", "pairs": len(X), "layer_choice": choice,
                                                  "precision": "q8", "n_layer": _llama.n_layer(llm)})
        print(f"  fitted the default for {sib} in {time.time() - t0:.1f} s: layer {layer}", flush=True)
        t = t.to_precision("q8")
    prompts = read_lines(sib_train(sib))[:FIDELITY_CHECK_PROMPTS]
    t = guard_strength(llm, t, prompts, sib.split("_")[0])
    print(f"  fidelity check for {sib}: alpha {t.fit_info['fidelity_check']['tried'][0]['alpha']:g} -> {t.alpha:g}",
          flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    t.save(out)
    return out


TUNE_ALPHAS = (0.5, 0.25, 0.1)  # the default's strength and gentler ones: never stronger than the rule


def tuned_transform(llm: Any, model: str, task: str, lang: str, n_dev: int, n_fid: int) -> tuple[Any, dict[str, Any]]:
    """The default transform tuned as `lingalign tune --metric choice --fidelity` does, on the
    task's dev split only: the strength among TUNE_ALPHAS with the best dev accuracy whose answers
    stay in the language (fidelity on dev prompts within 2 points of no transform's) and whose
    gain passes tune's sign test (tune.MAX_P); off (alpha 0) when none does. XCOPA takes its
    fidelity prompts from SIB-200 dev texts. Records tuned before the sign test (no "max_p" in
    their tuning) that chose off stand: the test only removes candidates."""
    import lingalign
    from lingalign.fidelity import read_prompts
    from lingalign.tasks import load_task
    from lingalign.tune import tune

    t = lingalign.Transform.load(default_transform(llm, model, sib_code(task, lang)))
    items = load_task(dev_file(task, lang), limit=n_dev, seed=0).items
    fid_src = dev_file("sib200", sib_code(task, lang)) if task == "xcopa" else dev_file(task, lang)
    prompts = read_prompts(fid_src, limit=n_fid)
    tuned, record = tune(llm, t, metric="choice", dev_items=items, lang=lang, alphas=TUNE_ALPHAS, positions=("all",),
                         fidelity_prompts=prompts, fidelity_lang=lang, progress=False)
    return tuned, record


RECORD_ALPHA = 0.5  # the strength of records from before they noted it: all were made at fit.DEFAULT_ALPHA


def record_alpha(record: dict[str, Any]) -> float:
    """The strength a transform record was measured at."""
    return record.get("alpha", record.get("tuning", {}).get("alpha", RECORD_ALPHA))


def stale(rec: Recorder, key: str, transform: Any) -> bool:
    """Whether a record was measured at another strength than the transform's."""
    return transform is not None and record_alpha(json.loads(rec.path(key).read_text(encoding="utf-8"))) != transform.alpha


def adopt_rule_record(rec: Recorder, key: str, task: str, lang: str, n: int) -> None:
    """bench/methods.py --test measured the same transform (the rule is the default: contrastive
    at the chosen layer, DEFAULT_ALPHA, q8) on the same items: take its numbers, saying so."""
    from lingalign.fit import DEFAULT_ALPHA

    path = METHODS / rec.dir.name / f"test-{task}-{lang}-contrastive-auto-{DEFAULT_ALPHA:g}.json"
    if not path.is_file():
        return
    m = json.loads(path.read_text(encoding="utf-8"))
    if m["n"] != n:
        return
    r = {"accuracy": m["accuracy"], "accuracy_norm": m["accuracy_norm"], "n": n, "task": task, "protocol": "likelihood"}
    rec.write(key, {"command": m["command"], "from": str(path.relative_to(ROOT)), "model": m["model"], "task": task,
                    "lang": lang, "protocol": "likelihood", "condition": "default", "n": n, "result": r,
                    "summary": {"accuracy": r["accuracy"], "accuracy_norm": r["accuracy_norm"]}})
    fid = f"{task}-{lang}-fidelity-default"
    if "fidelity" in m and not rec.have(fid):
        result = {"with": m["fidelity"], "without": m["fidelity_without"], "examples": m.get("examples", [])}
        summary = {f"{k}_{w}": result[w][k] for w in ("without", "with") for k in FIDELITY_MEASURES}
        rec.write(fid, {"command": m["command"], "from": str(path.relative_to(ROOT)), "model": m["model"], "task": task,
                        "lang": lang, "condition": "default", "n": m["fidelity"].get("n", 0), "result": result,
                        "summary": summary})


def adopt_off_record(rec: Recorder, key: str, none_path: Path, command: str, tuning: dict[str, Any] | None) -> None:
    """A tuning that switched the transform off (alpha 0, bit-identical to no transform:
    tests/test_hook.py) takes the no-transform record at `none_path`; a fidelity record's
    "with" side is then its "without" side."""
    if not none_path.is_file():
        return
    off = json.loads(none_path.read_text(encoding="utf-8"))
    if "without" in off["result"]:
        off["result"] = {**off["result"], "with": off["result"]["without"]}
        off["summary"] = {**off["summary"], **{f"{k}_with": off["summary"][f"{k}_without"] for k in FIDELITY_MEASURES}}
    rec.write(key, {**off, "command": command, "condition": "tuned", "alpha": 0.0, "tuning": tuning,
                    "from": str(none_path.relative_to(ROOT)) + " (tuned off: alpha 0 is no transform)"})


def run(args: argparse.Namespace) -> None:
    import lingalign
    from lingalign.evaluate import eval_choice
    from lingalign.fidelity import eval_fidelity, read_prompts
    from lingalign.fit import DEFAULT_ALPHA
    from lingalign.hook import open_model
    from lingalign.tasks import load_task

    rec = Recorder(args.model)
    llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    command = " ".join(["python bench/downstream.py", *sys.argv[1:]])
    plan = [(task, lang) for task in args.tasks for lang in (DEV[task] + (HIDDEN[task] if args.hidden else []))]
    if args.only:
        wanted = {tuple(x.split(":")) for x in args.only.split(",")}
        plan = [p for p in plan if p in wanted]
    conditions = ["none"] + (["default"] if args.transforms else []) + (["tuned"] if args.tuned else [])
    for condition in conditions:
        for task, lang in plan:
            transform = None
            tuning: dict[str, Any] | None = None
            if condition == "default":
                path = default_transform(llm, args.model, sib_code(task, lang))
                transform = lingalign.Transform.load(path)
            elif condition == "tuned":
                keys = [f"{task}-{lang}-{p}-tuned" for p in args.protocols] + [f"{task}-{lang}-fidelity-tuned"]
                if all(rec.have(k) for k in keys):
                    continue
                t0 = time.time()
                transform, tuning = tuned_transform(llm, args.model, task, lang, args.dev_n, args.fidelity or 12)
                tuning = {"alpha": transform.alpha, "positions": transform.positions, "dev_n": args.dev_n,
                          "best": tuning.get("best"), "dev_baseline": tuning.get("baseline_score"),
                          "fidelity_rejected": len(tuning.get("fidelity", {}).get("rejected", [])),
                          "max_p": tuning.get("max_p"), "unproven": len(tuning.get("unproven", [])),
                          "seconds": round(time.time() - t0, 1)}
                print(f"  tuned {task} {lang}: alpha {transform.alpha:g}", flush=True)
            for protocol in args.protocols:
                key = f"{task}-{lang}-{protocol}-{condition}"
                n = args.n if protocol == "likelihood" else (args.n_letter or args.n)
                baseline = rec.path(f"{task}-{lang}-{protocol}-none")
                if condition != "none" and baseline.is_file():  # the same items as without
                    n = json.loads(baseline.read_text(encoding="utf-8"))["n"]
                if condition == "default" and rec.have(key) and stale(rec, key, transform):
                    rec.path(key).unlink()  # measured at a strength fit no longer stores
                if not rec.have(key) and protocol == "likelihood" and condition == "default" and transform.alpha == DEFAULT_ALPHA:
                    adopt_rule_record(rec, key, task, lang, n)
                if not rec.have(key) and condition == "tuned" and transform.alpha == 0:
                    adopt_off_record(rec, key, baseline, command, tuning)
                if not rec.have(key):
                    data = load_task(test_file(task, lang), limit=n, seed=0)
                    t0 = time.time()
                    r = eval_choice(llm, data, protocol=protocol, transform=transform)
                    r.pop("warnings", None)
                    rec.write(key, {"command": command, "model": args.model, "task": task, "lang": lang,
                                    "protocol": protocol, "condition": condition, "n": len(data), "result": r,
                                    **({"alpha": transform.alpha} if transform is not None else {}),
                                    **({"tuning": tuning} if tuning else {}),
                                    "seconds": round(time.time() - t0, 1),
                                    "summary": {"accuracy": r["accuracy"], "accuracy_norm": r["accuracy_norm"]}})
                en_key = f"{task}-{lang}-{protocol}-english"
                if condition == "none" and not rec.have(en_key) and (task == "xcopa" or not rec.have(
                        f"{task}-en-{protocol}-english")):
                    data = load_task(english_file(task, lang), limit=n, seed=0)
                    t0 = time.time()
                    r = eval_choice(llm, data, lang="en", protocol=protocol)
                    r.pop("warnings", None)
                    key_en = en_key if task == "xcopa" else f"{task}-en-{protocol}-english"
                    rec.write(key_en, {"command": command, "model": args.model, "task": task, "lang": "en",
                                       "protocol": protocol, "condition": "english", "n": len(data), "result": r,
                                       "seconds": round(time.time() - t0, 1),
                                       "summary": {"accuracy": r["accuracy"], "accuracy_norm": r["accuracy_norm"]}})
            fid_key = f"{task}-{lang}-fidelity-{condition}"
            if condition == "default" and rec.have(fid_key) and stale(rec, fid_key, transform):
                rec.path(fid_key).unlink()
            if condition == "tuned" and transform.alpha == 0 and not rec.have(fid_key):
                adopt_off_record(rec, fid_key, rec.path(f"{task}-{lang}-fidelity-none"), command, tuning)
            if args.fidelity and task != "xcopa" and not rec.have(fid_key):
                prompts = read_prompts(fidelity_file(task, lang), limit=args.fidelity)
                t0 = time.time()
                r = eval_fidelity(llm, prompts, lang, transform=transform, max_tokens=args.max_tokens)
                r.pop("warnings", None)
                summary = {f"{k}_without": r["without"][k] for k in FIDELITY_MEASURES}
                if "with" in r:
                    summary.update({f"{k}_with": r["with"][k] for k in FIDELITY_MEASURES})
                rec.write(fid_key, {"command": command, "model": args.model, "task": task, "lang": lang,
                                    "condition": condition, "n": len(prompts), "result": r,
                                    **({"alpha": transform.alpha} if transform is not None else {}),
                                    **({"tuning": tuning} if tuning else {}),
                                    "seconds": round(time.time() - t0, 1), "summary": summary})


# -- the report ---------------------------------------------------------------------------------
def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON record of a bench script, None where there is none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _records() -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model_dir in sorted(RESULTS.glob("*")):
        if model_dir.is_dir():
            out[model_dir.name] = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in model_dir.glob("*.json")}
    return out


def english_record(recs: dict[str, dict[str, Any]], task: str, lang: str, protocol: str = "likelihood") -> dict[str, Any] | None:
    """The English reference of a task and language: XCOPA's own translation, else the task's English."""
    return recs.get(f"{task}-{lang}-{protocol}-english") or recs.get(f"{task}-en-{protocol}-english")


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def report() -> None:
    records = _records()
    lines = ["# Downstream accuracy and answer-language fidelity", "",
             "Made by `python bench/downstream.py` (records in `bench/results/downstream/<model>/`, each with the "
             "command and sizes that made it); this page by `python bench/downstream.py --report`.", "",
             "Accuracy on a seeded sample of the test split, stratified by label (`n` items per language; the "
             "standard error of an accuracy p is sqrt(p(1-p)/n): about 0.05 at n = 100). *likelihood*: the option "
             "with the highest summed log-likelihood (length-normalized in brackets); *letter*: INCLINE's English "
             "instruction with lettered options, each item in both option orders (A share: how often the first "
             "letter was the answer). *English*: the same items in English (XCOPA: its English machine "
             "translation). *default*: the default transform (`lingalign fit` with its defaults on the 701 SIB-200 "
             "train pairs: contrastive at the layer chosen on held-out pairs, strength 0.5 as lowered by fit's fidelity check "
             "(`fit --fidelity-check`), q8; the rule chosen on "
             "dev data in [methods.md](methods.md)), on the same items; *tuned*: that transform tuned by `lingalign tune "
             "--metric choice --fidelity` on the task's dev split (40 items; strengths 0.5, 0.25, 0.1, or off; a "
             "strength is refused if it lowers the share of dev answers in the language by over 2 points, or if its dev "
             "gain does not pass a one-sided sign test at 0.05 over the items it changes); *gap "
             "closed*: (with - without) / (English - without), shown where English leads by 5 points or more.", "",
             "The newer methods side by side on task dev data, and the rule chosen there measured on test: "
             "[methods.md](methods.md). Outside the hook, the model reading its own English translation of each "
             "item (translate-test): [self_translate.md](self_translate.md). Reading both, the item as it is and that "
             "translation, their option scores combined: [two_views.md](two_views.md). A map fitted on aligned word "
             "pairs instead of sentence means: [token_map.md](token_map.md). Each item read with its word-by-word "
             "English gloss from a word lexicon learned on the same parallel data (`--lexicon`), the first thing here "
             "that raises accuracy where the model barely reads the language: [gloss.md](gloss.md).", ""]
    for model, recs in records.items():
        lines += [f"## {model}", ""]
        for task in DEV:
            rows = []
            for lang in DEV[task] + HIDDEN[task]:
                for protocol in PROTOCOLS:
                    none = recs.get(f"{task}-{lang}-{protocol}-none")
                    if none is None:
                        continue
                    en = english_record(recs, task, lang, protocol)
                    r0 = none["result"]
                    acc = f"{r0['accuracy']:.3f}" + (f" ({r0['accuracy_norm']:.3f})" if protocol == "likelihood"
                                                      else f" (A {r0['a_share']:.0%})")
                    cells = [f"{en['result']['accuracy']:.3f}" if en else ""]
                    for cond in ("default", "tuned"):
                        with_t = recs.get(f"{task}-{lang}-{protocol}-{cond}")
                        if not with_t:
                            cells += ["", ""]
                            continue
                        r1 = with_t["result"]
                        alpha = f" (alpha {record_alpha(with_t):g})"
                        gap = (en["result"]["accuracy"] - r0["accuracy"]) if en else 0.0
                        cells += [f"{r1['accuracy']:.3f}{alpha}",
                                  f"{(r1['accuracy'] - r0['accuracy']) / gap:+.0%}" if en and gap >= MIN_GAP else ""]
                    hidden = " (hidden)" if lang in HIDDEN[task] else ""
                    rows.append(f"| {lang}{hidden} | {protocol} | {none['n']} | {acc} | " + " | ".join(cells) + " |")
            if rows:
                lines += [f"### {task}", "", "| language | protocol | n | no transform | English | default | gap closed "
                          "| tuned | gap closed |", "|---|---|---|---|---|---|---|---|---|", *rows, ""]
        lines += goals(recs)
        fid_rows = sorted({(v["task"], v["lang"]) for k, v in recs.items() if "-fidelity-" in k})
        if fid_rows:
            lines += ["### Answer-language fidelity", "",
                      "Greedy continuations (48 tokens) of the test stories (XStoryCloze: the first four sentences) "
                      "or texts (SIB-200); the answer's language detected offline (py3langid). Each cell: share in "
                      "the prompt's language / in English / looping.", "",
                      "| task | language | n | no transform | default | tuned |", "|---|---|---|---|---|---|"]
            def shares(summary: dict[str, float], side: str) -> str:
                return "/".join(f"{summary[f'{m}_{side}']:.2f}" for m in FIDELITY_MEASURES)

            for task, lang in fid_rows:
                by = {c: recs.get(f"{task}-{lang}-fidelity-{c}") for c in ("none", "default", "tuned")}
                # every record holds the answers without; the default's were generated in the same run as its own
                first = next(v for v in (by["default"], by["tuned"], by["none"]) if v)
                cells = [shares(v["summary"], "with") if v and "fidelity_with" in v["summary"] else ""
                         for v in (by["default"], by["tuned"])]
                lines.append(f"| {task} | {lang} | {first['n']} | {shares(first['summary'], 'without')} | "
                             + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Pictures", "",
              "![accuracy per language against the English reference](downstream.png)", "",
              "`python bench/downstream.py --report` (likelihood protocol; bars: 95% intervals).", "",
              "![sentences of four languages before and after their shipped transforms](pca.png)", "",
              "`python bench/pca_picture.py`: Gemma 3 270M's layer 12, the embedded corpus, each language read with "
              "its shipped transform; Turkish and Spanish land on English, Swahili moves part of the way.", "",
              "![top-1 retrieval per layer, SIB-200 dev, Swahili](retrieval-swh.png)", "",
              "`lingalign eval retrieval --src sib200/swh_Latn/dev.tsv --tgt sib200/eng_Latn/dev.tsv "
              "--transform matrices/swh-eng.gguf --plot docs/retrieval-swh.png`: on FLORES sentences the shipped "
              "Swahili transform (fitted on Tatoeba) barely moves Gemma's retrieval.", ""]
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {DOC}")
    plot(records)


def goals(recs: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 18's goals, per condition and task: the mean change in likelihood accuracy over the dev
    languages (and, on a row of their own, over the hidden ones), the largest drop, the mean gap
    closed, and the largest fall in fidelity."""
    out: list[str] = []
    for cond in ("default", "tuned"):
        rows = []
        for task, langs in [(t, g) for t in ("xstorycloze", "sib200", "xcopa") for g in (DEV[t], HIDDEN[t])]:
            deltas, closed, fid_drop = [], [], []
            for lang in langs:
                none, with_t = recs.get(f"{task}-{lang}-likelihood-none"), recs.get(f"{task}-{lang}-likelihood-{cond}")
                en = english_record(recs, task, lang)
                if not none or not with_t:
                    continue
                d = with_t["result"]["accuracy"] - none["result"]["accuracy"]
                deltas.append((d, lang))
                gap = en["result"]["accuracy"] - none["result"]["accuracy"] if en else 0.0
                if gap >= MIN_GAP:
                    closed.append(d / gap)
                fid = recs.get(f"{task}-{lang}-fidelity-{cond}")
                if fid and "fidelity_with" in fid["summary"]:
                    fid_drop.append(fid["summary"]["fidelity_without"] - fid["summary"]["fidelity_with"])
            if deltas:
                worst = min(deltas)
                name = task + (" (hidden)" if langs is HIDDEN[task] else "")
                rows.append(f"| {name} | {len(deltas)}/{len(langs)} | {100 * sum(d for d, _ in deltas) / len(deltas):+.1f} | "
                            + (f"{100 * worst[0]:+.1f} ({worst[1]})" if worst[0] < 0 else "none") + " | "
                            + (f"{sum(closed) / len(closed):+.0%} ({len(closed)})" if closed else "") + " | "
                            + (f"{100 * max(fid_drop):.0f}" if fid_drop else "") + " |")
        if rows:
            out += [f"### Goals ({cond})", "",
                    "Over the dev languages measured (likelihood; hidden: the languages no setting was chosen on): "
                    "mean change in points, the largest drop, the mean "
                    "gap closed (over languages where English leads by 5 points or more), the largest fall in fidelity (points). "
                    "Goals: mean +3, no drop over 1, 25% closed, fidelity within 2.", "",
                    "| task | languages | mean change | largest drop | gap closed | fidelity fall |", "|---|---|---|---|---|---|",
                    *rows, ""]
    return out


def plot(records: dict[str, dict[str, dict[str, Any]]]) -> None:
    """docs/downstream.png: accuracy per language against the English reference, per model and task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install 'lingalign[plot]'): no picture")
        return
    panels = [(m, t) for m in records for t in DEV if any(k.startswith(f"{t}-") and k.endswith("likelihood-none")
                                                         for k in records[m])]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (model, task) in zip(axes[0], panels):
        recs = records[model]
        langs = [lang for lang in DEV[task] + HIDDEN[task] if f"{task}-{lang}-likelihood-none" in recs]
        x = range(len(langs))
        for cond, marker, label in (("none", "o", "no transform"), ("default", "s", "default transform")):
            ys = [recs.get(f"{task}-{lang}-likelihood-{cond}", {}).get("result", {}).get("accuracy") for lang in langs]
            pts = [(i, y) for i, y in zip(x, ys) if y is not None]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle="",
                            yerr=[1.96 * _se(p[1], recs[f"{task}-{langs[p[0]]}-likelihood-none"]["n"]) for p in pts],
                            label=label, capsize=2)
        ens = [english_record(recs, task, lang) for lang in langs]
        en_y = [e["result"]["accuracy"] if e else None for e in ens]
        ax.plot([i for i, y in zip(x, en_y) if y is not None], [y for y in en_y if y is not None], "k_", markersize=18,
                label="English reference")
        ax.set_xticks(list(x), langs, rotation=45, fontsize=8)
        ax.set_title(f"{model}: {task}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (likelihood)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out = DOC.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--tasks", default="xstorycloze,sib200,xcopa")
    ap.add_argument("--protocols", default="likelihood,letter")
    ap.add_argument("--only", default=None, help="TASK:LANG pairs, comma-separated (e.g. xstorycloze:sw)")
    ap.add_argument("--n", type=int, default=100, help="test items per language (a seeded stratified sample)")
    ap.add_argument("--n-letter", type=int, default=None,
                    help="items per language for the lettered protocol (default: --n; it scores two prompts an item)")
    ap.add_argument("--fidelity", type=int, default=20, help="prompts per language for fidelity (0: none)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--no-transforms", dest="transforms", action="store_false", help="only without a transform")
    ap.add_argument("--tuned", action="store_true",
                    help="also the default transform tuned on the task's dev split with the fidelity constraint")
    ap.add_argument("--dev-n", type=int, default=40, help="dev items per language for --tuned")
    ap.add_argument("--hidden", action="store_true", help="also the hidden languages")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report", action="store_true", help="write docs/downstream.md from the records")
    args = ap.parse_args()
    if args.report:
        report()
        return
    args.tasks = args.tasks.split(",")
    args.protocols = args.protocols.split(",")
    run(args)


if __name__ == "__main__":
    main()
