"""Evaluations that run the model: bitext retrieval per layer, and multiple choice by
log-likelihood of options (tasks and prompts in `tasks`, the numpy measures in `metrics`).

Choice scoring runs in a context of its own on the Llama's model (a BatchRunner): several items
per llama_decode, each item's context evaluated once for all its options (its tokens belong to
one sequence per option), and logits (n_vocab wide, the costly part) computed only for the rows
that predict an option token. With a transform, the context's tokens count as prompt and the
options' as generated for the position policy: positions='last' moves the context's last token,
as when generating.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _llama
from ._abi import _core
from .capturing import capture
from .errors import LingalignError
from .hook import hook_with
from .metrics import changed_answers, pair_cosine_distance, retrieval_top1, sign_test_p
from .progress import Progress
from .runner import BatchRunner
from .tasks import (
    PROTOCOLS,
    ChoiceItem,
    Prompt,
    Task,
    letter_orders,
    letter_prompt,
    likelihood_prompt,
    load_task,
    xcopa_item,
)


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




def load_choice_items(path: str | os.PathLike[str]) -> list[ChoiceItem]:
    """The items of a task file (XCOPA jsonl, XStoryCloze tsv or SIB-200 tsv); see tasks.load_task."""
    return list(load_task(path).items)


def _log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def _as_items(items: Sequence[ChoiceItem | dict[str, Any]]) -> list[ChoiceItem]:
    """ChoiceItems, from XCOPA-format dicts where needed."""
    return [it if isinstance(it, ChoiceItem) else xcopa_item(it, str(it.get("idx", k))) for k, it in enumerate(items)]


def _encode(llm: Any, prompt: Prompt) -> tuple[list[int], list[list[int]]]:
    """Tokens of a prompt's context (with BOS, or the chat template's own special tokens) and
    of each continuation (no BOS)."""
    if prompt.chat:
        ctx = llm.tokenize(_llama.chat_text(llm, prompt.context).encode("utf-8"), add_bos=False, special=True)
    else:
        ctx = llm.tokenize(prompt.context.encode("utf-8"), add_bos=True, special=False)
    conts = [llm.tokenize(c.encode("utf-8"), add_bos=False, special=False) for c in prompt.continuations]
    return ctx, conts


def _pack_items(sizes: Sequence[tuple[int, int, int]], max_tokens: int, max_outputs: int,
                max_seqs: int) -> Iterator[list[int]]:
    """Consecutive groups of item indices whose (tokens, outputs, sequences) fit one decode."""
    start = 0
    while start < len(sizes):
        group, (tokens, outputs, seqs) = [start], sizes[start]
        while start + len(group) < len(sizes):
            t, o, q = sizes[start + len(group)]
            if tokens + t > max_tokens or outputs + o > max_outputs or seqs + q > max_seqs:
                break
            group.append(start + len(group))
            tokens, outputs, seqs = tokens + t, outputs + o, seqs + q
        yield group
        start += len(group)


def score_prompts(
    llm: Any,
    prompts: Sequence[Prompt],
    *,
    transform: Any = None,
    alpha: float | None = None,
    positions: str | None = None,
    force: bool = False,
    progress: bool | None = None,
    batch_tokens: int = 512,
    max_outputs: int = 64,
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """Log-likelihood of each prompt's continuations after its context: (sums, token counts),
    one array per prompt (one entry per continuation), and info with the transform's warnings
    and the number of rows it changed."""
    n = len(prompts)
    info: dict[str, Any] = {"warnings": [], "rows_transformed": 0}
    encoded = [_encode(llm, p) for p in prompts]
    sums = [np.zeros(len(c)) for _, c in encoded]
    counts = [np.zeros(len(c), dtype=np.int64) for _, c in encoded]
    if n == 0:
        return sums, counts, info
    for k, (ctx_toks, conts) in enumerate(encoded):
        if not all(conts):
            raise LingalignError(f"item {k + 1}: an option is empty")
        if len(ctx_toks) + sum(len(c) - 1 for c in conts) > batch_tokens:
            raise LingalignError(f"item {k + 1} is longer than {batch_tokens} tokens: {prompts[k].context[:40]!r}")
    # An item: context + each continuation but its last token (whose logits would predict nothing).
    sizes = [(len(c) + sum(len(x) - 1 for x in cs), sum(len(x) - 1 for x in cs) + 1, len(cs)) for c, cs in encoded]
    max_options = max(len(cs) for _, cs in encoded)
    max_seqs = _llama.max_parallel_sequences()
    if max_options > max_seqs:
        raise LingalignError(f"an item has {max_options} options; llama.cpp runs at most {max_seqs} sequences")

    hook, prepared = hook_with(llm, transform, alpha=alpha, positions=positions, force=force)
    policy = "all"
    if prepared is not None:
        info["warnings"], policy = list(prepared.warnings), prepared.positions
    apply_ctx = policy in ("all", "prompt")
    apply_cont = policy in ("all", "generated")
    n_seq = min(max_seqs, max(max_options, 64))
    runner = BatchRunner(llm, hook, n_batch=batch_tokens, n_seq=n_seq, embeddings=False, seqs_per_token=max_options)
    bar = Progress(n, progress, "choice", unit="item")
    try:
        for group in _pack_items(sizes, batch_tokens, max_outputs, n_seq):
            b = runner.batch.batch
            flags: list[int] = []
            n_out = 0
            # (item, continuation, token, output row that predicts it); llama.cpp returns the output
            # rows' logits in batch order
            targets: list[tuple[int, int, int, int]] = []

            def add(tok: int, pos: int, seqs: Sequence[int], output: bool, apply: bool, generated: bool) -> int:
                """Write one token; returns its output row (-1 if it has none)."""
                nonlocal n_out
                row = len(flags)
                b.token[row], b.pos[row], b.n_seq_id[row] = tok, pos, len(seqs)
                for j, s in enumerate(seqs):
                    b.seq_id[row][j] = s
                b.logits[row] = int(output)
                flags.append((_core.ROW_OUTPUT if output else 0) | (_core.ROW_APPLY if apply else 0)
                             | (_core.ROW_GENERATED if generated else 0))
                n_out += int(output)
                return n_out - 1 if output else -1

            seq0 = 0
            for k in group:
                ctx_toks, conts = encoded[k]
                seqs = tuple(range(seq0, seq0 + len(conts)))
                n0, last = len(ctx_toks), len(ctx_toks) - 1
                for pos, tok in enumerate(ctx_toks):
                    out = add(tok, pos, seqs, pos == last, apply_ctx or (policy == "last" and pos == last), False)
                # the last context row predicts every continuation's first token
                targets += [(k, c, cont[0], out) for c, cont in enumerate(conts)]
                for c, cont in enumerate(conts):
                    for j, tok in enumerate(cont[:-1]):
                        targets.append((k, c, cont[j + 1], add(tok, n0 + j, (seqs[c],), True, apply_cont, True)))
                seq0 += len(conts)
            b.n_tokens = len(flags)
            runner.decode(np.asarray(flags, dtype=np.uint8), task="choice scoring", doing="scoring choices")
            logits = runner.logits(n_out)
            m = logits.max(axis=1)
            lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1, dtype=np.float64))
            rows = np.asarray([r for *_, r in targets])
            toks = np.asarray([t for _, _, t, _ in targets])
            logp = logits[rows, toks].astype(np.float64) - lse[rows]
            for (k, c, _, _), lp in zip(targets, logp):
                sums[k][c] += lp
                counts[k][c] += 1
            runner.clear()
            bar.update(len(group))
    finally:
        bar.close()
        info["rows_transformed"] = int(hook.take_rows_transformed())
        runner.close()
    return sums, counts, info


def choice_scores(
    llm: Any,
    items: Sequence[ChoiceItem | dict[str, Any]],
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
    """Log-likelihood of each item's options after its context (the likelihood protocol):
    (sums [n, options], token counts [n, options], info); items with the same number of options."""
    prompts = [likelihood_prompt(it, lang) for it in _as_items(items)]
    sums, counts, info = score_prompts(llm, prompts, transform=transform, alpha=alpha, positions=positions,
                                       force=force, progress=progress, batch_tokens=batch_tokens,
                                       max_outputs=max_outputs)
    if len({len(s) for s in sums}) > 1:
        raise LingalignError("choice_scores needs items with the same number of options; use score_prompts")
    width = len(sums[0]) if sums else 2
    return np.array(sums).reshape(-1, width), np.array(counts).reshape(-1, width), info


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean()) if len(labels) else 0.0


def predictions(sums: Sequence[np.ndarray], counts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The option each item picks by summed log-likelihood, and by its mean per token (length
    normalized); a tie goes to the first option."""
    summed = np.asarray([int(np.argmax(s)) for s in sums], dtype=np.int64)
    normalized = np.asarray([int(np.argmax(s / np.maximum(c, 1))) for s, c in zip(sums, counts)], dtype=np.int64)
    return summed, normalized


