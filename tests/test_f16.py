"""float16 storage of maps and low-rank factors (float32 accumulation), end to end.

What is asserted, and why it can be exact: the hook's float16 kernels convert the stored halves
to float32 exactly (every float16 is a float32) into a small buffer and run the float32 kernel
code on it: the panel kernel calls the float32 panel kernel itself, the decode kernel the same
accumulation step compiled the same way. So an f16 map and the f32 map holding the same
values (the halves converted back) compute the same products and add them in the same order:
the logits are compared bit for bit (np.array_equal), not within a tolerance. This holds for
both conversions (F16C and the portable one other CPUs use), which are checked against numpy
for all 65536 half bit patterns.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from conftest import tiny_llm
from test_transform_file import _assert_refused, _valid_kv, _write_raw

import lingalign
from lingalign import LayerMap, Transform, TransformFileError, _core

PROMPT = "the quick brown fox jumps over the lazy dog"


def _maps(model_path, layers, *, kind="affine", seed=0, scale=0.3, rank=5) -> Transform:
    """float32 maps whose values are exactly representable in float16."""
    fp = lingalign.fingerprint(model_path)
    rng = np.random.default_rng(seed)
    d = fp.n_embd
    out = {}
    for il in layers:
        bias = (scale * rng.standard_normal(d)).astype(np.float32)
        if kind == "identity":
            out[il] = LayerMap(matrix=np.eye(d, dtype=np.float32))
        elif kind == "affine":
            m = np.eye(d) + scale * rng.standard_normal((d, d)) / np.sqrt(d)
            out[il] = LayerMap(matrix=m.astype(np.float16).astype(np.float32), bias=bias)
        else:
            u = scale * rng.standard_normal((d, rank)) / np.sqrt(d)
            vt = rng.standard_normal((rank, d))
            out[il] = LayerMap(
                lowrank_u=u.astype(np.float16).astype(np.float32),
                lowrank_vt=vt.astype(np.float16).astype(np.float32),
                bias=bias,
            )
    return Transform(layers=out, model=fp, method="test")


def _prompt_logits(llm, prompt=PROMPT) -> np.ndarray:
    """Logits of every prompt token, the prompt evaluated in multi-row ubatches."""
    tokens = llm.tokenize(prompt.encode())
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], copy=True)


def _decode_logits(llm, prompt=PROMPT) -> np.ndarray:
    """Logits of every token, evaluated one token per decode (the few-rows kernel at every layer)."""
    tokens = llm.tokenize(prompt.encode())
    llm.reset()
    for tok in tokens:
        llm.eval([tok])
    return np.array(llm.scores[: len(tokens)], copy=True)


def _run(model_path, transform, logits, **llm_kwargs):
    llm = tiny_llm(model_path, logits_all=True, **llm_kwargs)
    steering = lingalign.attach(llm)
    if transform is not None:
        steering.set(transform)
    out = logits(llm)
    rows = steering.take_rows_transformed()
    return out, rows, steering


def test_half_to_float_matches_numpy_for_every_bit_pattern():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):
        expected = bits.view(np.float16).astype(np.float32)
    # portable conversion: bit for bit, NaN payloads included
    portable = _core.testing.half_to_float(bits, portable=True)
    assert portable.dtype == np.float32 and portable.shape == (1 << 16,)
    assert np.array_equal(portable.view(np.uint32), expected.view(np.uint32))
    # the kernels' conversion (F16C here if the CPU has it): the same, except that hardware may
    # quiet a signaling NaN; it stays a NaN of the same sign (maps never hold NaN anyway)
    kernel = _core.testing.half_to_float(bits, portable=False)
    nan = np.isnan(expected)
    assert np.array_equal(kernel[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert np.isnan(kernel[nan]).all()
    assert np.array_equal(np.signbit(kernel[nan]), np.signbit(expected[nan]))
    # spot checks of the edge cases by value
    assert _core.testing.half_to_float(np.array([0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x8000], np.uint16)).tolist() == [
        2.0**-24, 1023 * 2.0**-24, 2.0**-14, 65504.0, float("inf"), float("-inf"), -0.0,
    ]


@pytest.mark.parametrize("kind", ["affine", "lowrank"])
def test_f16_map_equals_f32_map_of_the_same_values(tiny_model, conversion, kind):
    t32 = _maps(tiny_model, range(4), kind=kind)
    t16 = t32.to_precision("f16")
    assert t16.precision == "f16" and t32.precision == "f32"
    for logits in (_prompt_logits, _decode_logits):
        out32, rows32, _ = _run(tiny_model, t32, logits, n_batch=8, n_ubatch=4)
        out16, rows16, steering = _run(tiny_model, t16, logits, n_batch=8, n_ubatch=4)
        plain, _, _ = _run(tiny_model, None, logits, n_batch=8, n_ubatch=4)
        assert rows16 == rows32 > 0
        assert not np.allclose(out16, plain, atol=1e-4)  # the maps really act
        assert np.array_equal(out16, out32)
    # the hook holds the halves, not a float32 copy
    d = t16.model.n_embd
    assert steering._hook.map_bytes(0) == (d * d if kind == "affine" else 2 * d * 5) * 2


def test_f16_map_equals_f32_map_with_threads_and_long_ubatches(tmp_path):
    """Columns split between the kernel threads (enough work to use them), in prompt processing
    and in decode, f16 and f32 alike: the same sums as one thread."""
    from tinymodel import write_tiny_llama

    path = write_tiny_llama(tmp_path / "wide.gguf", n_embd=256, n_layer=2, n_ff=256)
    prompt = " ".join(["the quick brown fox"] * 8)
    t32 = _maps(path, [0, 1])
    t16 = t32.to_precision("f16")
    kw = dict(n_ctx=256, n_batch=128, n_ubatch=128, n_threads=2)
    out32, _, _ = _run(path, t32, lambda llm: _prompt_logits(llm, prompt), **kw)
    out16, _, steering = _run(path, t16, lambda llm: _prompt_logits(llm, prompt), **kw)
    assert steering._hook.threads == 2
    assert out16.shape[0] >= 32
    assert np.array_equal(out16, out32)
    # decode: one row, its 256 columns split between the threads (256^2 multiply-adds per layer)
    kw = dict(n_ctx=256, n_batch=128, n_ubatch=128)
    one32, _, one = _run(path, t32, _decode_logits, n_threads=1, n_threads_batch=1, **kw)
    two32, _, two = _run(path, t32, _decode_logits, n_threads=2, n_threads_batch=2, **kw)
    two16, _, _ = _run(path, t16, _decode_logits, n_threads=2, n_threads_batch=2, **kw)
    assert one._hook.threads == 1 and two._hook.threads == 2
    assert np.array_equal(one32, two32)
    assert np.array_equal(two16, two32)


def test_f16_identity_is_bit_identical_to_no_transform(tiny_model, conversion):
    t16 = _maps(tiny_model, range(4), kind="identity").to_precision("f16")
    assert t16.layers[0].matrix.dtype == np.float16
    for logits in (_prompt_logits, _decode_logits):
        plain, _, _ = _run(tiny_model, None, logits, n_batch=8, n_ubatch=4)
        out, rows, _ = _run(tiny_model, t16, logits, n_batch=8, n_ubatch=4)
        assert rows > 0
        assert np.array_equal(out, plain)


def test_f16_file_round_trip_is_exact(tiny_model, tmp_path):
    fp = lingalign.fingerprint(tiny_model)
    rng = np.random.default_rng(7)
    d = fp.n_embd
    t = Transform(
        layers={
            0: LayerMap(matrix=rng.standard_normal((d, d)).astype(np.float16), bias=rng.standard_normal(d).astype(np.float32)),
            1: LayerMap(lowrank_u=rng.standard_normal((d, 4)).astype(np.float16), lowrank_vt=rng.standard_normal((4, d)).astype(np.float16)),
            2: LayerMap(vector=rng.standard_normal(d).astype(np.float32)),
            3: LayerMap(matrix=rng.standard_normal((d, d)).astype(np.float32)),  # f16 and f32 maps may mix
        },
        model=fp,
        method="ridge",
    )
    path = tmp_path / "f16.gguf"
    t.save(path)
    types = {x.name: x.tensor_type for x in gguf.GGUFReader(str(path)).tensors}
    F16, F32 = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    assert types == {
        "blk.0.map": F16, "blk.0.bias": F32, "blk.1.lr_u": F16, "blk.1.lr_vt": F16, "blk.2.vector": F32, "blk.3.map": F32,
    }
    back = Transform.load(path)
    assert back.summary() == t.summary()
    for il, lm in t.layers.items():
        for part in ("matrix", "bias", "vector", "lowrank_u", "lowrank_vt"):
            a, b = getattr(lm, part), getattr(back.layers[il], part)
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape
                assert a.tobytes() == b.tobytes()
    # f16 -> f32 is exact, and back
    t32 = back.to_precision("f32")
    assert t32.layers[0].matrix.dtype == np.float32
    assert np.array_equal(t32.layers[0].matrix, t.layers[0].matrix.astype(np.float32))
    assert t32.to_precision("f16").layers[0].matrix.tobytes() == t.layers[0].matrix.tobytes()
    assert back.layers[0].dense().dtype == np.float32
    assert np.array_equal(back.layers[0].dense(), t.layers[0].matrix.astype(np.float32))
    np.testing.assert_allclose(
        back.layers[1].dense(),
        np.eye(d) + t.layers[1].lowrank_u.astype(np.float64) @ t.layers[1].lowrank_vt.astype(np.float64),
        rtol=1e-6, atol=1e-5,
    )
    # half the bytes for the f16 map
    t.to_precision("f32").save(tmp_path / "f32.gguf")
    assert path.stat().st_size < (tmp_path / "f32.gguf").stat().st_size - 2 * d * d


def test_f16_where_f32_is_required_is_refused(tiny_model, tmp_path):
    fp = lingalign.fingerprint(tiny_model)
    d = fp.n_embd
    cases = {
        "blk.1.bias has ggml type F16, expected F32$": {
            "blk.1.map": np.eye(d, dtype=np.float16), "blk.1.bias": np.zeros(d, np.float16)},
        "blk.1.vector has ggml type F16, expected F32$": {"blk.1.vector": np.zeros(d, np.float16)},
        "blk.1.clamp_value has ggml type F16, expected F32$": {
            "blk.1.clamp_index": np.arange(3, dtype=np.int32), "blk.1.clamp_value": np.zeros(3, np.float16)},
        "blk.1.clamp_index has ggml type F16, expected I32$": {
            "blk.1.clamp_index": np.arange(3, dtype=np.float16), "blk.1.clamp_value": np.zeros(3, np.float32)},
        "lr_u is float16 and lr_vt float32": {
            "blk.1.lr_u": np.zeros((d, 3), np.float16), "blk.1.lr_vt": np.zeros((3, d), np.float32)},
        "map contains NaN or Inf": {"blk.1.map": np.full((d, d), np.inf, np.float16)},
        "map has shape": {"blk.1.map": np.zeros((d, d + 1), np.float16)},
    }
    _assert_refused(tmp_path, fp, cases)
    # a valid f16 map with an f32 bias loads
    path = tmp_path / "good.gguf"
    _write_raw(path, kv=_valid_kv(fp, [1]), tensors={"blk.1.map": np.eye(d, dtype=np.float16), "blk.1.bias": np.zeros(d, np.float32)})
    assert Transform.load(path).layers[1].matrix.dtype == np.float16


def test_f16_validation_and_conversion_errors(tiny_model):
    fp = lingalign.fingerprint(tiny_model)
    d = fp.n_embd
    lm = LayerMap(matrix=np.eye(d, dtype=np.float16), bias=np.zeros(d, np.float16))
    with pytest.raises(TransformFileError, match="bias is float16, expected float32$"):
        lm.validate(0, d)
    with pytest.raises(TransformFileError, match="vector is float16, expected float32$"):
        LayerMap(vector=np.zeros(d, np.float16)).validate(0, d)
    with pytest.raises(TransformFileError, match="map is float64, expected float32 or float16"):
        LayerMap(matrix=np.eye(d)).validate(0, d)
    LayerMap(matrix=np.eye(d, dtype=np.float16), bias=np.zeros(d, np.float32)).validate(0, d)
    big = Transform(layers={1: LayerMap(matrix=np.full((d, d), 1e5, np.float32))}, model=fp, method="test")
    with pytest.raises(TransformFileError, match="layer 1: map has values beyond float16's range"):
        big.to_precision("f16")
    with pytest.raises(TransformFileError, match="unknown precision"):
        big.to_precision("bf16")
    # vectors, biases and clamps are left as they are
    t = Transform(
        layers={
            0: LayerMap(vector=np.ones(d, np.float32)),
            1: LayerMap(clamp_index=np.arange(2, dtype=np.int32), clamp_value=np.ones(2, np.float32)),
        },
        model=fp,
        method="test",
    )
    h = t.to_precision("f16")
    assert h.precision == "f32" and h.layers[0].vector.dtype == np.float32 and h.layers[1].clamp_value.dtype == np.float32


def test_cpp_side_checks_f16_maps():
    hook = _core.Hook(64, 4)
    with pytest.raises(ValueError, match="NaN or Inf"):
        hook.set_affine(1, np.full((64, 64), np.nan, np.float16))
    with pytest.raises(ValueError, match="NaN or Inf"):
        hook.set_lowrank(1, np.zeros((64, 2), np.float16), np.full((2, 64), -np.inf, np.float16))
    with pytest.raises(ValueError, match="map has 9 values"):
        hook.set_affine(1, np.zeros((3, 3), np.float16))
    with pytest.raises(ValueError, match="both be float16 or neither"):
        hook.set_lowrank(1, np.zeros((64, 2), np.float16), np.zeros((2, 64), np.float32))
    # a non-contiguous float16 array is stored as float16 (copied contiguous), not converted
    hook.set_affine(1, np.eye(128, dtype=np.float16)[::2, ::2])
    assert hook.map_bytes(1) == 64 * 64 * 2
    hook.set_lowrank(2, np.zeros((64, 3), np.float16), np.zeros((3, 64), np.float16), np.zeros(64, np.float32))
    assert hook.map_bytes(2) == 2 * 64 * 3 * 2
    hook.set_affine(1, np.eye(64))  # float64: stored as float32, as before
    assert hook.map_bytes(1) == 64 * 64 * 4
    hook.set_additive(1, np.zeros(64, np.float32))
    assert hook.map_bytes(1) == 0


def test_kernels_report_the_conversion_they_use():
    """F16C where the CPU has it (x86-64 Linux: the 'f16c' cpuinfo flag), never in portable mode."""
    import platform
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.is_file():
        pytest.skip("needs x86-64 Linux to know whether the CPU has F16C")
    has_f16c = any(line.startswith("flags") and " f16c" in line for line in cpuinfo.read_text().splitlines())
    assert _core.testing.half_conversion_uses_f16c() == has_f16c
    _core.testing.set_portable_kernels(True)
    try:
        assert not _core.testing.half_conversion_uses_f16c()
    finally:
        _core.testing.set_portable_kernels(False)
