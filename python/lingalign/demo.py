"""`lingalign demo`: what lingalign does, measured, with nothing to download or prepare.

1. Retrieval (the default model): for each embedded language, a transform fitted the way
   `lingalign fit` fits by default, on 160 sentence pairs of the embedded corpus, then the 80
   held-out sentences re-read with it applied inside llama.cpp: how much closer they come to
   their English translations at the transform's layer.
2. An answer: one Swahili question answered greedily without and with the Swahili transform,
   and read through the shipped Swahili lexicon (its word-by-word English gloss before it),
   each labelled with its detected language and whether it loops, so a wrong-language or
   looping answer is never shown as a success.
3. A task, when its data is there (`--task-data`, or ../shared/data from the working
   directory): a few dozen XStoryCloze stories and SIB-200 sentences in Swahili scored without
   and with the transform and the lexicon, against the same items in English.
4. Does the model read Swahili? `lingalign check` on held-out embedded sentences: the model's own
   English translations scored with chrF against the real ones. Where it barely reads the
   language, no transform here has made its answers better (docs/language_check.md).

With another known model (`--model qwen2.5-coder-1.5b`) the retrieval table is left out (it
re-reads 1,900 sentences at every layer: minutes on a laptop) and the transform is the one
shipped for that model, or, without one, fitted on the embedded corpus.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .capturing import capture
from .data import EMBEDDED_LANGUAGES, LANGUAGE_NAMES, embedded_path, read_lines, shipped_dir, shipped_model_name
from .fidelity import describe_answer
from .fit import DEFAULT_ALPHA, DEFAULT_METHOD, FIDELITY_CHECK_PROMPTS, choose_layer, stored_alpha
from .hook import attach, open_model
from .lexicon import shipped_lexicon
from .metrics import pair_cosine_distance, retrieval_top1
from .models import DEFAULT_MODEL
from .transform import Transform

N_FIT = 160
N_TASK = 24
N_CHECK = 12
DEMO_PROMPT = ("swh", "Swali: Jua huchomoza upande gani?\nJibu:")
TASK_FILES = ("xstorycloze/sw.eval.tsv", "xstorycloze/en.eval.tsv")
SIB_FILES = ("sib200/swh_Latn/test.tsv", "sib200/eng_Latn/test.tsv")
N_SIB = 56  # 8 sentences of each of SIB-200's 7 topics


def fit_as_fit_does(src: Any, tgt: Any, lang: str) -> Transform:
    """`lingalign fit`'s default: DEFAULT_METHOD at the layer where it helps held-out retrieval most,
    at the strength fit stores (stored_alpha)."""
    layer, alpha, record = choose_layer(src, tgt, method=DEFAULT_METHOD)
    return Transform.fit(src, tgt, method=DEFAULT_METHOD, layers=[layer], source_lang=lang,
                         alpha=stored_alpha(DEFAULT_METHOD, alpha),
                         fit_info={"data": "embedded", "pairs": len(src), "layer_choice": record})


def _retrieval_table(llm: Any) -> dict[str, Transform]:
    eng = read_lines(embedded_path("eng"))
    print(f"1. Retrieval. Per language: {DEFAULT_METHOD} (lingalign fit's default) at the layer where it helps "
          f"held-out retrieval most,\n   fitted on {N_FIT} sentence pairs of the embedded corpus and measured on "
          f"the {len(eng) - N_FIT} held-out pairs,\n   with the transform applied inside llama.cpp at alpha "
          f"{DEFAULT_ALPHA:g} (before fit's fidelity check, which may lower it: see 2).\n")
    english = capture(llm, eng)
    fit_rows = slice(0, N_FIT)
    print(f"{'language':<12} {'layer':>5} {'top-1 to English':>18} {'translation distance':>24}")
    print(f"{'':<12} {'':>5} {'before':>8} {'after':>9} {'before':>12} {'after':>11}")
    transforms = {}
    sums = [0.0, 0.0, 0.0, 0.0]
    langs = [lang for lang in EMBEDDED_LANGUAGES if lang != "eng"]
    for lang in langs:
        sentences = read_lines(embedded_path(lang))
        src = capture(llm, sentences)
        t = fit_as_fit_does(src.rows(fit_rows), english.rows(fit_rows), lang)
        transforms[lang] = t
        (layer,) = t.layers
        held_eng = english.layer(layer)[N_FIT:]
        moved = capture(llm, sentences[N_FIT:], layers=[layer], transform=t).layer(layer)
        held = src.layer(layer)[N_FIT:]
        row = (retrieval_top1(held, held_eng)[0], retrieval_top1(moved, held_eng)[0],
               pair_cosine_distance(held, held_eng), pair_cosine_distance(moved, held_eng))
        sums = [a + b for a, b in zip(sums, row)]
        print(f"{LANGUAGE_NAMES[lang]:<12} {layer:>5} {row[0]:>8.3f} {row[1]:>9.3f} {row[2]:>12.4f} {row[3]:>11.4f}")
        sys.stdout.flush()
    n = len(langs)
    print(f"{'mean':<12} {'':>5} {sums[0] / n:>8.3f} {sums[1] / n:>9.3f} {sums[2] / n:>12.4f} {sums[3] / n:>11.4f}")
    print("(top-1: share of held-out sentences whose nearest English sentence, by cosine, is their translation;")
    print(" distance: mean cosine distance between a sentence and its translation. Higher / lower is closer.)\n")
    return transforms


def _swahili_transform(llm: Any, model: str | None) -> tuple[Transform, str]:
    """The shipped Swahili transform of a known model, or one fitted on the embedded corpus."""
    path = shipped_dir(model) / "swh-eng.gguf"
    if path.is_file():
        return Transform.load(path), f"shipped for {shipped_model_name(model)} ({path.name})"
    eng, swh = read_lines(embedded_path("eng"))[:N_FIT], read_lines(embedded_path("swh"))[:N_FIT]
    return _guarded(llm, fit_as_fit_does(capture(llm, swh), capture(llm, eng), "swh"),
                    f"fitted on {N_FIT} embedded pairs")


def _guarded(llm: Any, t: Transform, where: str) -> tuple[Transform, str]:
    """The transform after fit's fidelity check (answers to its first source sentences must stay
    in their language), and where it came from."""
    from .tune import guard_strength

    guarded = guard_strength(llm, t, read_lines(embedded_path(t.source_lang))[:FIDELITY_CHECK_PROMPTS], t.source_lang)
    if guarded.alpha == t.alpha:
        return guarded, f"{where}; fit's fidelity check kept alpha {t.alpha:g}"
    return guarded, f"{where}; fit's fidelity check lowered alpha {t.alpha:g} to {guarded.alpha:g}"


def _answers(llm: Any, steering: Any, t: Transform, where: str) -> None:
    lang, prompt = DEMO_PROMPT
    print(f"2. An answer ({LANGUAGE_NAMES[lang]} prompt, greedy, 24 tokens; the Swahili transform {where},\n"
          f"   {t.method} at layer(s) {', '.join(map(str, sorted(t.layers)))}, alpha {t.alpha:g}, positions {t.positions}):")
    print(f"  prompt:  {prompt!r}")
    steering.clear()
    plain = llm(prompt, max_tokens=24, temperature=0)["choices"][0]["text"]
    steering.set(t)
    steered = llm(prompt, max_tokens=24, temperature=0)["choices"][0]["text"]
    steering.clear()
    verdict = describe_answer(steered, lang)
    print(f"  plain:   {plain!r}  ({describe_answer(plain, lang)})")
    print(f"  aligned: {steered!r}  ({verdict})")
    if verdict != f"in {LANGUAGE_NAMES[lang]}":
        print("  The aligned answer is not a good Swahili answer: see docs/downstream.md for how often this happens.")
    lexicon = shipped_lexicon("swh")
    if lexicon is not None:
        read = lexicon.annotate(prompt)
        glossed = llm(read, max_tokens=24, temperature=0)["choices"][0]["text"]
        print(f"  read through the shipped Swahili lexicon ({len(lexicon)} words; the model reads {read!r}):")
        print(f"  lexicon: {glossed!r}  ({describe_answer(glossed, lang)})")
    print()


def find_task_data(task_data: str | None) -> tuple[Path, Path] | None:
    """The Swahili and English XStoryCloze test files: given, or under ../shared/data."""
    if task_data:
        base = Path(task_data)
        return (base / TASK_FILES[0], base / TASK_FILES[1]) if base.is_dir() else (base, base.with_name("en.eval.tsv"))
    base = Path("..") / "shared" / "data"
    files = (base / TASK_FILES[0], base / TASK_FILES[1])
    return files if all(f.is_file() for f in files) else None


def _task_rows(llm: Any, t: Transform, files: tuple[Path, Path], n: int, what: str) -> None:
    from .evaluate import eval_choice
    from .tasks import load_task

    sw, en = load_task(files[0], limit=n, seed=0), load_task(files[1], limit=n, seed=0)
    print(f"  {len(sw.items)} {what}, from {files[0]}:")
    r = eval_choice(llm, sw, english=en, transform=t)
    se = (r["accuracy_without"] * (1 - r["accuracy_without"]) / len(sw.items)) ** 0.5
    line = (f"    Swahili without: {r['accuracy_without']:.3f}   with the transform: {r['accuracy']:.3f}   ")
    lexicon = shipped_lexicon("swh")
    if lexicon is not None:
        g = eval_choice(llm, sw, lexicon=lexicon)
        line += f"with the lexicon: {g['accuracy']:.3f}   "
    print(line + f"English: {r['english_accuracy']:.3f}   (standard error about {se:.2f} at this size)")


def _task(llm: Any, t: Transform, files: tuple[Path, Path]) -> None:
    print("3. Tasks (the option with the highest log-likelihood; the lexicon: each item read with its "
          "word-by-word English gloss before it)")
    _task_rows(llm, t, files, N_TASK, "XStoryCloze test stories (which ending fits)")
    base = files[0].parent.parent
    sib = (base / SIB_FILES[0], base / SIB_FILES[1])
    if all(f.is_file() for f in sib):
        _task_rows(llm, t, sib, N_SIB, "SIB-200 test sentences (which of 7 topics)")
    print("  Larger measurements, per language and method: docs/downstream.md, docs/methods.md and docs/gloss.md.\n")


def _reads(llm: Any) -> None:
    from .language_check import check_language

    eng, swh = read_lines(embedded_path("eng"))[N_FIT:], read_lines(embedded_path("swh"))[N_FIT:]
    r = check_language(llm, swh[:N_CHECK], eng[:N_CHECK], "swh")
    print(f"4. Does the model read Swahili? (lingalign check: {r.n} held-out embedded sentences translated into "
          "English, greedy)")
    print(f"  chrF against the real English: {r.chrf:.1f}   untranslated: {r.chrf_untranslated:.1f}")
    print(f"  e.g. {swh[0]!r} -> {r.translations[0]!r}")
    print(f"  {r.verdict()}\n")


def run_demo(model: str | None = None, threads: int | None = None, n_gpu_layers: int = 0,
             task_data: str | None = None) -> int:
    start = time.time()
    llm = open_model(model, n_ctx=1024, n_threads=threads, n_gpu_layers=n_gpu_layers)
    steering = attach(llm)
    fp = steering.model
    print(f"lingalign demo on {fp.name or fp.architecture} ({fp.n_layer} layers, n_embd {fp.n_embd})\n")
    if shipped_model_name(model) == DEFAULT_MODEL:
        t, where = _guarded(llm, _retrieval_table(llm)["swh"], "of the table above")
    else:
        t, where = _swahili_transform(llm, model)
    _answers(llm, steering, t, where)
    files = find_task_data(task_data)
    if files is None:
        print("3. A task: no XStoryCloze data found (give --task-data DIR with xstorycloze/sw.eval.tsv and en.eval.tsv)\n")
    else:
        _task(llm, t, files)
    _reads(llm)
    print(f"done in {time.time() - start:.0f} s")
    return 0
