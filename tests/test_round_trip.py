"""The round trip that serves tensors in device memory (GPU offload): rows copied out with
ggml_backend_tensor_get, transformed by the same kernels, copied back with _set. Host tensors
are sent through it here (Hook.set_host_round_trip), so CI covers that code without a GPU, and
it must give the bits the direct path gives."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import hook_of, configure_new_hooks, tiny_llm
from test_experts import _clamp
from test_hook import _logits, _lowrank, _transform

import lingalign


def _llm(model):
    return tiny_llm(model, logits_all=True, n_batch=8, n_ubatch=4)


def _cases(model):
    return {
        "f32": _transform(model, range(4)),
        "q4": _transform(model, range(4)).to_precision("q4"),
        "lowrank": _lowrank(model, 2),
        "additive": _transform(model, [1, 3], kind="additive"),
        "clamp": _clamp(model, 1, [3, 17, 100], [0.25, -1.5, 7.0], alpha=0.7),
        "last": _transform(model, [0, 3], positions="last"),
    }


@pytest.mark.parametrize("which", ["f32", "q4", "lowrank", "additive", "clamp", "last"])
def test_round_trip_gives_the_direct_paths_bits(tiny_model, which):
    t = _cases(tiny_model)[which]
    llm = _llm(tiny_model)
    steering = lingalign.attach(llm, t)
    direct = _logits(llm)
    assert steering.stats(reset=True)["tensors"]["round_trip"] == 0
    hook_of(steering).set_host_round_trip(True)
    copied = _logits(llm)
    paths = steering.stats(reset=True)["tensors"]
    assert paths["round_trip"] > 0 and paths["host"] == 0
    assert np.array_equal(copied, direct)
    steering.clear()
    assert not np.array_equal(_logits(llm), direct)  # the transform did move them


def test_capture_and_several_runs_per_tensor(tiny_model, monkeypatch):
    """Capture reads every row of a captured layer; choice scoring (several items per batch,
    positions='last') changes one row per item: several runs copied out and back."""
    from test_evaluate import ITEMS

    from lingalign.evaluate import choice_scores

    from conftest import capture_array as capture
    llm = tiny_llm(tiny_model)
    t = _transform(tiny_model, [1, 2], positions="last")
    sentences = ["hello there", "a b c d e f g h i j k l", "the dog"]
    captured = capture(llm, sentences, layers=[1, 3], transform=_transform(tiny_model, [1, 2]))
    scores, _, _ = choice_scores(llm, ITEMS, transform=t)
    hooks = configure_new_hooks(monkeypatch, lambda hook: hook.set_host_round_trip(True))
    assert np.array_equal(capture(llm, sentences, layers=[1, 3], transform=_transform(tiny_model, [1, 2])), captured)
    assert np.array_equal(choice_scores(llm, ITEMS, transform=t)[0], scores)
    assert len(hooks) == 2 and all(h.take_tensor_paths()["round_trip"] > 0 for h in hooks)
