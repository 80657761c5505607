"""Concurrency, lifecycle and decode errors with a transform active (tiny models)."""

from __future__ import annotations

import os
import threading

import llama_cpp
import numpy as np
import pytest
from conftest import tiny_llm
from test_hook import PROMPT, _logits, _transform

import lingalign


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_four_threads_with_own_contexts_match_sequential_runs(tiny_model):
    transforms = [_transform(tiny_model, [k % 4], seed=k, positions=("all", "last")[k % 2]) for k in range(4)]
    prompts = [PROMPT + " " + "abcd"[k] * (k + 1) for k in range(4)]

    def run(k: int) -> np.ndarray:
        llm = tiny_llm(tiny_model, logits_all=True, n_batch=8, n_ubatch=4)
        lingalign.attach(llm, transforms[k])
        out = [_logits(llm, prompts[k]) for _ in range(5)]
        assert all(np.array_equal(o, out[0]) for o in out)
        return out[0]

    sequential = [run(k) for k in range(4)]
    results: list[np.ndarray | None] = [None] * 4
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            results[k] = run(k)
        except BaseException as e:  # reported below, not swallowed
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(4):
        assert np.array_equal(results[k], sequential[k])


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer keeps freed memory in quarantine: RSS says nothing under it",
)
def test_thousand_swaps_and_attach_cycles_leave_memory_flat(tiny_model):
    llm = tiny_llm(tiny_model, n_batch=8, n_ubatch=4)
    steering = lingalign.attach(llm)
    transforms = [_transform(tiny_model, [k % 4], seed=k) for k in range(4)]
    tokens = llm.tokenize(b"hello world")

    def swaps(n: int) -> None:
        for k in range(n):
            steering.set(transforms[k % 4], alpha=0.5)
            llm.reset()
            llm.eval(tokens)
            steering.clear()

    def cycles(n: int) -> None:
        for k in range(n):
            s = lingalign.attach(llm, transforms[k % 4])
            llm.reset()
            llm.eval(tokens)
            s.detach()

    swaps(100)
    cycles(20)
    steering = lingalign.attach(llm)
    before = _rss_kib()
    swaps(1000)
    steering.detach()
    cycles(200)
    grown = _rss_kib() - before
    print(f"RSS growth over 1000 swaps + 200 attach/detach cycles: {grown} KiB")
    assert grown < 16 * 1024
    out = llm("hello", max_tokens=4, temperature=0)
    assert out["choices"][0]["text"] is not None


def test_decode_errors_with_transform_active_leave_context_usable(tiny_model):
    llm = tiny_llm(tiny_model, logits_all=True, n_ctx=32, n_batch=8, n_ubatch=4)
    steering = lingalign.attach(llm, _transform(tiny_model, [1, 3]))
    reference = _logits(llm, "hello there")
    with pytest.raises((RuntimeError, ValueError)):
        llm.reset()
        llm.eval([5] * 40)  # more tokens than the context holds
    with pytest.raises((RuntimeError, ValueError)):
        llm.reset()
        llm.eval([1, 10**6])  # not a token of this vocabulary
    with pytest.raises(ValueError):
        llm.create_completion("x" * 200, max_tokens=4)  # prompt longer than n_ctx
    assert np.array_equal(_logits(llm, "hello there"), reference)
    steering.clear()
    assert llm("hello", max_tokens=3, temperature=0)["choices"]


def test_model_without_l_out_tensors_is_refused_not_ignored(tmp_path):
    import llama_cpp
    from tinymodel import write_tiny_bert

    from lingalign import LayerMap, Transform

    path = write_tiny_bert(tmp_path / "bert.gguf")
    llm = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=64, verbose=False)
    plain = llm.embed("hello world")
    fp = lingalign.model.fingerprint(path)
    t = Transform(layers={0: LayerMap(vector=np.ones(fp.n_embd, np.float32))}, model=fp, method="test")
    steering = lingalign.attach(llm, t)
    with pytest.raises(lingalign.InterventionError, match="architecture not supported"):
        llm.embed("hello world")
    steering.clear()
    assert llm.embed("hello world") == plain


@pytest.mark.skipif(
    llama_cpp.llama_supports_gpu_offload(), reason="a GPU build offloads: tests/test_gpu.py covers it"
)
def test_gpu_offload_request_without_gpu_falls_back_to_cpu(tiny_model):
    """n_gpu_layers on a CPU-only llama-cpp-python: the model runs on the CPU, the hook with it."""
    t = _transform(tiny_model, [1, 2])
    outs = []
    for n_gpu_layers in (0, -1):
        llm = tiny_llm(tiny_model, logits_all=True, n_batch=8, n_ubatch=4, n_gpu_layers=n_gpu_layers)
        lingalign.attach(llm, t)
        outs.append(_logits(llm))
    assert np.array_equal(outs[0], outs[1])
