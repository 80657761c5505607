"""`lingalign bench`: the cost of the hook, measured side by side against plain llama.cpp.

All variants run in one process on one loaded model ("plain" is a llama.cpp context without
lingalign's callback, swapped in for its turns). Prompt processing runs each variant
PROMPT_TURNS times per round, in a new order every turn, and takes the median time; decode
interleaves the variants every DECODE_BLOCK tokens, all decoding the same tokens at the same
positions, and takes the median time per token. Each number is the median over rounds of the
ratio to plain llama.cpp in the same round (1.00 = no cost), so drift on a shared machine hits
every variant alike."""

from __future__ import annotations

import platform
import random
import statistics
import time
from typing import Any

import numpy as np

from . import _llama
from ._abi import _core
from .captures import Captures
from .capturing import capture, fill_batch, pack_sentences, tokenize_sentences
from .data import EMBEDDED_LANGUAGES, embedded_path, read_lines
from .errors import LingalignError
from .hook import Steering, attach, open_model
from .layer import LayerMap
from .runner import BatchRunner
from .transform import Transform


BENCH_RANK = 64
DECODE_BLOCK = 32  # tokens each variant decodes before the next takes its turn
PROMPT_TURNS = 3  # prompt evaluations per variant per round, interleaved
# Untimed tokens at the start of each turn. Setting a transform (packing its maps, 29 MB for the
# float32 variant) slows the next few decoded tokens, even with a policy that applies nothing to
# them, by 4% on the first and about 1% on the 2nd-4th (measured: per-token position in a turn,
# against the plain context), presumably the model's weights pushed out of the last-level cache.
# That is the price of switching transforms, not of applying one, so it is left out.
DECODE_WARMUP = 8


def _random_maps(model: Any, rank: int | None = None, seed: int = 0) -> dict[int, LayerMap]:
    """Near-identity maps at every layer: full matrices, or I + U Vt of the given rank."""
    rng = np.random.default_rng(seed)
    d = model.n_embd
    out = {}
    for il in range(model.n_layer):
        bias = np.zeros(d, np.float32)
        if rank is None:
            m = np.eye(d) + 0.01 * rng.standard_normal((d, d)) / np.sqrt(d)
            out[il] = LayerMap(matrix=m.astype(np.float32), bias=bias)
        else:
            u = (0.01 * rng.standard_normal((d, rank)) / np.sqrt(d)).astype(np.float32)
            vt = rng.standard_normal((rank, d)).astype(np.float32)
            out[il] = LayerMap(lowrank_u=u, lowrank_vt=vt, bias=bias)
    return out


def _time_prompt(llm: Any, prompt: list[int]) -> float:
    """Seconds for a fresh evaluation of `prompt` in one call, after an untimed one (which pays
    for whatever switching variants left in the caches, see DECODE_WARMUP)."""
    llm.reset()
    llm.eval(prompt)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    return time.perf_counter() - t0


def _time_decode_block(llm: Any, steering: Steering | None, tokens: list[int], pos: int) -> tuple[list[float], float]:
    """(seconds per token, seconds inside the hook applying transforms) to decode
    tokens[DECODE_WARMUP:] one per eval, as generated tokens (steering None: the plain context is
    in use); the context is first cut back to `pos` and tokens[:DECODE_WARMUP] are decoded
    untimed (see DECODE_WARMUP)."""
    import contextlib

    _llama.truncate_cache(llm, pos)
    times = []
    with steering.tokens_are("generated") if steering else contextlib.nullcontext():
        for tok in tokens[:DECODE_WARMUP]:
            llm.eval([tok])
        if steering:
            steering.take_apply_seconds()
        for tok in tokens[DECODE_WARMUP:]:
            t0 = time.perf_counter()
            llm.eval([tok])
            times.append(time.perf_counter() - t0)
    return times, steering.take_apply_seconds() if steering else 0.0


def _capture_throughput(llm: Any, sentences: list[str], hooked: bool) -> float:
    """Sentences/s: lingalign.capture, or the same batches decoded by a plain context."""
    t0 = time.perf_counter()
    if hooked:
        capture(llm, sentences, progress=False)
    else:
        _plain_batched_eval(llm, tokenize_sentences(llm, sentences))
    return len(sentences) / (time.perf_counter() - t0)


