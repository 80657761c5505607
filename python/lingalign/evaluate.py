"""Evaluations that run the model: bitext retrieval per layer, and multiple choice by
log-likelihood (the numpy measures they use are in `metrics`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _llama
from ._abi import _core
from .capturing import _Progress, capture
from .errors import LingalignError
from .hook import new_hook
from .metrics import pair_cosine_distance, retrieval_top1
from .model import fingerprint
from .prepared import prepare
from .runner import BatchRunner


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
    if len(src) != len(tgt):
        raise LingalignError(f"{len(src)} source but {len(tgt)} target sentences")
    use_layers = list(range(_llama.n_layer(llm))) if layers is None else list(layers)
    t = capture(llm, tgt, layers=use_layers, progress=progress)
    s = capture(
        llm, src, layers=use_layers, transform=transform, alpha=alpha, positions=positions, progress=progress,
        force=force,
    )
    out = retrieval_by_layer(s.activations, t.activations, list(s.layers))
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


def choice_tokens(llm: Any, item: dict[str, Any], lang: str) -> tuple[list[int], list[list[int]]]:
    """Tokens of an item's context (premise + connector, with BOS) and of its two choices
    (lower-cased first letter, after a space), as lm-evaluation-harness builds XCOPA prompts."""
    cause, effect = CHOICE_CONNECTORS.get(lang, CHOICE_CONNECTORS["en"])
    premise = item["premise"].strip()
    if premise[-1:] in ".。!?":
        premise = premise[:-1]
    context = f"{premise} {cause if item['question'] == 'cause' else effect}"
    ctx = llm.tokenize(context.encode("utf-8"), add_bos=True, special=False)
    conts = []
    for key in ("choice1", "choice2"):
        choice = item[key].strip()
        choice = choice[:1].lower() + choice[1:]
        conts.append(llm.tokenize((" " + choice).encode("utf-8"), add_bos=False, special=False))
    return ctx, conts


def _pack_items(sizes: Sequence[tuple[int, int]], max_tokens: int, max_outputs: int, max_items: int) -> Iterator[list[int]]:
    """Consecutive groups of item indices whose (tokens, outputs) fit one decode."""
    start = 0
    while start < len(sizes):
        group, tokens, outputs = [start], *sizes[start]
        while start + len(group) < len(sizes) and len(group) < max_items:
            t, o = sizes[start + len(group)]
            if tokens + t > max_tokens or outputs + o > max_outputs:
                break
            group.append(start + len(group))
            tokens, outputs = tokens + t, outputs + o
        yield group
        start += len(group)


def choice_scores(
    llm: Any,
    items: Sequence[dict[str, Any]],
    *,
    lang: str = "en",
    transform: Any = None,
    alpha: float | None = None,
    positions: str | None = None,
    force: bool = False,
    progress: bool | None = None,
    batch_tokens: int = 512,
    max_outputs: int = 64,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Log-likelihood of each item's two choices after its context: (sums [n, 2], token counts
    [n, 2], info with the transform's warnings and the number of rows it changed).

    Runs in a context of its own on llm's model, several items per llama_decode. Each item's
    context is evaluated once for both choices (its tokens belong to two sequences), and logits
    (n_vocab wide, the costly part) are computed only for the rows that predict a choice token.
    With `transform`, the context's tokens count as prompt and the choices' as generated for
    the position policy: positions='last' moves the context's last token, as when generating.
    """
    n = len(items)
    sums, counts = np.zeros((n, 2)), np.zeros((n, 2), dtype=np.int64)
    info: dict[str, Any] = {"warnings": [], "rows_transformed": 0}
    if n == 0:
        return sums, counts, info
    encoded = [choice_tokens(llm, it, lang) for it in items]
    for k, (ctx_toks, conts) in enumerate(encoded):
        if not all(conts):
            raise LingalignError(f"item {k + 1}: a choice is empty")
        if len(ctx_toks) + len(conts[0]) + len(conts[1]) - 2 > batch_tokens:
            raise LingalignError(f"item {k + 1} is longer than {batch_tokens} tokens: {items[k]['premise'][:40]!r}")
    # An item: context + each choice but its last token (whose logits would predict nothing).
    sizes = [(len(c) + len(a) + len(b) - 2, len(a) + len(b) - 1) for c, (a, b) in encoded]

    hook = new_hook(llm)
    policy = "all"
    if transform is not None:
        prepared = prepare(hook, transform, fingerprint(llm.model_path), alpha=alpha, positions=positions,
                           force=force)
        hook.select(prepared.core, prepared.alpha)
        info["warnings"], policy = list(prepared.warnings), prepared.positions
    apply_ctx = policy in ("all", "prompt")
    apply_cont = policy in ("all", "generated")
    max_items = max(1, min(32, _llama.max_parallel_sequences() // 2))
    runner = BatchRunner(llm, hook, n_batch=batch_tokens, n_seq=2 * max_items, embeddings=False, seqs_per_token=2)
    bar = _Progress(n, progress, "choice")
    try:
        for group in _pack_items(sizes, batch_tokens, max_outputs, max_items):
            b = runner.batch.batch
            flags: list[int] = []
            n_out = 0
            # (item, choice, token, output row that predicts it); llama.cpp returns the output
            # rows' logits in batch order
            targets: list[tuple[int, int, int, int]] = []

            def add(tok: int, pos: int, seqs: tuple[int, ...], output: bool, apply: bool) -> int:
                """Write one token; returns its output row (-1 if it has none)."""
                nonlocal n_out
                row = len(flags)
                b.token[row], b.pos[row], b.n_seq_id[row] = tok, pos, len(seqs)
                for j, s in enumerate(seqs):
                    b.seq_id[row][j] = s
                b.logits[row] = int(output)
                flags.append((_core.ROW_OUTPUT if output else 0) | (_core.ROW_APPLY if apply else 0))
                n_out += int(output)
                return n_out - 1 if output else -1

            for slot, k in enumerate(group):
                ctx_toks, conts = encoded[k]
                n0, last = len(ctx_toks), len(ctx_toks) - 1
                for pos, tok in enumerate(ctx_toks):
                    out = add(tok, pos, (2 * slot, 2 * slot + 1), pos == last, apply_ctx or (policy == "last" and pos == last))
                # the last context row predicts both choices' first tokens
                targets += [(k, 0, conts[0][0], out), (k, 1, conts[1][0], out)]
                for c, cont in enumerate(conts):
                    for j, tok in enumerate(cont[:-1]):
                        targets.append((k, c, cont[j + 1], add(tok, n0 + j, (2 * slot + c,), True, apply_cont)))
            b.n_tokens = len(flags)
            runner.decode(np.asarray(flags, dtype=np.uint8), task="choice scoring", doing="scoring choices")
            logits = runner.logits(n_out)
            m = logits.max(axis=1)
            lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1, dtype=np.float64))
            rows = np.asarray([r for *_, r in targets])
            toks = np.asarray([t for _, _, t, _ in targets])
            logp = logits[rows, toks].astype(np.float64) - lse[rows]
            for (k, c, _, _), lp in zip(targets, logp):
                sums[k, c] += lp
                counts[k, c] += 1
            runner.clear()
            bar.update(len(group))
    finally:
        bar.close()
        info["rows_transformed"] = int(hook.take_rows_transformed())
        runner.close()
    return sums, counts, info


def eval_choice(
    llm: Any,
    items: Sequence[dict[str, Any]],
    *,
    lang: str = "en",
    transform: Any = None,
    alpha: float | None = None,
    positions: str | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Two-way multiple choice by log-likelihood of each choice after premise + connector.

    Accuracy with summed and with length-normalized (mean per token) scores; with `transform`
    active inside llama.cpp (see choice_scores). A tie counts as choice 1.
    """
    sums, counts, info = choice_scores(
        llm, items, lang=lang, transform=transform, alpha=alpha, positions=positions, force=force, progress=progress
    )
    labels = np.asarray([int(it["label"]) for it in items])
    n = len(items)
    norm = sums / np.maximum(counts, 1)
    correct_sum = int(((sums[:, 1] > sums[:, 0]).astype(int) == labels).sum())
    correct_norm = int(((norm[:, 1] > norm[:, 0]).astype(int) == labels).sum())
    return {
        "accuracy": correct_sum / n if n else 0.0,
        "accuracy_norm": correct_norm / n if n else 0.0,
        "n": n,
        "lang": lang,
        "warnings": info["warnings"],
        "rows_transformed": info["rows_transformed"],
    }