def _score(llm: Any, items: list[ChoiceItem], lang: str, protocol: str, chat: bool, **kwargs: Any) -> dict[str, Any]:
    """Accuracy of items under one protocol (see eval_choice)."""
    labels = np.asarray([it.label for it in items])
    if protocol == "likelihood":
        prompts = [likelihood_prompt(it, lang) for it in items]
        sums, counts, info = score_prompts(llm, prompts, **kwargs)
        pred, pred_norm = predictions(sums, counts)
        return {"accuracy": _accuracy(pred, labels), "accuracy_norm": _accuracy(pred_norm, labels),
                "correct": [bool(c) for c in pred == labels],
                "warnings": info["warnings"], "rows_transformed": info["rows_transformed"]}
    prompts, orders = [], []
    for it in items:
        for order in letter_orders(len(it.options)):
            prompts.append(letter_prompt(it, order, chat=chat))
            orders.append(order)
    sums, _, info = score_prompts(llm, prompts, **kwargs)
    # each continuation is one letter: the chosen position in the order, and the option it names
    position = np.asarray([int(np.argmax(s)) for s in sums])
    chosen = np.asarray([order[p] for order, p in zip(orders, position)])
    both = np.repeat(labels, 2)
    per_order = [_accuracy(chosen[o::2], labels) for o in (0, 1)]
    return {"accuracy": _accuracy(chosen, both), "accuracy_norm": _accuracy(chosen, both),
            "correct": [bool(c) for c in (chosen[0::2] == labels) & (chosen[1::2] == labels)],
            "accuracy_by_order": per_order, "a_share": float((position == 0).mean()),
            "both_orders_right": float(((chosen[0::2] == labels) & (chosen[1::2] == labels)).mean()) if len(labels) else 0.0,
            "warnings": info["warnings"], "rows_transformed": info["rows_transformed"]}