def _plain_batched_eval(llm: Any, tokens: list[list[int]], n_batch: int = 512, n_seq: int = 32) -> None:
    """Plain llama.cpp reading the sentences capture reads, in the same batches (a BatchRunner
    with no hook: same n_batch, n_ubatch, sequences), doing no more than capture must: every
    layer, and the output head only for each sentence's last token (a logits context; an
    embeddings context would make every token an output and run the 262k-wide head for all)."""
    n_seq = max(1, min(n_seq, _llama.max_parallel_sequences()))
    with BatchRunner(llm, None, n_batch=n_batch, n_seq=n_seq, embeddings=False) as runner:
        for group in pack_sentences(tokens, n_batch, n_seq):
            fill_batch(runner.batch, tokens, group, all_outputs=False)
            runner.decode(doing="running the plain capture baseline")
            runner.clear()


def run_bench(
    model: str | None = None,
    *,
    repeats: int = 5,
    threads: int | None = None,
    n_prompt: int = 256,
    n_decode: int = 128,
    n_sentences: int = 240,
    n_gpu_layers: int = 0,
    device_maps: bool = False,
) -> dict[str, Any]:
    """device_maps adds full_device and full_q4_device: the full-rank maps applied on the GPU
    (Steering.set_device_maps) rather than after a copy to the host, for offloaded layers."""
    if repeats < 1:
        raise LingalignError("--repeats must be >= 1")
    kw: dict[str, Any] = {"n_ctx": n_prompt + n_decode + 8, "n_batch": 512, "n_threads": threads,
                          "n_gpu_layers": n_gpu_layers}
    if threads is not None:
        kw["n_threads_batch"] = threads
    # Every variant runs on one model: two Llama objects would hold two copies of the weights,
    # and where each copy lands in memory moved decode speed by about 1% in either direction
    # (whichever was loaded second was faster on the machine of bench/results), which no
    # interleaving cancels. "plain" is a context of llama.cpp's own, without lingalign's
    # callback, on the same model, swapped in for its turns. Contexts differ a little too (where
    # their buffers land: prompt processing moved by up to 3%), so both are made anew every round,
    # in alternating order, and the median over rounds averages that out.
    llm = open_model(model, **kw)
    steering = attach(llm)
    ctx: dict[str, Any] = {"hooked": _llama.current_context(llm), "plain": None}

    def new_contexts(plain_first: bool) -> None:
        _llama.swap_context(llm, ctx["hooked"])
        if ctx["plain"] is not None:
            _llama.close_context(llm, ctx["plain"])
        for which in ("plain", "hooked") if plain_first else ("hooked", "plain"):
            if which == "plain":
                ctx["plain"] = _llama.plain_context(llm)
            else:
                steering.reinstall()  # closes the old one
                ctx["hooked"] = _llama.current_context(llm)

    fp = steering.model
    full = Transform(layers=_random_maps(fp), model=fp, method="bench")
    full_f16 = full.to_precision("f16")  # the same maps stored as float16 (float32 accumulation)
    full_q8 = full.to_precision("q8")  # and as 8-bit differences from the identity
    full_q4 = full.to_precision("q4")  # and 4-bit ones (integer dot products)
    lowrank = Transform(layers=_random_maps(fp, BENCH_RANK), model=fp, method="bench")
    # zero vectors at every layer: the hook asks for all 18 tensors and adds nothing, so this
    # measures what splitting llama.cpp's graph at each l_out costs by itself
    zeros = {il: LayerMap(vector=np.zeros(fp.n_embd, np.float32)) for il in range(fp.n_layer)}
    splits = Transform(layers=zeros, model=fp, method="bench")
    text = " ".join(read_lines(embedded_path("eng")))
    prompt = llm.tokenize(text.encode())[:n_prompt]
    decode = llm.tokenize(text.encode(), add_bos=False)[n_prompt : n_prompt + n_decode]
    sentences = [s for lang in EMBEDDED_LANGUAGES for s in read_lines(embedded_path(lang))][:n_sentences]

    variants: dict[str, tuple[Transform | None, str | None]] = {
        "plain": (None, None),
        "idle": (None, None),
        "splits": (splits, "all"),
        "full": (full, "all"),
        "full_f16": (full_f16, "all"),
        "full_q8": (full_q8, "all"),
        "full_q4": (full_q4, "all"),
        "last": (full, "last"),
        "lowrank": (lowrank, "all"),
    }
    if device_maps:
        variants["full_device"] = (full, "all")
        variants["full_q4_device"] = (full_q4, "all")
    device_maps_status = "off"
    pp: dict[str, list[float]] = {k: [] for k in variants}
    tg: dict[str, list[float]] = {k: [] for k in variants}
    apply_ms: dict[str, list[float]] = {k: [] for k in variants}
    cap: dict[str, list[float]] = {"plain": [], "capture": []}

    # every variant prepared once; a turn switches to it in O(1)
    prepared = {name: None if t is None else steering.prepare(t, alpha=1.0, positions=p)
                for name, (t, p) in variants.items()}

    def use(name: str) -> Steering | None:
        if name == "plain":
            _llama.swap_context(llm, ctx["plain"])
            return None
        _llama.swap_context(llm, ctx["hooked"])
        on_device = name.endswith("_device")
        status = steering.set_device_maps(on_device)
        if on_device:
            nonlocal device_maps_status
            device_maps_status = status
        steering.use(prepared[name])
        _llama.invalidate_cache(llm)
        return steering

    blocks = [(b0, decode[b0 : b0 + DECODE_BLOCK]) for b0 in range(0, len(decode), DECODE_BLOCK)]
    blocks = [(b0, block) for b0, block in blocks if len(block) > DECODE_WARMUP]
    if not blocks:
        raise LingalignError(f"n_decode must be more than {DECODE_WARMUP} (the untimed tokens of each turn)")
    n_timed = sum(len(block) - DECODE_WARMUP for _, block in blocks)
    try:
        new_contexts(plain_first=False)
        use("plain")
        _time_prompt(llm, prompt)  # warm-up: page in the weights
        order = random.Random(0)
        names = list(variants)
        for round_index in range(repeats):
            new_contexts(plain_first=round_index % 2 == 0)
            # a new order every round (and every decode block), so that no variant always runs
            # first or right after another
            # Prompt processing takes PROMPT_TURNS turns per round, in a new order each turn, and a
            # round's speed is the median: one evaluation per round left the idle hook's prompt
            # ratio (a hook that does nothing) anywhere in 0.96-0.99 from one run to the next.
            prompt_seconds: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(PROMPT_TURNS):
                order.shuffle(names)
                for name in names:
                    use(name)
                    prompt_seconds[name].append(_time_prompt(llm, prompt))
            for name in variants:
                pp[name].append(len(prompt) / statistics.median(prompt_seconds[name]))
            # Decode interleaves the variants every DECODE_BLOCK tokens, each decoding the same
            # tokens at the same positions after the prompt: the machine's drift over a round (these
            # machines are shared) then hits every variant alike, which a whole decode per variant
            # did not (the ratios moved by 1-3% between runs).
            # A round's decode speed is 1 / the median time per token: a token that another process
            # on the machine interrupted (a few ms lost at random) does not count against whichever
            # variant it happened to; the hook's own time is a mean.
            token_seconds: dict[str, list[float]] = {k: [] for k in variants}
            hook_seconds = dict.fromkeys(variants, 0.0)
            for b0, block in blocks:
                order.shuffle(names)
                for name in names:
                    times, dh = _time_decode_block(llm, use(name), block, len(prompt) + b0)
                    token_seconds[name] += times
                    hook_seconds[name] += dh
            for name in variants:
                tg[name].append(1.0 / statistics.median(token_seconds[name]))
                apply_ms[name].append(1e3 * hook_seconds[name] / n_timed)
            use("idle")
            cap["plain"].append(_capture_throughput(llm, sentences, hooked=False))
            cap["capture"].append(_capture_throughput(llm, sentences, hooked=True))
    finally:
        _llama.swap_context(llm, ctx["hooked"])
        if ctx["plain"] is not None:
            _llama.close_context(llm, ctx["plain"])

    # fitting time: ridge at every layer on 240 pairs of captured states (numpy only)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((240, fp.n_layer, fp.n_embd)).astype(np.float32)
    Y = X + 0.1 * rng.standard_normal(X.shape).astype(np.float32)
    layers = tuple(range(fp.n_layer))
    t0 = time.perf_counter()
    Transform.fit(Captures(X, layers, fp), Captures(Y, layers, fp), method="ridge")
    fit_s = time.perf_counter() - t0

    med = statistics.median
    result: dict[str, Any] = {
        "model": fp.name or fp.architecture,
        "n_embd": fp.n_embd,
        "n_layer": fp.n_layer,
        "threads": llm.context_params.n_threads,
        "repeats": repeats,
        "n_prompt": len(prompt),
        "n_decode": len(decode),
        "n_decode_timed": n_timed,
        "decode_block": DECODE_BLOCK,
        "decode_warmup": DECODE_WARMUP,
        "pp_tps_plain": med(pp["plain"]),
        "decode_tps_plain": med(tg["plain"]),
        "capture_sps_plain_eval": med(cap["plain"]),
        "capture_sps": med(cap["capture"]),
        "fit_ridge_all_layers_s": fit_s,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        # which code the map kernels ran on this CPU (AVX-512, VNNI, AVX2 or portable)
        "kernels": _core.testing.kernel_paths(),
        "n_gpu_layers": n_gpu_layers,
        "gpu_offload": _llama.supports_gpu_offload(),
        # after the device variants' last turn: "active on <device>" or why it turned itself off
        "device_maps": device_maps_status,
    }
    result["lowrank_rank"] = BENCH_RANK
    for name in [v for v in variants if v != "plain"]:
        result[f"pp_ratio_{name}"] = med(a / b for a, b in zip(pp[name], pp["plain"]))
        result[f"decode_ratio_{name}"] = med(a / b for a, b in zip(tg[name], tg["plain"]))
        result[f"decode_hook_ms_{name}"] = med(apply_ms[name])
    # every round's decode ratio, so the spread behind each median can be read off
    result["decode_ratio_rounds"] = {
        name: [round(a / b, 4) for a, b in zip(tg[name], tg["plain"])] for name in variants if name != "plain"
    }
    result["capture_ratio"] = med(a / b for a, b in zip(cap["capture"], cap["plain"]))
    return result


