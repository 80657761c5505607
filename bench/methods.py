"""Which method helps downstream: the methods side by side on task dev data, then the chosen rule on test.

    python bench/methods.py --model qwen2.5-coder-1.5b --langs sw            # dev screening
    python bench/methods.py --model qwen2.5-coder-1.5b --langs sw --test     # the rule on test
    python bench/methods.py --model qwen2.5-coder-1.5b --langs sw --configs contrastive-auto --alphas 0.5 --dev-n 200
                                                                            # a screened setting on 200 dev stories
    python bench/methods.py --langs en --configs "" --dev-n 200             # English: the same 200 stories
    python bench/methods.py --report                                        # docs/methods.md

Every method is fitted on the 701 SIB-200 train pairs of the language (the *-stories configs: on
the sentences of the dev stories outside the largest dev sample, in-domain pairs), captured
once, at every layer, and kept in ~/.cache/lingalign/bench/<model>/, never in the repository,
then scored on dev data only: XStoryCloze train (the dev split; a seeded stratified sample of --dev-n stories),
option log-likelihood, at each strength in --alphas, every position (unless the config has
another policy); and answer-language fidelity of greedy continuations of --fid-n dev stories.
The rule (the method and strength with the best mean dev accuracy over the screened languages
among those whose fidelity stays within 2 points of no transform's) is then measured on the
test splits of XStoryCloze and SIB-200, with the no-transform and English numbers of
bench/downstream.py. One JSON record per measurement under bench/results/methods/<model>/; an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from downstream import CACHE, RESULTS as DOWNSTREAM, SIB_OF, cached_capture, captures, dev_file, test_file  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "methods"
DOC = ROOT / "docs" / "methods.md"
MAX_FIDELITY_DROP = 0.02
DEV_N = 40  # the screening sample; a larger --dev-n checks a screened setting with a sign test
# the largest dev sample screened (it holds the 40-story one); the dev stories outside it are the
# in-domain fitting data of the *-stories configs, so no dev item scored was fitted on
STORY_DEV_N = 200
# name -> (method, where, strengths screened): where is "auto" (the layer choice on held-out
# retrieval), "mid" (staged's alignment layers: a quarter to two thirds of the depth), "middle"
# (the one layer at half the depth, as ITLC), "stages" (staged's two ranges; "stages-all" with
# both on every token) or "middle-stages" (the middle layer, then staged's late range). Vectors applied
# at many layers compound through the residual stream (on Gemma, langvec-mid and staged at
# strength 1 turned every dev continuation into a loop), so those are screened weaker. "all" is
# every layer (INCLINE).
CONFIGS: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "contrastive-auto": ("contrastive", "auto", (0.5, 1.0)),  # the default until now
    "langvec-middle": ("langvec", "middle", (0.5, 1.0)),
    "lda-middle": ("lda", "middle", (1.0, 2.0)),
    "langvec-mid": ("langvec", "mid", (0.1, 0.25)),
    "staged": ("staged", "stages", (0.1, 0.25)),  # the second stage on generated tokens only, as MRRE
    "staged-all-positions": ("staged", "stages-all", (0.1, 0.25)),  # both stages on every token
    "staged-middle": ("staged", "middle-stages", (0.5, 1.0)),  # langvec-middle, then re-anchored late
    "staged-middle-light": ("staged", "middle-stages", (0.5, 1.0)),  # the same, second stage at 0.2x
    "meanshift-middle": ("meanshift", "middle", (0.5, 1.0)),
    "contrastive-auto-shuffled": ("contrastive", "auto-shuffled", (0.5, 1.0)),  # the control
    "langvec-mid-prompt": ("langvec", "mid", (0.1, 0.25, 0.5)),
    "langvec-middle-prompt": ("langvec", "middle", (0.5, 1.0)),
    "contrastive-auto-prompt": ("contrastive", "auto", (0.5, 1.0)),
    "incline-all": ("incline", "all", (0.25, 0.5, 1.0)),  # as published: at the last prompt token
    "ridge-auto": ("ridge", "auto", (0.5, 1.0)),
    "contrastive-auto-stories": ("contrastive", "auto", (0.5, 1.0)),  # fitted on in-domain story pairs
}
# Configs that apply another config's transform to the prompt's tokens only (position policy
# "prompt"): the answer's own tokens are left as the model makes them and only read the aligned
# prompt through attention, which may keep the answer in the prompt's language.
PROMPT_ONLY = {"langvec-mid-prompt": "langvec-mid", "langvec-middle-prompt": "langvec-middle",
               "contrastive-auto-prompt": "contrastive-auto"}
# the position policy of each config not applied to every token
POSITIONS = {"incline-all": "last", **{name: "prompt" for name in PROMPT_ONLY}}
DESCRIPTIONS = {
    "contrastive-auto": "contrastive map at the layer chosen on held-out retrieval (fit's default)",
    "langvec-middle": "language vector (ReCoVeR, norms kept) at the middle layer",
    "lda-middle": "LDA language direction (ITLC) at the middle layer",
    "langvec-mid": "language vector at every layer from a quarter to two thirds of the depth",
    "staged": "langvec-mid toward English, then the reverse vector at the last sixth on generated tokens only (MRRE)",
    "staged-all-positions": "staged with its second stage on every token (before transforms had generated-only layers)",
    "staged-middle": "langvec-middle toward English, then staged's second stage on generated tokens only",
    "staged-middle-light": "staged-middle with its second stage at a fifth of the first's strength (--anchor-strength 0.2)",
    "meanshift-middle": "mean difference added at the middle layer",
    "contrastive-auto-shuffled": "contrastive-auto fitted on shuffled pairs (the control)",
    "incline-all": "INCLINE as published: least-squares map (no bias) at every layer, at the prompt's last token only",
    "ridge-auto": "ridge map (lambda chosen on held-out pairs) at the layer chosen on held-out retrieval",
    "contrastive-auto-stories": "contrastive-auto fitted on the sentences of the XStoryCloze dev stories outside "
                                f"the {STORY_DEV_N}-story dev sample (in-domain pairs, instead of SIB-200 train)",
    **{name: f"{base} on the prompt's tokens only (the options' and generated tokens untouched)"
       for name, base in PROMPT_ONLY.items()},
}
# staged's second stage as a multiple of the first's strength (fit's anchor_strength; default 1)
ANCHOR_STRENGTH = {"staged-middle-light": 0.2}
DEFAULT_CONFIGS = ("contrastive-auto", "langvec-middle", "lda-middle", "langvec-mid", "staged")


def record(path: Path, rec: dict[str, Any]) -> None:
    rec["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"  {path.stem}: " + ", ".join(f"{k} {v:.3f}" for k, v in rec.get("summary", {}).items()), flush=True)


def story_sentences(lang: str) -> list[str]:
    """The sentences (the four of the story and both endings) of the XStoryCloze dev stories
    outside the STORY_DEV_N-story dev sample, in file order. The files of all languages hold the
    same stories with the same labels, so the sample, and these sentences, are parallel."""
    from lingalign.tasks import load_task

    dev = dev_file("xstorycloze", lang)
    scored = {it.uid for it in load_task(dev, limit=STORY_DEV_N, seed=0).items}
    return [text for it in load_task(dev).items if it.uid not in scored
            for text in (*(v for _, v in it.fields), *it.options)]


def story_captures(llm: Any, model: str, lang: str) -> Any:
    """story_sentences(lang) captured at every layer, cached."""
    return cached_capture(llm, CACHE / model / f"xstorycloze-{lang}-fit.npz", lambda: story_sentences(lang),
                          f"XStoryCloze {lang} sentences")


def fit_pairs(llm: Any, model: str, name: str, lang: str) -> tuple[Any, Any, str]:
    """The config's fitting pairs for the language (source and English captures) and their name."""
    if name.endswith("-stories"):
        X, Y = story_captures(llm, model, lang), story_captures(llm, model, "en")
        if len(X) != len(Y):
            raise SystemExit(f"XStoryCloze {lang} and en dev files hold different stories "
                             f"({len(X)} != {len(Y)} sentences)")
        return X, Y, f"XStoryCloze dev stories outside the {STORY_DEV_N}-story dev sample"
    sib = SIB_OF[lang]
    return captures(llm, model, sib), captures(llm, model, "eng_Latn"), "SIB-200 train"