def eval_choice(
    llm: Any,
    items: Task | Sequence[ChoiceItem | dict[str, Any]],
    *,
    lang: str | None = None,
    protocol: str = "likelihood",
    english: Task | Sequence[ChoiceItem | dict[str, Any]] | None = None,
    transform: Any = None,
    alpha: float | None = None,
    positions: str | None = None,
    force: bool = False,
    progress: bool | None = None,
    chat: bool | None = None,
    lexicon: Any = None,
    reading: str | None = None,
) -> dict[str, Any]:
    """Multiple choice accuracy, with `transform` active inside llama.cpp (see score_prompts) and
    each item read through `lexicon` (a lingalign.lexicon.Lexicon) as `reading` says
    (lingalign.lexicon.gloss_item; default: the task's).

    protocol "likelihood": the option with the highest summed log-likelihood (`accuracy`) and
    per-token mean (`accuracy_norm`); a tie counts as the first option; `correct` says per item
    whether the summed choice is right (letter: right in both option orders). protocol "letter":
    INCLINE's English instruction with lettered options; each item scored in both option orders
    (`accuracy` over both, `accuracy_by_order`, `a_share`: the share of answers that are the first
    letter), with the model's chat template if it has one (`chat`, default: whether it does).
    With `english` (the same items in English) and a transform or lexicon, also
    `english_accuracy` (neither), `accuracy_without` and `gap_closed` = (with - without) /
    (English - without), and whether the difference is evidence: `fixed` and `broken` (items
    right only with them, and only without) and `sign_p`, the one-sided sign test `tune` applies.
    """
    if protocol not in PROTOCOLS:
        raise LingalignError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    task_name = items.name if isinstance(items, Task) else "xcopa"
    if lang is None:
        lang = items.lang if isinstance(items, Task) else "en"
    listed = _as_items(items.items if isinstance(items, Task) else items)
    use_chat = _llama.has_chat_template(llm) if chat is None else chat
    kwargs = {"alpha": alpha, "positions": positions, "force": force, "progress": progress}
    if lexicon is not None:
        from .lexicon import gloss_item, task_reading

        read = [gloss_item(it, lexicon, reading) for it in listed]
        reading = reading or task_reading(listed[0].task if listed else "")
    else:
        read = listed
    result = _score(llm, read, lang, protocol, use_chat, transform=transform, **kwargs)
    out: dict[str, Any] = {"task": task_name, "protocol": protocol, "lang": lang, "n": len(listed),
                           "chat_template": use_chat if protocol == "letter" else False, **result}
    if lexicon is not None:
        out["reading"] = reading
    out["accuracy_se"] = float(np.sqrt(out["accuracy"] * (1 - out["accuracy"]) / max(1, len(listed))))
    if english is not None:
        en_items = _as_items(english.items if isinstance(english, Task) else english)
        if len(en_items) != len(listed) or [it.label for it in en_items] != [it.label for it in listed]:
            raise LingalignError("the English reference must hold the same items (same labels, same order)")
        en = _score(llm, en_items, "en", protocol, use_chat, transform=None, **kwargs)
        out["english_accuracy"] = en["accuracy"]
        if transform is not None or lexicon is not None:
            plain = _score(llm, listed, lang, protocol, use_chat, transform=None, **kwargs)
            out["accuracy_without"] = without = plain["accuracy"]
            out["gap_closed"] = gap_closed(out["accuracy"], without, en["accuracy"])
            out["fixed"], out["broken"] = changed_answers(out["correct"], plain["correct"])
            out["sign_p"] = sign_test_p(out["fixed"], out["broken"])
    return out


def gap_closed(with_transform: float, without: float, english: float) -> float | None:
    """(with - without) / (English - without): the share of the gap to the English reference a
    transform closes; None when there is no gap (English no better than without)."""
    gap = english - without
    return (with_transform - without) / gap if gap > 0 else None