def format_bench(r: dict[str, Any]) -> str:
    lines = [
        f"{r['model']} (n_embd {r['n_embd']}, {r['n_layer']} layers), {r['threads']} threads, "
        f"median of {r['repeats']} interleaved rounds (decode: variants take turns every {r['decode_block']} tokens)",
        f"plain llama.cpp: prompt {r['pp_tps_plain']:.0f} tok/s ({r['n_prompt']} tokens), "
        f"decode {r['decode_tps_plain']:.1f} tok/s",
        f"{'variant':<36} {'prompt':>8} {'decode':>8}",
        f"{'hook installed, idle':<36} {r['pp_ratio_idle']:>7.3f}x {r['decode_ratio_idle']:>7.3f}x",
        f"{'all 18 tensors requested, zero vectors':<36} {r['pp_ratio_splits']:>7.3f}x {r['decode_ratio_splits']:>7.3f}x",
        f"{'full-rank maps, all layers, all tokens':<36} {r['pp_ratio_full']:>7.3f}x {r['decode_ratio_full']:>7.3f}x",
        f"{'same, last prompt token only':<36} {r['pp_ratio_last']:>7.3f}x {r['decode_ratio_last']:>7.3f}x",
        f"{'full-rank f16 maps at all layers':<36} {r['pp_ratio_full_f16']:>7.3f}x {r['decode_ratio_full_f16']:>7.3f}x",
        f"{'full-rank q8 maps at all layers':<36} {r['pp_ratio_full_q8']:>7.3f}x {r['decode_ratio_full_q8']:>7.3f}x",
        f"{'full-rank q4 maps at all layers':<36} {r['pp_ratio_full_q4']:>7.3f}x {r['decode_ratio_full_q4']:>7.3f}x",
        f"{'rank-' + str(r['lowrank_rank']) + ' maps, all layers, all tokens':<36} {r['pp_ratio_lowrank']:>7.3f}x "
        f"{r['decode_ratio_lowrank']:>7.3f}x",
        f"inside the hook per decoded token (plain decode: {1e3 / r['decode_tps_plain']:.1f} ms): full-rank f32 "
        f"{r['decode_hook_ms_full']:.2f} ms, f16 {r['decode_hook_ms_full_f16']:.2f} ms, q8 {r['decode_hook_ms_full_q8']:.2f} ms, "
        f"q4 {r['decode_hook_ms_full_q4']:.2f} ms, "
        f"rank-{r['lowrank_rank']} {r['decode_hook_ms_lowrank']:.2f} ms",
        f"capture (all layers, mean+last pooled): {r['capture_sps']:.1f} sent/s = {r['capture_ratio']:.3f}x "
        f"plain evaluation of the same batches ({r['capture_sps_plain_eval']:.1f} sent/s)",
        f"fit (ridge, every layer, 240 pairs): {r['fit_ridge_all_layers_s']:.2f} s",
        "kernels: " + ", ".join(f"{k} {v}" for k, v in sorted(r.get("kernels", {}).items())),
    ]
    if "pp_ratio_full_device" in r:
        lines[-4:-4] = [
            f"{'full-rank maps on the GPU (f32, q4)':<36} {r['pp_ratio_full_device']:>7.3f}x "
            f"{r['decode_ratio_full_device']:>7.3f}x, q4 {r['pp_ratio_full_q4_device']:.3f}x "
            f"{r['decode_ratio_full_q4_device']:.3f}x; device maps: {r['device_maps']}",
        ]
    if r.get("n_gpu_layers"):
        n = r["n_gpu_layers"]
        lines.insert(1, f"{'all' if n < 0 else n} layers offloaded to the GPU" +
                     ("" if r.get("gpu_offload") else " (requested, but this llama-cpp-python has no GPU offload)"))
    return "\n".join(lines)
