"""The device path (cpp/device_maps.h): maps applied by a ggml graph on the backend that owns the
tensor instead of by lingalign's CPU kernels. Mode 2 sends host tensors through it too, on ggml's
CPU backend, so that these tests cover the graph-building code without a GPU; tests/test_gpu.py
runs mode 1 on CUDA."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import hook_of, configure_new_hooks, tiny_llm
from test_experts import _clamp
from test_hook import _logits, _lowrank, _transform

import lingalign

EVERYWHERE = 2


def _llm(model):
    return tiny_llm(model, logits_all=True, n_batch=8, n_ubatch=4)


def _kernels_then_graph(model, t, alpha=1.0, llm=None):
    """Logits with the CPU kernels, then with the graph path, from the same Llama."""
    llm = llm or _llm(model)
    steering = lingalign.attach(llm, t, alpha=alpha)
    kernels = _logits(llm)
    assert steering.stats(reset=True)["tensors"]["device"] == 0
    hook_of(steering).set_device_maps(EVERYWHERE)
    graph = _logits(llm)
    paths = steering.stats(reset=True)["tensors"]
    assert paths["device"] > 0 and paths["host"] == 0, paths
    assert steering.stats()["device_maps"] == "active on CPU"
    return kernels, graph, steering


def _transforms(model):
    yield "f32", _transform(model, range(4))
    for precision in ("f16", "q8", "q4"):
        yield precision, _transform(model, range(4)).to_precision(precision)
    yield "lowrank", _lowrank(model, 2)
    yield "lowrank-f16", _lowrank(model, 2).to_precision("f16")
    yield "additive", _transform(model, [1, 3], kind="additive")
    yield "clamp", _clamp(model, 1, [3, 17, 100], [0.25, -1.5, 7.0])


@pytest.mark.parametrize("which", ["f32", "f16", "q8", "q4", "lowrank", "lowrank-f16", "additive", "clamp"])
def test_graph_path_matches_the_kernels(tiny_model, which):
    t = dict(_transforms(tiny_model))[which]
    plain = _logits(_llm(tiny_model))
    kernels, graph, _ = _kernels_then_graph(tiny_model, t, alpha=0.8)
    moved = np.abs(kernels - plain).max()
    assert moved > 0.01
    # The two sum the products in different orders (and ggml rounds float16 maps' inputs to
    # float16): float32 rounding, far below what the transform moves.
    assert np.abs(graph - kernels).max() < moved / 100


def test_identity_is_bit_identical_and_the_clamp_exact(tiny_model):
    plain = _logits(_llm(tiny_model))
    _, graph, _ = _kernels_then_graph(tiny_model, _transform(tiny_model, range(4), kind="identity"))
    assert np.array_equal(graph, plain)
    # At alpha 1 a clamp stores its values exactly, as the CPU code does.
    kernels, graph, _ = _kernels_then_graph(tiny_model, _clamp(tiny_model, 1, [3, 17, 100], [0.25, -1.5, 7.0]))
    assert np.array_equal(graph, kernels)


def test_last_token_policy_on_the_graph_path(tiny_model):
    llm = _llm(tiny_model)
    plain = _logits(llm)
    steering = lingalign.attach(llm, _transform(tiny_model, [0, 3], positions="last"))
    hook_of(steering).set_device_maps(EVERYWHERE)
    out = _logits(llm)
    assert steering.take_rows_transformed() == 2  # one row, at each of the two layers
    assert np.array_equal(out[:-1], plain[:-1])
    assert not np.allclose(out[-1], plain[-1], atol=1e-4)


def test_changed_transform_reaches_the_device(tiny_model):
    """Device weights are made once per layer; a new transform must replace them."""
    a, b = _transform(tiny_model, [1], seed=0), _transform(tiny_model, [1], seed=1)
    llm = _llm(tiny_model)
    steering = lingalign.attach(llm, b)
    with_b = _logits(llm)
    steering.set(a)
    hook_of(steering).set_device_maps(EVERYWHERE)
    with_a = _logits(llm)
    steering.set(b)
    again_b = _logits(llm)
    assert not np.allclose(with_a, with_b, atol=1e-3)
    assert np.abs(again_b - with_b).max() < np.abs(with_a - with_b).max() / 100


def test_capture_reads_captured_layers_on_the_host(tiny_model, monkeypatch):
    """A captured layer's rows are needed on the host: its transform runs there, on the CPU
    kernels (same bits as without the graph path); layers not captured take the graph."""
    from conftest import capture_array
    llm = tiny_llm(tiny_model)
    t = _transform(tiny_model, [1])
    sentences = ["hello there", "the dog"]
    kernels = capture_array(llm, sentences, layers=[1, 3], transform=t)
    hooks = configure_new_hooks(monkeypatch, lambda hook: hook.set_device_maps(EVERYWHERE))
    assert np.array_equal(capture_array(llm, sentences, layers=[1, 3], transform=t), kernels)
    graph = capture_array(llm, sentences, layers=[3], transform=t)
    plain = capture_array(llm, sentences, layers=[3])
    assert np.abs(graph[:, 0] - kernels[:, 1]).max() < np.abs(kernels[:, 1] - plain[:, 0]).max() / 100
    assert hooks[1].take_tensor_paths()["device"] > 0


def test_mode_is_checked_and_reported(tiny_model):
    steering = lingalign.attach(_llm(tiny_model))
    assert steering.stats()["device_maps"] == "off"
    assert steering.set_device_maps(True) == "ready"  # host tensors stay on the CPU kernels
    assert steering.set_device_maps(False) == "off"
    with pytest.raises(ValueError, match="device maps mode"):
        hook_of(steering).set_device_maps(3)


def test_several_sequences_per_batch(tiny_model, monkeypatch):
    """Choice scoring puts several items in one batch and, with positions='last', transforms
    each item's last context token: rows in several runs of one tensor, one graph."""
    from test_evaluate import ITEMS

    from lingalign.evaluate import choice_scores

    llm = tiny_llm(tiny_model)
    t = _transform(tiny_model, [1, 2], positions="last")
    plain, _, _ = choice_scores(llm, ITEMS)
    kernels, _, info = choice_scores(llm, ITEMS, transform=t)
    assert info["rows_transformed"] == 2 * len(ITEMS)
    hooks = configure_new_hooks(monkeypatch, lambda hook: hook.set_device_maps(EVERYWHERE))
    graph, _, info = choice_scores(llm, ITEMS, transform=t)
    assert info["rows_transformed"] == 2 * len(ITEMS)
    assert hooks[-1].take_tensor_paths()["device"] > 0
    assert np.abs(graph - kernels).max() < np.abs(kernels - plain).max() / 100


def test_switching_modes_starts_over(tiny_model):
    """The CPU backend that mode 2 started is not what mode 1 uses (mode 1 would start one for the
    tensor's own device; here there is none, the kernels serve); turning the path off and on
    again keeps the backend and its maps (lingalign bench does that every turn)."""
    llm = _llm(tiny_model)
    kernels, graph, steering = _kernels_then_graph(tiny_model, _transform(tiny_model, range(4)), llm=llm)
    assert steering.set_device_maps(True) == "ready"
    assert np.array_equal(_logits(llm), kernels)
    assert steering.stats(reset=True)["tensors"]["host"] > 0
    hook_of(steering).set_device_maps(EVERYWHERE)
    assert np.array_equal(_logits(llm), graph)
    steering.set_device_maps(False)
    hook_of(steering).set_device_maps(EVERYWHERE)
    assert steering.stats()["device_maps"] == "active on CPU"  # kept, before any decode
    assert np.array_equal(_logits(llm), graph)
