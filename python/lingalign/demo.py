"""`lingalign demo`: fit, apply and measure on the embedded corpus, with the default model.

For each embedded language: capture the last layer's residual stream for 240 sentences and
their English translations, fit a ridge map on the first 160 pairs, then re-read the 80
held-out sentences with the map applied inside llama.cpp and measure how much closer they come
to their English translations. Ends with one generation with and without the intervention.
"""

from __future__ import annotations

import sys
import time

from .capturing import capture
from .data import EMBEDDED_LANGUAGES, LANGUAGE_NAMES, embedded_path, read_lines
from .hook import attach, open_model
from .metrics import pair_cosine_distance, retrieval_top1
from .transform import Transform

N_FIT = 160
DEMO_PROMPT = ("swh", "Swali: Jua huchomoza upande gani?\nJibu:")


def run_demo(model: str | None = None, threads: int | None = None, n_gpu_layers: int = 0) -> int:
    start = time.time()
    llm = open_model(model, n_ctx=1024, n_threads=threads, n_gpu_layers=n_gpu_layers)
    steering = attach(llm)
    fp = steering.model
    last = fp.n_layer - 1
    eng = read_lines(embedded_path("eng"))
    print(f"lingalign demo on {fp.name or fp.architecture} ({fp.n_layer} layers, n_embd {fp.n_embd})")
    print(
        f"Per language: a ridge map at layer {last} fitted on {N_FIT} sentence pairs of the embedded corpus;\n"
        f"measured on the {len(eng) - N_FIT} held-out pairs, with the map applied inside llama.cpp.\n"
    )
    english = capture(llm, eng, layers=[last])
    held_eng = english.layer(last)[N_FIT:]
    print(f"{'language':<12} {'top-1 to English':>18} {'translation distance':>24}")
    print(f"{'':<12} {'before':>8} {'after':>9} {'before':>12} {'after':>11}")
    transforms = {}
    sums = [0.0, 0.0, 0.0, 0.0]
    langs = [lang for lang in EMBEDDED_LANGUAGES if lang != "eng"]
    for lang in langs:
        sentences = read_lines(embedded_path(lang))
        src = capture(llm, sentences, layers=[last])
        fit_rows = slice(0, N_FIT)
        t = Transform.fit(src.rows(fit_rows), english.rows(fit_rows), method="ridge", source_lang=lang,
                          fit_info={"data": "embedded", "pairs": N_FIT})
        transforms[lang] = t
        moved = capture(llm, sentences[N_FIT:], layers=[last], transform=t).layer(last)
        held = src.layer(last)[N_FIT:]
        row = (
            retrieval_top1(held, held_eng)[0],
            retrieval_top1(moved, held_eng)[0],
            pair_cosine_distance(held, held_eng),
            pair_cosine_distance(moved, held_eng),
        )
        sums = [a + b for a, b in zip(sums, row)]
        print(f"{LANGUAGE_NAMES[lang]:<12} {row[0]:>8.3f} {row[1]:>9.3f} {row[2]:>12.4f} {row[3]:>11.4f}")
        sys.stdout.flush()
    n = len(langs)
    print(f"{'mean':<12} {sums[0] / n:>8.3f} {sums[1] / n:>9.3f} {sums[2] / n:>12.4f} {sums[3] / n:>11.4f}")
    print("(top-1: share of held-out sentences whose nearest English sentence, by cosine, is their translation;")
    print(" distance: mean cosine distance between a sentence and its translation. Higher / lower is closer.)\n")

    lang, prompt = DEMO_PROMPT
    print(f"Generation ({LANGUAGE_NAMES[lang]} prompt, greedy, 24 tokens):")
    print(f"  prompt:  {prompt!r}")
    steering.clear()
    plain = llm(prompt, max_tokens=24, temperature=0)["choices"][0]["text"]
    steering.set(transforms[lang], alpha=0.5, positions="last")
    steered = llm(prompt, max_tokens=24, temperature=0)["choices"][0]["text"]
    steering.clear()
    print(f"  plain:   {plain!r}")
    print(f"  aligned: {steered!r}  (alpha 0.5 on the last prompt token)")
    print(f"\ndone in {time.time() - start:.0f} s")
    return 0
