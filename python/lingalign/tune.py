"""`lingalign tune`: choose a transform's strength, position policy and layers on dev data.

The chosen settings become the transform's defaults (written into its metadata), so `run` and
`eval` use them unless flags override. The dev score of every candidate and of no transform at
all is recorded in fit_info["tuned"]. Tuning refuses files named like test splits.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .capturing import capture
from .errors import LingalignError
from .evaluate import eval_choice
from .metrics import changed_answers, retrieval_top1, sign_test_p
from .transform import Transform

ALPHAS = (-1.0, -0.5, -0.25, 0.25, 0.5, 0.75, 1.0)
METRICS = ("retrieval", "choice")
# choice: the evidence a setting needs on dev (sign test of the items it fixes against those it
# breaks). On 40 items a one-item gain is noise: on Qwen such gains became 3-5 point test losses.
MAX_P = 0.05


def refuse_test_data(path: str | os.PathLike[str]) -> None:
    name = Path(path).name.lower()
    test_like = (name.startswith(("test.", "test_", "eval.")) or ".test." in name or "_test." in name
                 or ".eval." in name)  # XCOPA test.sw.jsonl, SIB-200 test.tsv, XStoryCloze sw.eval.tsv
    if test_like:
        raise LingalignError(f"refusing to tune on {Path(path).name}: it looks like test data (tune on val/dev data)")


def layer_subsets(layers: Sequence[int], stages: dict[str, list[int]] | None = None) -> list[list[int]]:
    """All of the transform's layers, and each layer alone when there are a few; for a staged
    transform, all and each stage alone."""
    layers = sorted(layers)
    out = [layers]
    if stages:
        out += [sorted(stage) for stage in stages.values() if stage and sorted(stage) != layers]
    elif 1 < len(layers) <= 6:
        out += [[il] for il in layers]
    return out


def _fidelity(llm: Any, t: Transform | None, prompts: Sequence[str], lang: str, max_tokens: int) -> dict[str, Any]:
    """Answer-language fidelity of greedy answers to prompts, with t applied (None: without)."""
    from .fidelity import generate_answers, steered, summarize

    with steered(llm, t):
        return summarize(generate_answers(llm, prompts, max_tokens=max_tokens), lang)


FAITHFUL_ALPHAS = (0.25, 0.1)  # the gentler strengths the guard falls back to


def faithful_alpha(
    llm: Any,
    transform: Transform,
    prompts: Sequence[str],
    lang: str | None = None,
    *,
    alphas: Sequence[float] = FAITHFUL_ALPHAS,
    max_drop: float = 0.02,
    max_tokens: int = 32,
) -> tuple[float, dict[str, Any]]:
    """The fidelity guard: the strongest of the transform's own alpha and the gentler `alphas`
    at which greedy answers to `prompts` stay in their language as often as without the
    transform (within `max_drop`); 0 (off) when none does. `lang`: the prompts' language (None:
    the language detected in most prompts). Returns (alpha, record).

    Why: the strength that helps retrieval can switch the answers to English (on Gemma 3 270M the
    default map at 0.5 did so in every dev language; docs/downstream.md)."""
    from .fidelity import answer_language

    if not prompts:
        raise LingalignError("the fidelity guard needs prompts in the source language")
    if lang is None:
        found = [code for code in map(answer_language, prompts) if code]
        if not found:
            raise LingalignError("cannot tell the prompts' language; give the source language (--src-lang)")
        lang = max(sorted(set(found)), key=found.count)
    plain = _fidelity(llm, None, prompts, lang, max_tokens)
    record: dict[str, Any] = {"lang": lang, "n": len(prompts), "max_drop": max_drop, "baseline": plain["fidelity"],
                              "tried": []}
    for alpha in [transform.alpha] + sorted((a for a in alphas if abs(a) < abs(transform.alpha)), key=abs, reverse=True):
        f = _fidelity(llm, dataclasses.replace(transform, alpha=alpha), prompts, lang, max_tokens)
        record["tried"].append({"alpha": alpha, "fidelity": f["fidelity"], "english_share": f["english_share"]})
        if f["fidelity"] >= plain["fidelity"] - max_drop:
            record["alpha"] = alpha
            return alpha, record
    record["alpha"] = 0.0
    return 0.0, record


def guard_strength(llm: Any, transform: Transform, prompts: Sequence[str], lang: str | None = None) -> Transform:
    """The transform at the strength `faithful_alpha` keeps, its record in fit_info["fidelity_check"]."""
    alpha, record = faithful_alpha(llm, transform, prompts, lang)
    return dataclasses.replace(transform, alpha=alpha, fit_info={**transform.fit_info, "fidelity_check": record})


def _subset(t: Transform, layers: list[int], alpha: float, positions: str) -> Transform:
    return dataclasses.replace(t.with_layers(layers), alpha=alpha, positions=positions)


def tune(
    llm: Any,
    transform: Transform,
    *,
    metric: str,
    dev_src: Sequence[str] | None = None,
    dev_tgt: Sequence[str] | None = None,
    dev_items: Sequence[dict[str, Any]] | None = None,
    lang: str = "en",
    alphas: Sequence[float] = ALPHAS,
    positions: Sequence[str] = ("all", "last"),
    fidelity_prompts: Sequence[str] | None = None,
    fidelity_lang: str | None = None,
    max_fidelity_drop: float = 0.02,
    fidelity_tokens: int = 32,
    max_p: float | None = MAX_P,
    progress: bool | None = None,
) -> tuple[Transform, dict[str, Any]]:
    """Score every (layers, alpha, positions) candidate on dev data; return the transform with
    the best as its defaults, and the record of the search. When no candidate scores above no
    transform at all, the defaults become alpha 0 (off) and the record's best has "off": True.

    choice: a candidate is kept only if it beats no transform by a one-sided sign test at level
    `max_p` over the dev items it changes (fixed against broken; None: any gain is kept). The
    test is of the best candidate against no transform, not corrected for the number searched.

    With `fidelity_prompts` (in `fidelity_lang`), a candidate is kept only if the share of greedy
    answers in that language falls by at most `max_fidelity_drop` from no transform's; candidates
    are checked best first, so only those that would win are generated with.

    retrieval: mean top-1 (source -> English) over the transform's layers, the source read with
    the candidate active (positions other than 'all' barely move mean-pooled sentences, so only
    'all' is tried). choice: accuracy (summed log-likelihood) on XCOPA-format items.
    """
    if metric not in METRICS:
        raise LingalignError(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")
    candidates: list[tuple[list[int], float, str]] = []
    policies = ["all"] if metric == "retrieval" else list(positions)
    stages = transform.fit_info.get("stages") if isinstance(transform.fit_info.get("stages"), dict) else None
    for layers, alpha, pos in itertools.product(layer_subsets(list(transform.layers), stages), alphas, policies):
        candidates.append((layers, float(alpha), pos))

    if metric == "retrieval":
        if not dev_src or not dev_tgt or len(dev_src) != len(dev_tgt):
            raise LingalignError("retrieval tuning needs line-aligned dev source and English sentences")
        measure = sorted(transform.layers)
        english = capture(llm, dev_tgt, layers=measure, progress=progress)

        def score(t: Transform | None) -> tuple[float, list[bool] | None]:
            src = capture(llm, dev_src, layers=measure, transform=t, progress=progress)
            return float(np.mean([retrieval_top1(src.layer(il), english.layer(il))[0] for il in measure])), None

        baseline, baseline_correct = score(None)
    else:
        if not dev_items:
            raise LingalignError("choice tuning needs dev items (XCOPA-format JSONL)")

        def score(t: Transform | None) -> tuple[float, list[bool] | None]:
            r = eval_choice(llm, dev_items, lang=lang, transform=t, progress=progress)
            return float(r["accuracy"]), r.get("correct")

        baseline, baseline_correct = score(None)

    results = []
    for layers, alpha, pos in candidates:
        value, correct = score(_subset(transform, layers, alpha, pos))
        r: dict[str, Any] = {"layers": layers, "alpha": alpha, "positions": pos, "score": value}
        if correct is not None and baseline_correct is not None:
            r["fixed"], r["broken"] = changed_answers(correct, baseline_correct)
            r["p"] = sign_test_p(r["fixed"], r["broken"])
        results.append(r)
    ranked = sorted(results, key=lambda r: (r["score"], -abs(r["alpha"])), reverse=True)  # ties: the gentler strength
    testing = metric == "choice" and max_p is not None
    unproven = [r for r in ranked if testing and r["score"] > baseline and r.get("p", 1.0) > max_p]
    ranked = [r for r in ranked if r not in unproven]
    best = ranked[0] if ranked else {"score": baseline}
    fidelity_record: dict[str, Any] | None = None
    if fidelity_prompts:
        want = fidelity_lang or lang
        plain = _fidelity(llm, None, fidelity_prompts, want, fidelity_tokens)
        fidelity_record = {"lang": want, "n": len(fidelity_prompts), "max_drop": max_fidelity_drop,
                           "baseline": plain["fidelity"], "baseline_looping": plain["looping"], "rejected": []}
        best = {"score": baseline}  # off, unless a candidate above no transform keeps fidelity
        for r in ranked:
            if r["score"] <= baseline:
                break
            f = _fidelity(llm, _subset(transform, r["layers"], r["alpha"], r["positions"]), fidelity_prompts, want,
                          fidelity_tokens)
            r["fidelity"], r["looping"] = f["fidelity"], f["looping"]
            if f["fidelity"] >= plain["fidelity"] - max_fidelity_drop:
                best = r
                break
            fidelity_record["rejected"].append({k: r[k] for k in ("layers", "alpha", "positions", "score", "fidelity")})
    if best["score"] <= baseline:
        # Nothing beat no transform on dev (with evidence, and keeping the answers' language):
        # the gentlest setting of all, off, is the one kept.
        best = {"layers": sorted(transform.layers), "alpha": 0.0, "positions": transform.positions,
                "score": baseline, "off": True}
    tuned = _subset(transform, best["layers"], best["alpha"], best["positions"])
    record = {
        "metric": metric,
        "baseline_score": baseline,
        "best": best,
        "candidates": len(results),
        "n_dev": len(dev_src) if metric == "retrieval" else len(dev_items or []),
    }
    if testing:
        record["max_p"] = max_p
        record["unproven"] = [{k: r.get(k) for k in ("layers", "alpha", "positions", "score", "fixed", "broken", "p")}
                              for r in unproven]
    if fidelity_record is not None:
        record["fidelity"] = fidelity_record
    tuned = dataclasses.replace(tuned, fit_info={**transform.fit_info, "tuned": record})
    return tuned, record


def tune_lexicon(
    llm: Any,
    lexicon: Any,
    dev_items: Sequence[Any],
    *,
    lang: str,
    fidelity_prompts: Sequence[str] | None = None,
    fidelity_lang: str | None = None,
    max_fidelity_drop: float = 0.02,
    fidelity_tokens: int = 32,
    max_p: float | None = None,
    progress: bool | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Whether a language should be read through `lexicon` (a lingalign.lexicon.Lexicon): the dev
    items scored as they are and with their gloss before them. The lexicon reads the language
    unless that lowers dev accuracy, or (with `fidelity_prompts`, in `fidelity_lang`) lowers the
    share of greedy answers in the language by more than `max_fidelity_drop`; with `max_p`, it
    must also beat reading as it is by a one-sided sign test at that level. Returns the lexicon
    with the verdict in its metadata (`reads`, and `tuned`: what was measured), and the record.

    Why no sign test by default: this is one candidate, not a search. It is the shipped
    lexicons' rule (bench/gloss.py), applied to the user's language and data."""
    if not dev_items:
        raise LingalignError("lexicon tuning needs dev items (XCOPA val, XStoryCloze train or SIB-200 dev)")
    plain = eval_choice(llm, dev_items, lang=lang, progress=progress)
    read = eval_choice(llm, dev_items, lang=lang, lexicon=lexicon, progress=progress)
    fixed, broken = changed_answers(read["correct"], plain["correct"])
    record: dict[str, Any] = {"metric": "choice", "n_dev": len(dev_items), "accuracy_without": plain["accuracy"],
                              "accuracy": read["accuracy"], "fixed": fixed, "broken": broken,
                              "p": sign_test_p(fixed, broken), "max_p": max_p}
    why = None
    if read["accuracy"] < plain["accuracy"]:
        why = "it lowered dev accuracy"
    elif max_p is not None and record["p"] > max_p:
        why = f"its dev gain is not evidence (sign test p {record['p']:.3f} > {max_p:g})"
    if fidelity_prompts and why is None:  # generated only where the accuracy allows it to read
        want = fidelity_lang or lang
        without = _fidelity(llm, None, fidelity_prompts, want, fidelity_tokens)
        glossed = _fidelity(llm, None, [lexicon.annotate(p) for p in fidelity_prompts], want, fidelity_tokens)
        record["fidelity"] = {"lang": want, "n": len(fidelity_prompts), "max_drop": max_fidelity_drop,
                              "without": without["fidelity"], "with": glossed["fidelity"],
                              "looping_without": without["looping"], "looping_with": glossed["looping"]}
        if glossed["fidelity"] < without["fidelity"] - max_fidelity_drop:
            why = (f"it lowered the share of answers in the language ({without['fidelity']:.2f} -> "
                   f"{glossed['fidelity']:.2f})")
    record["reads"] = why is None
    record["why"] = why
    said = (f"choice on {len(dev_items)} dev items: {plain['accuracy']:.3f} as it is, {read['accuracy']:.3f} read "
            f"through the lexicon (fixed {fixed}, broken {broken}, p {record['p']:.3f})")
    if "fidelity" in record:
        f = record["fidelity"]
        said += f"; answers in the language {f['without']:.2f} -> {f['with']:.2f} ({f['n']} prompts)"
    record["said"] = said
    meta = {**lexicon.meta, "reads": "true" if why is None else "false", "tuned": said + (f"; off: {why}" if why else "")}
    return dataclasses.replace(lexicon, meta=meta), record
