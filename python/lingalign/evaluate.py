"""Measuring alignment: retrieval metrics on pooled embeddings (numpy), and the evaluations
that run the model (bitext retrieval, multiple choice by log-likelihood)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LingalignError


def _normalize(A: np.ndarray) -> np.ndarray:
    A = A.astype(np.float64)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)


def retrieval_top1(src: np.ndarray, tgt: np.ndarray) -> tuple[float, float]:
    """Bitext retrieval by cosine: share of src rows whose nearest tgt row is their pair, and back."""
    sim = _normalize(src) @ _normalize(tgt).T
    idx = np.arange(sim.shape[0])
    return float((sim.argmax(axis=1) == idx).mean()), float((sim.argmax(axis=0) == idx).mean())


def pair_cosine_distance(src: np.ndarray, tgt: np.ndarray) -> float:
    """Mean cosine distance between translation pairs (lower = closer)."""
    return float(1.0 - (_normalize(src) * _normalize(tgt)).sum(axis=1).mean())


def retrieval_by_layer(src: np.ndarray, tgt: np.ndarray, layers: list[int]) -> dict[str, object]:
    """Per-layer top-1 (src->tgt and tgt->src) for captures [N, L, d]; best and last layer."""
    rows = []
    for k, il in enumerate(layers):
        a2b, b2a = retrieval_top1(src[:, k], tgt[:, k])
        rows.append({"layer": il, "src2tgt": a2b, "tgt2src": b2a, "pair_distance": pair_cosine_distance(src[:, k], tgt[:, k])})
    best = max(rows, key=lambda r: r["src2tgt"])
    return {
        "layers": rows,
        "best_layer": best["layer"],
        "best_top1": best["src2tgt"],
        "last_layer": rows[-1]["layer"],
        "last_top1": rows[-1]["src2tgt"],
    }


# -- evaluations that run the model ------------------------------------------------------------

# XCOPA connectors (cause, effect) per language, as in lm-evaluation-harness's xcopa task.
CHOICE_CONNECTORS: dict[str, tuple[str, str]] = {
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
_CHOICE_FIELDS = ("premise", "choice1", "choice2", "question", "label")


def eval_retrieval(
    llm: Any,
    src: Sequence[str],
    tgt: Sequence[str],
    *,
    transform: Any = None,
    alpha: float | None = None,
    positions: str | None = None,
    layers: Sequence[int] | None = None,
    progress: bool | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Bitext retrieval per layer. With `transform`, the source side is read with the
    intervention active inside llama.cpp (the target side never is)."""
    from .capture import capture

    if len(src) != len(tgt):
        raise LingalignError(f"{len(src)} source but {len(tgt)} target sentences")
    import llama_cpp

    n_layer = int(llama_cpp.llama_model_n_layer(llm.model))
    use_layers = list(range(n_layer)) if layers is None else list(layers)
    t = capture(llm, tgt, layers=use_layers, progress=progress)
    s = capture(
        llm, src, layers=use_layers, transform=transform, alpha=alpha, positions=positions, progress=progress,
        force=force,
    )
    out = retrieval_by_layer(s, t, use_layers)
    out["n"] = len(src)
    return out


def load_choice_items(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """XCOPA-format JSONL: premise, choice1, choice2, question (cause|effect), label (0|1)."""
    p = Path(path)
    if not p.is_file():
        raise LingalignError(f"data file not found: {p}")
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise LingalignError(f"{p}:{n}: not JSON ({e.msg})") from None
        missing = [k for k in _CHOICE_FIELDS if k not in item]
        if missing:
            raise LingalignError(f"{p}:{n}: missing field(s) {', '.join(missing)}")
        if item["question"] not in ("cause", "effect") or item["label"] not in (0, 1):
            raise LingalignError(f"{p}:{n}: question must be cause|effect and label 0|1")
        items.append(item)
    if not items:
        raise LingalignError(f"{p}: no items")
    return items


def choice_language(path: str | os.PathLike[str]) -> str:
    """Language code from an XCOPA file name (val.sw.jsonl -> sw); 'en' if none matches."""
    parts = Path(path).name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in CHOICE_CONNECTORS else "en"


def _log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def eval_choice(
    llm: Any,
    items: Sequence[dict[str, Any]],
    *,
    lang: str = "en",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Two-way multiple choice by log-likelihood of each choice after premise + connector.

    `llm` needs logits_all=True. If a lingalign Steering is attached, its transform is active:
    the context is evaluated as prompt tokens and each choice as generated tokens (so
    positions='last' moves the context's last token). Accuracy with summed and with
    length-normalized (mean per token) scores.
    """
    from .capture import _Progress
    from .hook import steering_of

    if not getattr(llm, "_logits_all", False):
        raise LingalignError("eval_choice needs a Llama made with logits_all=True")
    cause, effect = CHOICE_CONNECTORS.get(lang, CHOICE_CONNECTORS["en"])
    steering = steering_of(llm)
    correct_sum = correct_norm = 0
    bar = _Progress(len(items), progress, "choice")
    try:
        for item in items:
            premise = item["premise"].strip()
            if premise[-1:] in ".。!?":
                premise = premise[:-1]
            context = f"{premise} {cause if item['question'] == 'cause' else effect}"
            ctx_tokens = llm.tokenize(context.encode("utf-8"), add_bos=True, special=False)
            scores = []
            for key in ("choice1", "choice2"):
                choice = item[key].strip()
                choice = choice[:1].lower() + choice[1:]
                cont = llm.tokenize((" " + choice).encode("utf-8"), add_bos=False, special=False)
                if len(ctx_tokens) + len(cont) > llm.n_ctx():
                    raise LingalignError(f"item too long for n_ctx={llm.n_ctx()}: {item['premise'][:40]!r}")
                if key == "choice1":
                    llm.reset()
                    with steering.tokens_are("prompt") if steering else contextlib.nullcontext():
                        llm.eval(ctx_tokens)
                else:
                    llm.n_tokens = len(ctx_tokens)  # keep the context's KV, drop choice1's
                with steering.tokens_are("generated") if steering else contextlib.nullcontext():
                    llm.eval(cont)
                n0 = len(ctx_tokens)
                logp = _log_softmax_rows(np.asarray(llm.scores[n0 - 1 : n0 + len(cont) - 1], dtype=np.float64))
                total = float(logp[np.arange(len(cont)), cont].sum())
                scores.append((total, total / len(cont)))
            label = int(item["label"])
            correct_sum += int((scores[1][0] > scores[0][0]) == (label == 1))
            correct_norm += int((scores[1][1] > scores[0][1]) == (label == 1))
            bar.update(1)
    finally:
        bar.close()
    n = len(items)
    return {"accuracy": correct_sum / n, "accuracy_norm": correct_norm / n, "n": n, "lang": lang}
