"""Read the hidden states of every sentence, pooled per sentence, through the same C++ hook.

Capture runs in a context of its own on the Llama's model (a BatchRunner): several sentences per
llama_decode (one sequence each), pooled inside the hook, and the rest of the graph after the
last captured layer (the output head) skipped. A transform can be active while capturing, to see
how it moves the states. The result is a Captures object, which carries what fitting needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _llama, sites
from ._abi import _core
from .captures import POOLS, SITES, Captures
from .data import lines_sha256
from .errors import LingalignError
from .hook import hook_with
from .model import fingerprint
from .progress import Progress
from .runner import BatchRunner
from .transform import Transform

MAX_SENTENCE_TOKENS = 512


def _parse_layers(layers: Sequence[int] | None, n_layer: int) -> list[int]:
    if layers is None:
        return list(range(n_layer))
    out = sorted({int(il) for il in layers})
    bad = [il for il in out if not 0 <= il < n_layer]
    if bad:
        raise LingalignError(f"unknown layer(s) {bad}: the model has layers 0..{n_layer - 1}")
    if not out:
        raise LingalignError("no layers to capture")
    return out


def parse_layer_spec(spec: str | None, n_layer: int) -> list[int] | None:
    """'all', '3', '0,4,8', '2-5', '-1' (last) -> sorted layer list (None for all)."""
    if spec is None or spec.strip() in ("", "all"):
        return None
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                layers.update(range(lo, hi + 1))
            else:
                il = int(part)
                layers.add(il + n_layer if il < 0 else il)
        except ValueError:
            raise LingalignError(f"bad layer spec {spec!r} (use e.g. all, 5, 0,4,8, 2-6, -1)") from None
    return _parse_layers(sorted(layers), n_layer)


def pack_sentences(tokens: Sequence[Sequence[int]], n_batch: int, n_seq: int) -> Iterator[list[int]]:
    """Consecutive groups of sentence indices, each fitting one decode: at most n_seq sentences
    and n_batch tokens (a sentence longer than n_batch goes alone)."""
    start = 0
    while start < len(tokens):
        group = [start]
        used = len(tokens[start])
        while start + len(group) < len(tokens) and len(group) < n_seq:
            k = start + len(group)
            if used + len(tokens[k]) > n_batch:
                break
            group.append(k)
            used += len(tokens[k])
        yield group
        start += len(group)


def fill_batch(batch: Any, tokens: Sequence[Sequence[int]], group: Sequence[int], *, all_outputs: bool) -> int:
    """Write the group's sentences into a llama_batch as sequences 0, 1, ...; each sentence's last
    token has an output, every token does with `all_outputs`. Returns the number of tokens."""
    b = batch.batch
    row = 0
    for slot, k in enumerate(group):
        toks = tokens[k]
        for pos, tok in enumerate(toks):
            b.token[row] = tok
            b.pos[row] = pos
            b.n_seq_id[row] = 1
            b.seq_id[row][0] = slot
            b.logits[row] = 1 if (all_outputs or pos == len(toks) - 1) else 0
            row += 1
    b.n_tokens = row
    return row


def tokenize_sentences(llm: Any, sentences: Sequence[str]) -> list[list[int]]:
    """Tokens of each sentence with the model's BOS, truncated to MAX_SENTENCE_TOKENS."""
    out = []
    for i, s in enumerate(sentences):
        if not isinstance(s, str) or not s.strip():
            raise LingalignError(f"sentence {i + 1} is empty")
        toks = llm.tokenize(s.strip().encode("utf-8"), add_bos=True, special=False)
        out.append(toks[:MAX_SENTENCE_TOKENS])
    return out


