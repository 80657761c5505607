"""8-bit maps: M = I + q * scale (int8 q, one float32 scale per column), applied by the hook as
h' = h + alpha * ((h @ q) * scale + b). The tests parametrized by precision cover 4-bit maps
too (test_q4.py has the rest of theirs).

What is asserted: quantization stays within half a step of the map; the hook computes exactly
that formula on the model's real hidden states (read back with capture); the identity is
bit-identical to no transform; thread counts change nothing; files round-trip and bad ones are
refused.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from conftest import tiny_llm
from test_f16 import _decode_logits, _maps, _prompt_logits, _run
from test_transform_file import _assert_refused

import lingalign
from lingalign import LayerMap, Transform, _core
from lingalign.transform import quantize_delta

SENTENCES = ["the quick brown fox jumps over the lazy dog", "a dog", "over the lazy fox and the dog jumps"]


def test_quantize_delta_is_within_half_a_step():
    rng = np.random.default_rng(0)
    d = 48
    m = (np.eye(d) + 0.05 * rng.standard_normal((d, d))).astype(np.float32)
    m[:, 3] = 0.0
    m[3, 3] = 1.0  # a column equal to the identity's: scale 0, all steps 0
    q, scale = quantize_delta(m)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and q.shape == (d, d) and scale.shape == (d,)
    assert np.abs(q).max() == 127 and q.min() >= -127
    assert scale[3] == 0 and not q[:, 3].any()
    dense = LayerMap(delta_q8=q, delta_scale=scale).dense()
    err = np.abs(dense.astype(np.float64) - m)
    assert (err <= scale[None, :] / 2 * (1 + 1e-5) + 1e-7).all()
    # relative to the map's difference from I, the error is small: that is why I is left out
    assert np.linalg.norm(dense - m) / np.linalg.norm(m - np.eye(d)) < 0.01
    # the identity quantizes to exact zeros
    qi, si = quantize_delta(np.eye(d, dtype=np.float32))
    assert not qi.any() and not si.any()
    assert np.array_equal(LayerMap(delta_q8=qi, delta_scale=si).dense(), np.eye(d, dtype=np.float32))


def test_hook_applies_the_q8_formula_to_the_real_hidden_states(tiny_model, conversion):
    """Capture the last token's state at layer 1 without and with an 8-bit map there: the map
    turned h into h + alpha * ((h @ q) * scale + b), computed in float64 for reference."""
    t = _maps(tiny_model, [1]).to_precision("q8")
    lm = t.layers[1]
    assert t.precision == "q8" and lm.kind == "affine" and lm.matrix is None
    llm = tiny_llm(tiny_model)
    # all positions, sentences packed together: the many-rows kernel; the last token only, one
    # sentence per decode: one row, decode's kernel. (The reference h is read with the same
    # batching: llama.cpp's own arithmetic depends on it.)
    for positions, max_sequences in (("all", 32), ("last", 1)):
        h = lingalign.capture(llm, SENTENCES, layers=[1], pool="last", max_sequences=max_sequences, progress=False)[:, 0]
        for alpha in (1.0, 0.5, -0.5):
            y = lingalign.capture(
                llm, SENTENCES, layers=[1], pool="last", transform=t, alpha=alpha, positions=positions,
                max_sequences=max_sequences, progress=False,
            )[:, 0]
            h64 = h.astype(np.float64)
            delta = (h64 @ lm.delta_q8.astype(np.float64)) * lm.delta_scale + lm.bias
            np.testing.assert_allclose(y, h64 + alpha * delta, rtol=1e-5, atol=1e-5)
            assert not np.allclose(y, h, atol=1e-3)


@pytest.mark.parametrize("precision", ["q8", "q4"])
def test_quantized_map_moves_the_logits_as_the_f32_map_does(tiny_model, precision):
    t32 = _maps(tiny_model, range(4))
    tq = t32.to_precision(precision)
    plain, _, _ = _run(tiny_model, None, _prompt_logits, n_batch=8, n_ubatch=4)
    out32, _, _ = _run(tiny_model, t32, _prompt_logits, n_batch=8, n_ubatch=4)
    outq, rows, steering = _run(tiny_model, tq, _prompt_logits, n_batch=8, n_ubatch=4)
    assert rows > 0
    # up to the rounding: 255 steps per column in 8 bits; 15 in 4 bits, plus the hidden states'
    moved, err = np.abs(out32 - plain).max(), np.abs(outq - out32).max()
    assert err < {"q8": 0.05, "q4": 0.25}[precision] * moved
    d = tq.model.n_embd
    stored = {"q8": d * d, "q4": d * d // 2}[precision]
    assert steering._hook.map_bytes(0) == stored + 4 * d  # the bytes and the scales, no float copy


@pytest.mark.parametrize("precision", ["q8", "q4"])
def test_quantized_identity_is_bit_identical_to_no_transform(tiny_model, conversion, precision):
    tq = _maps(tiny_model, range(4), kind="identity").to_precision(precision)
    d = tq.model.n_embd
    assert tq.precision == precision and np.array_equal(tq.layers[0].dense(), np.eye(d, dtype=np.float32))
    for logits in (_prompt_logits, _decode_logits):
        plain, _, _ = _run(tiny_model, None, logits, n_batch=8, n_ubatch=4)
        out, rows, _ = _run(tiny_model, tq, logits, n_batch=8, n_ubatch=4)
        assert rows > 0
        assert np.array_equal(out, plain)


def test_q8_threads_give_the_same_logits(tmp_path):
    from tinymodel import write_tiny_llama

    path = write_tiny_llama(tmp_path / "wide.gguf", n_embd=256, n_layer=2, n_ff=256)
    t8 = _maps(path, [0, 1]).to_precision("q8")
    prompt = " ".join(["the quick brown fox"] * 8)
    kw = dict(n_ctx=256, n_batch=128, n_ubatch=128)
    for logits in (lambda llm: _prompt_logits(llm, prompt), _decode_logits):
        one, _, s1 = _run(path, t8, logits, n_threads=1, n_threads_batch=1, **kw)
        two, _, s2 = _run(path, t8, logits, n_threads=2, n_threads_batch=2, **kw)
        assert s1._hook.threads == 1 and s2._hook.threads == 2
        assert np.array_equal(one, two)


@pytest.mark.parametrize("precision", ["q8", "q4"])
def test_quantized_file_round_trip_and_conversions(tiny_model, tmp_path, precision):
    t32 = _maps(tiny_model, [0, 2]).to_precision("f32")
    t32.layers[3] = _maps(tiny_model, [3], kind="lowrank").layers[3]
    tq = t32.to_precision(precision)
    assert tq.precision == precision
    assert tq.layers[3].precision == "f16"  # low-rank factors are already small: float16
    path = tmp_path / f"{precision}.gguf"
    tq.save(path)
    part = f"delta_{precision}"
    types = {x.name: x.tensor_type for x in gguf.GGUFReader(str(path)).tensors}
    Q = gguf.GGMLQuantizationType
    assert types[f"blk.0.{part}"] == Q.I8 and types["blk.0.delta_scale"] == Q.F32 and types["blk.0.bias"] == Q.F32
    back = Transform.load(path)
    assert back.precision == precision and back.summary() == tq.summary()
    for name in (part, "delta_scale", "bias"):
        assert getattr(back.layers[0], name).tobytes() == getattr(tq.layers[0], name).tobytes()
    # back to float: the dense map, exactly
    f = back.to_precision("f32")
    assert getattr(f.layers[0], part) is None and np.array_equal(f.layers[0].matrix, back.layers[0].dense())
    d = tq.model.n_embd
    stored = {"q8": d * d, "q4": d * d // 2}[precision]  # bytes per map, against 4 d^2 in float32
    t32.save(tmp_path / "f32.gguf")
    assert path.stat().st_size < (tmp_path / "f32.gguf").stat().st_size - 2 * (4 * d * d - stored)


def test_bad_q8_maps_are_refused(tiny_model, tmp_path):
    fp = lingalign.fingerprint(tiny_model)
    d = fp.n_embd
    q = np.zeros((d, d), np.int8)
    s = np.ones(d, np.float32)
    cases = {
        "needs both delta_q8 and delta_scale": {"blk.1.delta_q8": q},
        "delta_scale contains NaN or Inf": {"blk.1.delta_q8": q, "blk.1.delta_scale": np.full(d, np.nan, np.float32)},
        "delta_q8 holds -128": {"blk.1.delta_q8": np.full((d, d), -128, np.int8), "blk.1.delta_scale": s},
        "delta_q8 has shape": {"blk.1.delta_q8": np.zeros((d, d - 1), np.int8), "blk.1.delta_scale": s},
        "blk.1.delta_q8 has ggml type F32, expected I8$": {"blk.1.delta_q8": q.astype(np.float32), "blk.1.delta_scale": s},
        "blk.1.map has ggml type I8": {"blk.1.map": q},
        "exactly one of a map, an 8-bit map": {"blk.1.map": np.eye(d, dtype=np.float32), "blk.1.delta_q8": q,
                                                  "blk.1.delta_scale": s},
    }
    _assert_refused(tmp_path, fp, cases)
    hook = _core.Hook(64, 4)
    with pytest.raises(ValueError, match="scale contains NaN or Inf"):
        hook.set_affine_q8(1, np.zeros((64, 64), np.int8), np.full(64, np.inf, np.float32))
    with pytest.raises(ValueError, match="scale has 3 values"):
        hook.set_affine_q8(1, np.zeros((64, 64), np.int8), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="map has 9 values"):
        hook.set_affine_q8(1, np.zeros((3, 3), np.int8), np.ones(64, np.float32))
    with pytest.raises(IndexError, match="unknown layer 9"):
        hook.set_affine_q8(9, np.zeros((64, 64), np.int8), np.ones(64, np.float32))


def test_q8_simd_and_portable_kernels_agree(tiny_model):
    """The AVX2 kernel (int8 converted in registers) and the portable one give the same bits."""
    t8 = _maps(tiny_model, range(4)).to_precision("q8")
    for logits in (_prompt_logits, _decode_logits):
        simd, _, _ = _run(tiny_model, t8, logits, n_batch=8, n_ubatch=4)
        _core.testing.set_portable_kernels(True)
        try:
            portable, _, _ = _run(tiny_model, t8, logits, n_batch=8, n_ubatch=4)
        finally:
            _core.testing.set_portable_kernels(False)
        assert np.array_equal(simd, portable)
