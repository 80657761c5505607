"""The hook on a GPU build of llama-cpp-python (CUDA, Metal): layers offloaded to the device keep
their residual stream in device memory, and the transforms must act there exactly as on the CPU.

Skipped where llama.cpp has no GPU offload (the CPU build that CI installs). On a GPU machine,
install a GPU build of llama-cpp-python 0.3.36 (docs/install.md) and run `python -m pytest tests/test_gpu.py`.
"""

from __future__ import annotations

import dataclasses

import llama_cpp
import numpy as np
import pytest
from conftest import tiny_llm
from test_hook import PROMPT, _logits, _transform

import lingalign
from conftest import capture_array as capture

pytestmark = pytest.mark.skipif(
    not llama_cpp.llama_supports_gpu_offload(), reason="this llama-cpp-python build has no GPU offload"
)

ALL_LAYERS = range(4)


def _llm(model, n_gpu_layers=-1):
    return tiny_llm(model, logits_all=True, n_batch=8, n_ubatch=4, n_gpu_layers=n_gpu_layers)


def _paths(llm) -> dict[str, int]:
    return lingalign.attach(llm).stats(reset=True)["tensors"]


@pytest.fixture(scope="module")
def gpu_plain(tiny_model):
    return _logits(_llm(tiny_model))


@pytest.fixture(scope="module")
def cpu_plain(tiny_model):
    return _logits(_llm(tiny_model, n_gpu_layers=0))


def test_tensors_live_on_the_device(tiny_model):
    """Guards the tests below: with every layer offloaded, no served tensor is in host memory."""
    llm = _llm(tiny_model)
    lingalign.attach(llm, _transform(tiny_model, ALL_LAYERS, kind="identity"))
    _logits(llm)
    paths = _paths(llm)
    assert paths["host"] == 0
    assert sum(paths.values()) >= 4 * 3  # 4 layers x 3 ubatches of the 9-token prompt


@pytest.mark.parametrize("device_maps", [False, True])
def test_identity_and_alpha_zero_are_bit_identical_on_gpu(tiny_model, gpu_plain, device_maps):
    llm = _llm(tiny_model)
    steering = lingalign.attach(llm, _transform(tiny_model, ALL_LAYERS, kind="identity"))
    steering.set_device_maps(device_maps)
    assert np.array_equal(_logits(llm), gpu_plain)
    assert steering.take_rows_transformed() > 0
    steering.set(_transform(tiny_model, ALL_LAYERS), alpha=0.0)
    assert np.array_equal(_logits(llm), gpu_plain)
    steering.clear()
    assert np.array_equal(_logits(llm), gpu_plain)


@pytest.mark.parametrize("precision", ["f32", "f16", "q8", "q4"])
@pytest.mark.parametrize("n_gpu_layers", [-1, 2])
@pytest.mark.parametrize("device_maps", [False, True])
def test_maps_on_gpu_match_the_cpu(tiny_model, cpu_plain, gpu_plain, precision, n_gpu_layers, device_maps):
    """The same transform on the device (all layers, or 2 of 4: a mixed graph) and on the CPU
    moves the logits the same way: the two differ by the GPU's rounding, far less than the move.
    device_maps: the maps run on the GPU (set_device_maps) rather than after a copy to the host;
    those cases have not run on a GPU yet (the round-trip ones passed on an H100)."""
    t = _transform(tiny_model, [0, 1, 3]).to_precision(precision)
    t = dataclasses.replace(t, layers={**t.layers, 2: _transform(tiny_model, [2], kind="additive").layers[2]})
    cpu = _llm(tiny_model, n_gpu_layers=0)
    lingalign.attach(cpu, t, alpha=0.8)
    on_cpu = _logits(cpu)
    gpu = _llm(tiny_model, n_gpu_layers=n_gpu_layers)
    steering = lingalign.attach(gpu, t, alpha=0.8)
    assert steering.set_device_maps(device_maps) == ("ready" if device_maps else "off")
    on_gpu = _logits(gpu)
    moved = np.abs(on_cpu - cpu_plain).max()
    rounding = np.abs(gpu_plain - cpu_plain).max() + 1e-4
    assert moved > 0.05
    assert np.abs(on_gpu - on_cpu).max() < max(10 * rounding, moved / 20)
    paths = _paths(gpu)
    assert (paths["device" if device_maps else "round_trip"] > 0) and paths["round_trip" if device_maps else "device"] == 0
    assert (paths["host"] > 0) == (n_gpu_layers != -1)  # 2 of 4 layers offloaded: both kinds
    if device_maps:
        assert steering.stats()["device_maps"].startswith("active on CUDA")


def test_last_token_policy_on_gpu(tiny_model, gpu_plain):
    """positions='last' changes the last prompt token's row only: earlier logits stay bit-identical."""
    llm = _llm(tiny_model)
    lingalign.attach(llm, _transform(tiny_model, ALL_LAYERS, positions="last"))
    out = _logits(llm)
    assert np.array_equal(out[:-1], gpu_plain[:-1])
    assert not np.allclose(out[-1], gpu_plain[-1], atol=1e-4)


def test_capture_on_gpu_matches_the_cpu(tiny_model):
    sentences = ["hello there", "a b c d e f g h i j k l", "the dog"]
    t = _transform(tiny_model, [1])
    on_cpu = capture(tiny_llm(tiny_model), sentences, transform=t, alpha=0.7)
    gpu = tiny_llm(tiny_model, n_gpu_layers=-1)
    on_gpu = capture(gpu, sentences, transform=t, alpha=0.7)
    spread = np.abs(on_cpu[1:] - on_cpu[:-1]).max(axis=(1, 2)).min()
    assert np.abs(on_gpu - on_cpu).max() < spread / 20


def test_generation_with_a_transform_on_gpu(tiny_model):
    """Decode, one token per llama_decode, through the announcement path used by generation."""
    outs = []
    for n_gpu_layers in (0, -1):
        llm = tiny_llm(tiny_model, n_gpu_layers=n_gpu_layers)
        lingalign.attach(llm, _transform(tiny_model, ALL_LAYERS, scale=0.5))
        outs.append(llm(PROMPT, max_tokens=8, temperature=0.0)["choices"][0]["text"])
    plain = tiny_llm(tiny_model, n_gpu_layers=-1)(PROMPT, max_tokens=8, temperature=0.0)["choices"][0]["text"]
    assert outs[0] == outs[1]
    assert outs[1] != plain