def capture(
    llm: Any,
    sentences: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    pool: str = "mean",
    transform: Transform | None = None,
    alpha: float | None = None,
    positions: str | None = None,
    batch_tokens: int = 512,
    max_sequences: int = 32,
    progress: bool | None = None,
    force: bool = False,
    site: str = "residual",
) -> Captures:
    """Pooled hidden states per sentence: Captures of float32 [len(sentences), len(layers), width].

    site='residual' reads the residual stream after each layer (width n_embd); site='ffn' the MLP
    activation (the neurons, width n_ff). pool='mean' averages a sentence's tokens (leaving out
    BOS, whose state is the same for every sentence and large); pool='last' takes its last token.
    `layers` default to all layers. With `transform`, the hidden states are read with the
    intervention active (alpha and positions default to the transform's; positions='last'
    changes only each sentence's last token).
    """
    if pool not in POOLS:
        raise LingalignError(f"unknown pooling {pool!r} (one of {', '.join(POOLS)})")
    if site not in SITES:
        raise LingalignError(f"unknown capture site {site!r} (one of {', '.join(SITES)})")
    model = fingerprint(llm.model_path)
    n_layer = _llama.n_layer(llm)
    width = _llama.n_embd(llm)
    if site == sites.FFN:
        ffn = sites.ffn_site(llm.metadata)
        if ffn is None:
            arch = llm.metadata.get("general.architecture", "?")
            raise LingalignError(f"lingalign does not know the MLP activation tensor of {arch} models")
        width = ffn.width
    cap_layers = _parse_layers(layers, n_layer)
    tokens = tokenize_sentences(llm, sentences)
    n = len(tokens)
    result = np.zeros((n, len(cap_layers), width), dtype=np.float32)
    info = {"sentences": n, "sha256": lines_sha256([s.strip() for s in sentences])}
    if n == 0:
        return Captures(result, tuple(cap_layers), model, site, pool, info)

    hook, prepared = hook_with(llm, transform, model=model, alpha=alpha, positions=positions, force=force)
    site_id = _core.SITE_FFN if site == sites.FFN else _core.SITE_RESIDUAL
    policy = "all"
    if prepared is not None:
        policy = prepared.positions
        info["transform"] = {"method": prepared.transform.method, "source_lang": prepared.transform.source_lang,
                             "alpha": prepared.alpha, "positions": policy}

    n_batch = max(min(batch_tokens, _llama.n_ctx_train(llm) or batch_tokens), max(len(t) for t in tokens))
    n_seq = max(1, min(max_sequences, _llama.max_parallel_sequences()))
    need_all_outputs = cap_layers[-1] == n_layer - 1
    bos = llm.token_bos()
    bar = Progress(n, progress, "capture")
    # embeddings=True: outputs are n_embd wide, no n_vocab-wide logits buffer per token
    runner = BatchRunner(llm, hook, n_batch=n_batch, n_seq=n_seq, embeddings=True)
    try:
        for group in pack_sentences(tokens, n_batch, n_seq):
            used = fill_batch(runner.batch, tokens, group, all_outputs=need_all_outputs)
            flags = np.zeros(used, dtype=np.uint8)
            slots = np.zeros(used, dtype=np.int32)
            every_flags = _core.ROW_POOL | (_core.ROW_OUTPUT if need_all_outputs else 0)
            if policy in ("all", "prompt"):
                every_flags |= _core.ROW_APPLY
            last_flags = _core.ROW_LAST | _core.ROW_OUTPUT | (_core.ROW_APPLY if policy == "last" else 0)
            row = 0
            for slot, k in enumerate(group):
                end = row + len(tokens[k])
                flags[row:end] = every_flags
                if tokens[k][0] == bos:  # BOS is the same for every sentence: not in the mean
                    flags[row] = every_flags & ~_core.ROW_POOL
                flags[end - 1] |= last_flags
                slots[row:end] = slot
                row = end
            hook.start_capture(cap_layers, len(group), stop_after_last=True, site=site_id)
            runner.decode(flags, slots, task="capture", doing="capturing")
            sums, counts, last = hook.capture_results()
            rows = slice(group[0], group[-1] + 1)
            if pool == "mean":
                if (counts == 0).any():
                    raise LingalignError("capture saw no rows for some sentence (unexpected graph)")
                result[rows] = (sums / counts[:, :, None]).astype(np.float32)
            else:
                result[rows] = last
            runner.clear()
            bar.update(len(group))
    finally:
        bar.close()
        hook.stop_capture()
        runner.close()
    return Captures(result, tuple(cap_layers), model, site, pool, info)