def fit_config(name: str, X: Any, Y: Any, lang: str, n_layer: int, data: str = "SIB-200 train") -> Any:
    import lingalign
    from lingalign.blas import blas_threads
    from lingalign.fit import choose_layer, default_stages, shuffled_pairs

    method, where, _ = CONFIGS[name]
    align, anchor = default_stages(range(n_layer), n_layer)
    info: dict[str, Any] = {"data": data, "pairs": len(X), "config": name}
    with blas_threads():
        if where.startswith("auto"):
            if where.endswith("shuffled"):
                Y = Y.rows(shuffled_pairs(len(Y)))
                info["control"] = "shuffled pairs (seed 0)"
            layer, alpha, choice = choose_layer(X, Y, method=method)
            info["layer_choice"] = choice
            return lingalign.Transform.fit(X, Y, method=method, layers=[layer], source_lang=lang, fit_info=info)
        layers = {"mid": align, "middle": [n_layer // 2], "stages": align, "stages-all": align,
                  "middle-stages": [n_layer // 2], "all": list(range(n_layer))}[where]
        extra = {"anchor_layers": anchor, "anchor_strength": ANCHOR_STRENGTH.get(name, 1.0)} if method == "staged" else {}
        t = lingalign.Transform.fit(X, Y, method=method, layers=layers, source_lang=lang, fit_info=info, **extra)
        return dataclasses.replace(t, generated_layers=()) if where == "stages-all" else t


def configured(llm: Any, model: str, name: str, lang: str, alpha: float) -> Any:
    """The config's transform for the language at strength alpha, with the config's position policy."""
    t = transform_for(llm, model, PROMPT_ONLY.get(name, name), lang)
    return dataclasses.replace(t, alpha=alpha, positions=POSITIONS.get(name, "all"))


def transform_for(llm: Any, model: str, name: str, lang: str) -> Any:
    import lingalign
    from lingalign import _llama

    sib = SIB_OF[lang]
    path = RESULTS / model / "transforms" / f"{sib}-{name}.gguf"
    if path.is_file():
        return lingalign.Transform.load(path)
    X, Y, data = fit_pairs(llm, model, name, lang)
    t0 = time.time()
    t = fit_config(name, X, Y, sib.split("_")[0], _llama.n_layer(llm), data)
    print(f"  fitted {name} for {sib} in {time.time() - t0:.1f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    t.save(path)
    return t


def screen(args: argparse.Namespace, llm: Any) -> None:
    """Each config x alpha on each language's dev data: accuracy and fidelity."""
    from lingalign.evaluate import eval_choice
    from lingalign.fidelity import eval_fidelity, read_prompts
    from lingalign.tasks import load_task

    out = RESULTS / args.model
    command = " ".join(["python bench/methods.py", *sys.argv[1:]])
    for lang in args.langs:
        dev = dev_file("xstorycloze", lang)
        items = load_task(dev, limit=args.dev_n, seed=0)
        prompts = read_prompts(dev, limit=args.fid_n, seed=1)
        for name in ["none", *args.configs]:
            for alpha in ([0.0] if name == "none" else (args.alphas or CONFIGS[name][2])):
                key = f"dev-{lang}-{name}-{alpha:g}" + ("" if args.dev_n == DEV_N else f"-n{args.dev_n}")
                if (out / f"{key}.json").is_file():
                    continue
                t = None if name == "none" else configured(llm, args.model, name, lang, alpha)
                t0 = time.time()
                acc = eval_choice(llm, items, transform=t)
                fid = eval_fidelity(llm, prompts, lang, transform=t, max_tokens=args.fid_tokens)
                side = fid["with"] if t is not None else fid["without"]
                record(out / f"{key}.json", {
                    "command": command, "model": args.model, "split": "dev", "lang": lang, "config": name,
                    "alpha": alpha, "n": len(items), "n_fidelity": len(prompts), "accuracy": acc["accuracy"],
                    "accuracy_norm": acc["accuracy_norm"], "correct": acc["correct"], "fidelity": side,
                    "examples": fid["examples"][:2],
                    "seconds": round(time.time() - t0, 1),
                    "summary": {"accuracy": acc["accuracy"], "fidelity": side["fidelity"], "looping": side["looping"]}})


def _dev_records(model: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((RESULTS / model).glob("dev-*.json"))]


def choose_rule(model: str) -> dict[str, Any] | None:
    """The config and alpha with the best mean dev accuracy over the languages screened with it,
    among those whose fidelity stays within MAX_FIDELITY_DROP of no transform's in every one."""
    recs = [r for r in _dev_records(model) if r["n"] == DEV_N]
    base = {r["lang"]: r for r in recs if r["config"] == "none"}
    by: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in recs:
        if r["config"] != "none" and r["lang"] in base and not r["config"].endswith("shuffled"):
            by.setdefault((r["config"], r["alpha"]), []).append(r)
    langs = set(base)
    best = None
    for (name, alpha), rs in sorted(by.items()):
        if {r["lang"] for r in rs} != langs:
            continue  # not screened on every language yet
        keeps = all(r["fidelity"]["fidelity"] >= base[r["lang"]]["fidelity"]["fidelity"] - MAX_FIDELITY_DROP for r in rs)
        gain = sum(r["accuracy"] - base[r["lang"]]["accuracy"] for r in rs) / len(rs)
        if keeps and (best is None or (gain, -abs(alpha)) > (best["dev_gain"], -abs(best["alpha"]))):
            best = {"config": name, "alpha": alpha, "dev_gain": gain, "langs": sorted(langs)}
    return best


def test_rule(args: argparse.Namespace, llm: Any) -> None:
    """The rule chosen on dev, unchanged, on the test splits (XStoryCloze, SIB-200) of each language."""
    import dataclasses

    from lingalign.evaluate import eval_choice
    from lingalign.fidelity import eval_fidelity, read_prompts
    from lingalign.tasks import load_task

    rule = choose_rule(args.model) if not args.rule else {"config": args.rule.split(":")[0],
                                                          "alpha": float(args.rule.split(":")[1]), "dev_gain": None}
    if rule is None:
        raise SystemExit("no rule: screen the dev languages first (and one config must keep fidelity)")
    print(f"rule: {rule}", flush=True)
    out = RESULTS / args.model
    command = " ".join(["python bench/methods.py", *sys.argv[1:]])
    for lang in args.langs:
        t = configured(llm, args.model, rule["config"], lang, rule["alpha"])
        t = t.to_precision(args.precision)  # what is measured is what ships (--ship)
        t = dataclasses.replace(t, fit_info={**t.fit_info, "rule": rule, "precision": args.precision})
        tested = out / "transforms" / f"{SIB_OF[lang]}-rule.gguf"
        t.save(tested)
        for task, code in (("xstorycloze", lang), ("sib200", SIB_OF[lang])):
            key = f"test-{task}-{code}-{rule['config']}-{rule['alpha']:g}"
            if (out / f"{key}.json").is_file() or task not in args.test_tasks:
                continue
            base = DOWNSTREAM / args.model / f"{task}-{code}-likelihood-none.json"
            if not base.is_file():
                print(f"  {task} {code}: no baseline record (run bench/downstream.py first); skipped")
                continue
            n = json.loads(base.read_text(encoding="utf-8"))["n"]
            items = load_task(test_file(task, code), limit=n, seed=0)
            t0 = time.time()
            acc = eval_choice(llm, items, transform=t)
            rec: dict[str, Any] = {"command": command, "model": args.model, "split": "test", "task": task, "lang": code,
                                   "rule": rule, "n": len(items), "accuracy": acc["accuracy"],
                                   "accuracy_norm": acc["accuracy_norm"]}
            fid_base = DOWNSTREAM / args.model / f"{task}-{code}-fidelity-none.json"
            if fid_base.is_file():
                nf = json.loads(fid_base.read_text(encoding="utf-8"))["n"]
                fid = eval_fidelity(llm, read_prompts(test_file(task, code), limit=nf), code, transform=t, max_tokens=48)
                rec["fidelity"] = fid["with"]
                rec["fidelity_without"] = fid["without"]
                rec["examples"] = fid["examples"][:2]
            rec["seconds"] = round(time.time() - t0, 1)
            rec["summary"] = {"accuracy": rec["accuracy"], **({"fidelity": rec["fidelity"]["fidelity"]} if "fidelity" in rec else {})}
            record(out / f"{key}.json", rec)


def ship(model: str) -> None:
    """matrices/<model>/<lang>-eng.gguf: the transforms measured on test with the rule, and a
    manifest with their data, settings and test numbers."""
    import shutil

    from language_check import shipped_check

    import lingalign

    out = RESULTS / model
    dest = ROOT / "matrices" / model
    dest.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"command": f"python bench/methods.py --model {model} --ship", "transforms": {}}
    tests = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("test-*.json"))]
    for tested in sorted((out / "transforms").glob("*-rule.gguf")):
        sib = tested.name.split("-")[0]
        code = sib.split("_")[0]
        t = lingalign.Transform.load(tested)
        measured = {f"{r['task']} {r['lang']} test": {
            "n": r["n"], "accuracy": r["accuracy"],
            "accuracy_without": json.loads((DOWNSTREAM / model / f"{r['task']}-{r['lang']}-likelihood-none.json")
                                           .read_text(encoding="utf-8"))["result"]["accuracy"],
            **({"fidelity": r["fidelity"]["fidelity"], "fidelity_without": r["fidelity_without"]["fidelity"]}
               if "fidelity" in r else {})}
            for r in tests if r["lang"] in (sib, *[k for k, v in SIB_OF.items() if v == sib])
            and r["rule"]["config"] == t.fit_info["rule"]["config"]}
        shutil.copyfile(tested, dest / f"{code}-eng.gguf")
        manifest["model"] = t.model.to_dict()
        manifest["transforms"][code] = {
            "file": f"{code}-eng.gguf", "bytes": tested.stat().st_size, "method": t.method,
            "layers": sorted(t.layers), "alpha": t.alpha, "positions": t.positions, "precision": t.fit_info["precision"],
            "fit": f"SIB-200 {sib} train + eng_Latn train ({t.fit_info.get('pairs')} pairs)",
            "rule": t.fit_info["rule"], "measured": measured, "check": shipped_check(model, code)}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {dest}")


def larger_dev_table(model: str, recs: list[dict[str, Any]]) -> list[str]:
    """Screened settings checked on a larger dev sample: accuracy against no transform on the same
    items, with the one-sided sign test `tune` applies (items fixed against items broken)."""
    from lingalign.metrics import changed_answers, sign_test_p

    larger = [r for r in recs if r["n"] != DEV_N]
    base = {(r["lang"], r["n"]): r for r in larger if r["config"] == "none"}
    rows = []
    for r in sorted(larger, key=lambda r: (r["lang"], r["n"], r["config"] != "none", r["config"], r["alpha"])):
        b, f = base.get((r["lang"], r["n"])), r["fidelity"]
        en = base.get(("en", r["n"]))
        test = " | | "  # no transform itself, or no no-transform record to compare with
        if b is not None and r is not b:
            fixed, broken = changed_answers(r["correct"], b["correct"])
            test = f"{fixed} / {broken} | {sign_test_p(fixed, broken):.3f} | {english_right(r, b, en)}"
        elif r is b and en is not None and r is not en:
            wrong = [not c for c in b["correct"]]
            test = f" | | {sum(w and e for w, e in zip(wrong, en['correct']))} of {sum(wrong)} wrong"
        rows.append(f"| {r['lang']} | {r['config']} | {r['alpha']:g} | {r['n']} | {r['accuracy']:.3f} | {test} | "
                    f"{f['fidelity']:.2f} | {f['looping']:.2f} |")
    if not rows:
        return []
    return ["", f"## {model}: screened settings on a larger dev sample", "",
            "Fixed / broken: dev items the setting answers right and no transform wrong, and the reverse; p: the "
            "one-sided sign test `lingalign tune` requires below 0.05 before it keeps a setting. *English right*: "
            "of the fixed and of the broken items, how many the model answers right when it reads the same story "
            "in English (language en); on the no-transform rows, of the items answered wrong. A transform that "
            "lets the model read the language as it reads English would fix mostly items English gets right.", "",
            "| language | method | alpha | n | accuracy | fixed / broken | p | English right | fidelity | looping |",
            "|---|---|---|---|---|---|---|---|---|---|", *rows]


def english_right(r: dict[str, Any], base: dict[str, Any], en: dict[str, Any] | None) -> str:
    """'f / b': of the items r fixes and of those it breaks against base, how many the English
    record answers right ('' without an English record of the same items)."""
    if en is None:
        return ""
    fixed = sum(c and not b and e for c, b, e in zip(r["correct"], base["correct"], en["correct"]))
    broken = sum(b and not c and e for c, b, e in zip(r["correct"], base["correct"], en["correct"]))
    return f"{fixed} / {broken}"


def report() -> None:
    lines = ["# Methods side by side, downstream", "",
             "Made by `python bench/methods.py` (records in `bench/results/methods/<model>/`); this page by "
             "`python bench/methods.py --report`. Each method fitted on the 701 SIB-200 train pairs of the "
             "language unless it says otherwise; *dev*: XStoryCloze train (its dev split), a seeded stratified "
             "sample, option log-likelihood, every position unless the method says otherwise; fidelity: share of greedy "
             "continuations of dev stories in the story's language (py3langid), and of looping ones. The "
             "standard error of an accuracy p on n items is sqrt(p(1-p)/n): about 0.08 at n = 40.", "",
             "Methods: " + "; ".join(f"*{name}*: {DESCRIPTIONS[name]}" for name in CONFIGS) + ".", ""]
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        model = model_dir.name
        recs = _dev_records(model)
        if not recs:
            continue
        lines += [f"## {model}: dev screening", "", "| language | method | alpha | n | accuracy | fidelity | looping |",
                  "|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in recs if r["n"] == DEV_N),
                        key=lambda r: (r["lang"], r["config"] != "none", r["config"], r["alpha"])):
            f = r["fidelity"]
            lines.append(f"| {r['lang']} | {r['config']} | {r['alpha']:g} | {r['n']} | {r['accuracy']:.3f} | "
                         f"{f['fidelity']:.2f} | {f['looping']:.2f} |")
        lines += larger_dev_table(model, recs)
        rule = choose_rule(model)
        lines += ["", f"Rule chosen on dev (best mean dev gain with fidelity within {MAX_FIDELITY_DROP:.0%} of no "
                  f"transform's): {json.dumps(rule)}", ""]
        tests = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(model_dir.glob("test-*.json"))]
        if tests:
            lines += [f"## {model}: the rule on test", "",
                      "| task | language | rule | n | no transform | with | English | gap closed | fidelity without -> with | looping without -> with |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in tests:
                task, code = r["task"], r["lang"]
                base = json.loads((DOWNSTREAM / model / f"{task}-{code}-likelihood-none.json").read_text(encoding="utf-8"))
                en_path = DOWNSTREAM / model / f"{task}-en-likelihood-english.json"
                en = json.loads(en_path.read_text(encoding="utf-8"))["result"]["accuracy"] if en_path.is_file() else None
                b = base["result"]["accuracy"]
                closed = f"{(r['accuracy'] - b) / (en - b):+.0%}" if en is not None and en > b else ""
                se = math.sqrt(max(b * (1 - b), 1e-9) / r["n"])
                fid = (f"{r['fidelity_without']['fidelity']:.2f} -> {r['fidelity']['fidelity']:.2f}" if "fidelity" in r else "")
                loop = (f"{r['fidelity_without']['looping']:.2f} -> {r['fidelity']['looping']:.2f}" if "fidelity" in r else "")
                lines.append(f"| {task} | {code} | {r['rule']['config']} {r['rule']['alpha']:g} | {r['n']} | {b:.3f} (se {se:.3f}) | "
                             f"{r['accuracy']:.3f} | {'' if en is None else f'{en:.3f}'} | {closed} | {fid} | {loop} |")
            lines.append("")
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--langs", default="sw", help="XStoryCloze languages, comma-separated")
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--alphas", default=None, help="strengths to screen (default: each config's own)")
    ap.add_argument("--dev-n", type=int, default=DEV_N, help="dev stories; other than 40: a check of screened "
                    "settings on a larger sample, recorded apart, with a sign test against no transform")
    ap.add_argument("--fid-n", type=int, default=8)
    ap.add_argument("--fid-tokens", type=int, default=32)
    ap.add_argument("--test", action="store_true", help="measure the rule chosen on dev on the test splits")
    ap.add_argument("--test-tasks", default="xstorycloze,sib200")
    ap.add_argument("--rule", default=None, help="CONFIG:ALPHA to test instead of the rule chosen on dev")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="q8", help="of the transforms measured on test and shipped")
    ap.add_argument("--ship", action="store_true", help="copy the transforms measured on test into matrices/<model>/")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "python"))
    if args.report:
        report()
        return
    if args.ship:
        ship(args.model)
        return
    args.langs = args.langs.split(",")
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown} (of {', '.join(CONFIGS)})")
    args.alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else None
    args.test_tasks = args.test_tasks.split(",")
    from lingalign.hook import open_model

    llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    if args.test:
        test_rule(args, llm)
    else:
        screen(args, llm)


if __name__ == "__main__":
    main()
