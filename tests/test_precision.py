"""Map precisions, end to end: float32 (the reference), float16, 8-bit and 4-bit maps.

The tests that take the `precision` fixture run once per precision ("f32", "f16", "q8", "q4");
where a check means nothing for a precision, the test says so and skips that case with the
reason. The tests after them check what only one precision has.

float16 (f16): maps and low-rank factors stored as halves, accumulated in float32. The hook's
float16 kernels convert the stored halves to float32 exactly (every float16 is a float32) into a
small buffer and run the float32 kernel code on it: the panel kernel calls the float32 panel
kernel itself, the decode kernel the same accumulation step compiled the same way. So an f16 map
and the f32 map holding the same values (the halves converted back) compute the same products and
add them in the same order: the logits are compared bit for bit (np.array_equal), not within a
tolerance. This holds for both conversions (F16C and the portable one other CPUs use), which are
checked against numpy for all 65536 half bit patterns.

8-bit maps (q8): M = I + q * scale (int8 q, one float32 scale per column), applied by the hook as
h' = h + alpha * ((h @ q) * scale + b).

4-bit maps (q4): M = I + q * scale (q in -8..7, two values per byte; one float32 scale per
column), applied with integer dot products: each hidden state h is quantized to int8 per block of
32 (scale max|h| / 127, nearest even), so h' = h + alpha * ((hq @ q) * hs * scale + b).

What is asserted: quantization stays within half a step of the map and nibbles round-trip; the
hook computes exactly each precision's formula on the model's real hidden states (read back with
capture), also for widths that are not whole blocks and panels; f16 maps give the f32 map's bits
and quantized maps logits close to it; the identity is bit-identical to no transform; thread
counts and the portable kernels change nothing; files round-trip and bad ones are refused.
"""

from __future__ import annotations

import dataclasses

import gguf
import numpy as np
import pytest
from conftest import tiny_llm
from test_transform_file import _assert_refused, _valid_kv, _write_raw

import lingalign
from lingalign import LayerMap, Transform, TransformFileError, _core
from lingalign.layer import Q4_MAX, Q8_MAX, pack_nibbles, quantize_delta, unpack_nibbles

PROMPT = "the quick brown fox jumps over the lazy dog"
SENTENCES = ["the quick brown fox jumps over the lazy dog", "a dog", "over the lazy fox and the dog jumps"]

PRECISIONS = ("f32", "f16", "q8", "q4")
QUANTIZED = ("q8", "q4")
Q_MAX = {"q8": Q8_MAX, "q4": Q4_MAX}
# where each precision keeps a full map: the LayerMap field, its dtype, values per stored column
STORED = {"f32": ("matrix", np.float32, 1), "f16": ("matrix", np.float16, 1), "q8": ("delta_q8", np.int8, 1),
          "q4": ("delta_q4", np.int8, 2)}
RANK = 5  # of _maps' low-rank maps


@pytest.fixture(params=PRECISIONS)
def precision(request) -> str:
    """The map precision under test: "f32" (the reference), "f16", "q8" or "q4"."""
    return request.param


def only_for(precision: str, which: tuple[str, ...], reason: str) -> None:
    """Skip this case, saying why, unless `precision` is one of `which`."""
    if precision not in which:
        pytest.skip(f"not for {precision}: {reason}")


def hook_stats(steering, layer: int = 0) -> dict[str, int]:
    """The hook diagnostics these tests read: its kernel threads, and the bytes of `layer`'s map
    as the hook stores it (a quantized map's scales counted, not the bias). The only place in
    this file's helper for Steering.stats())."""
    stats = steering.stats()
    return {"threads": stats["kernel_threads"], "map_bytes": stats["map_bytes"].get(layer, 0)}


def _assert_same_tensors(t: Transform, back: Transform, parts: tuple[str, ...]) -> None:
    """Every listed tensor of every layer is in both or neither, with the same dtype, shape and bytes."""
    for il, lm in t.layers.items():
        for part in parts:
            a, b = getattr(lm, part), getattr(back.layers[il], part)
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape
                assert a.tobytes() == b.tobytes()


def _maps(model_path, layers, *, kind="affine", seed=0, scale=0.3, rank=RANK) -> Transform:
    """float32 maps whose values are exactly representable in float16."""
    fp = lingalign.model.fingerprint(model_path)
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


def _portable(run):
    """run() with the portable kernels, then back to the default ones."""
    _core.testing.set_portable_kernels(True)
    try:
        return run()
    finally:
        _core.testing.set_portable_kernels(False)


def _assert_stored_as(lm: LayerMap, precision: str) -> None:
    """lm holds a full map [d, d] at `precision`, in that precision's field only."""
    part, dtype, per_byte = STORED[precision]
    d = lm.dense().shape[0]
    stored = getattr(lm, part)
    assert lm.precision == precision and lm.kind == "affine"
    assert stored.dtype == dtype and stored.shape == (d, d // per_byte)
    assert all(getattr(lm, other) is None for other in {"matrix", "delta_q8", "delta_q4"} - {part})


def _expected_map_bytes(precision: str, d: int, kind: str) -> int:
    """What the hook stores for one of _maps' maps: no float copy of a float16 or quantized map."""
    if kind == "lowrank":  # q8 and q4 keep low-rank factors as float16
        return 2 * d * RANK * (4 if precision == "f32" else 2)
    return {"f32": 4 * d * d, "f16": 2 * d * d, "q8": d * d + 4 * d, "q4": d * d // 2 + 4 * d}[precision]


# ---------------------------------------------------------------------------------------------
# Every precision


@pytest.mark.parametrize("kind", ["affine", "lowrank"])
def test_map_moves_the_logits_as_the_f32_map_does(tiny_model, conversion, precision, kind):
    """The f32 map of values float16 holds exactly, and the same map at `precision`. f16: the same
    bits (see the module's docstring); f32: the reference against itself, so the same bits from a
    second run. q8 and q4: within their rounding (255 steps per column in 8 bits; 15 in 4 bits,
    plus the hidden states'). Low-rank maps are float16 factors at q8 and q4 too: the same bits."""
    t32 = _maps(tiny_model, range(4), kind=kind)
    tp = t32.to_precision(precision)
    assert t32.precision == "f32"
    assert tp.precision == (precision if kind == "affine" or precision == "f32" else "f16")
    exact = precision in ("f32", "f16") or kind == "lowrank"
    for logits in (_prompt_logits, _decode_logits):
        out32, rows32, _ = _run(tiny_model, t32, logits, n_batch=8, n_ubatch=4)
        outp, rowsp, steering = _run(tiny_model, tp, logits, n_batch=8, n_ubatch=4)
        plain, _, _ = _run(tiny_model, None, logits, n_batch=8, n_ubatch=4)
        assert rowsp == rows32 > 0
        assert not np.allclose(outp, plain, atol=1e-4)  # the maps really act
        if exact:
            assert np.array_equal(outp, out32)
        else:
            moved, err = np.abs(out32 - plain).max(), np.abs(outp - out32).max()
            assert err < {"q8": 0.05, "q4": 0.25}[precision] * moved
    # the hook holds the halves or the bytes and scales, not a float32 copy
    assert hook_stats(steering)["map_bytes"] == _expected_map_bytes(precision, tp.model.n_embd, kind)


def test_identity_is_bit_identical_to_no_transform(tiny_model, conversion, precision):
    tp = _maps(tiny_model, range(4), kind="identity").to_precision(precision)
    d = tp.model.n_embd
    assert tp.precision == precision
    _assert_stored_as(tp.layers[0], precision)
    assert np.array_equal(tp.layers[0].dense(), np.eye(d, dtype=np.float32))
    for logits in (_prompt_logits, _decode_logits):
        plain, _, _ = _run(tiny_model, None, logits, n_batch=8, n_ubatch=4)
        out, rows, _ = _run(tiny_model, tp, logits, n_batch=8, n_ubatch=4)
        assert rows > 0
        assert np.array_equal(out, plain)


def test_threads_and_the_portable_kernels_give_the_same_logits(tmp_path, precision):
    """Columns split between the kernel threads (enough work to use them), in prompt processing
    (long ubatches) and in decode (one row, its columns split between the threads): the same sums
    as one thread, and as the portable kernels. f16 also gives the f32 map's bits with threads."""
    from tinymodel import write_tiny_llama

    # 256: 256^2 multiply-adds per layer in decode; 208 for q4: 3 groups of 4 panels + 1
    width = 208 if precision == "q4" else 256
    path = write_tiny_llama(tmp_path / "wide.gguf", n_embd=width, n_layer=2, n_ff=256)
    t32 = _maps(path, [0, 1])
    tp = t32.to_precision(precision)
    prompt = " ".join(["the quick brown fox"] * 8)
    kw = dict(n_ctx=256, n_batch=128, n_ubatch=128)
    for name, logits in (("prompt", lambda llm: _prompt_logits(llm, prompt)), ("decode", _decode_logits)):
        one, _, s1 = _run(path, tp, logits, n_threads=1, n_threads_batch=1, **kw)
        two, rows, s2 = _run(path, tp, logits, n_threads=2, n_threads_batch=2, **kw)
        assert rows > 0 and hook_stats(s1)["threads"] == 1 and hook_stats(s2)["threads"] == 2
        if name == "prompt":
            assert two.shape[0] >= 32
        assert np.array_equal(one, two)
        portable, _, _ = _portable(lambda: _run(path, tp, logits, n_threads=2, n_threads_batch=2, **kw))
        assert np.array_equal(two, portable)
        if precision == "f16":
            two32, _, _ = _run(path, t32, logits, n_threads=2, n_threads_batch=2, **kw)
            assert np.array_equal(two, two32)


def test_simd_and_portable_kernels_agree(tiny_model, precision):
    """The SIMD kernels (for q8: int8 converted in registers by AVX2) and the portable ones give
    the same bits."""
    tp = _maps(tiny_model, range(4)).to_precision(precision)
    for logits in (_prompt_logits, _decode_logits):
        simd, _, _ = _run(tiny_model, tp, logits, n_batch=8, n_ubatch=4)
        portable, _, _ = _portable(lambda: _run(tiny_model, tp, logits, n_batch=8, n_ubatch=4))
        assert np.array_equal(simd, portable)


def _quantized_rows(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hook's quantization of rows h [n, d] (float32) for 4-bit maps: per block of 32,
    hs = max|h| / 127 and hq = rint(h * (127 / max|h|)), in float32 as the C++ code computes it."""
    n, d = h.shape
    hq = np.zeros((n, d))
    hs = []
    for j0 in range(0, d, 32):
        x = h[:, j0 : j0 + 32].astype(np.float32)
        amax = np.abs(x).max(axis=1)
        with np.errstate(divide="ignore"):
            inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
        hq[:, j0 : j0 + 32] = np.clip(np.rint(x * inv[:, None]), -127, 127)
        hs.append(amax / np.float32(127))
    return hq, np.stack(hs, axis=1)


def _q4_product(h: np.ndarray, q: np.ndarray) -> np.ndarray:
    """hq @ q scaled block by block, in float64: what the kernel computes for rows h [n, d] and a
    4-bit map q [d, d] (values -8..7), before the column scales."""
    hq, hs = _quantized_rows(h)
    acc = np.zeros((h.shape[0], q.shape[1]))
    for b, j0 in enumerate(range(0, h.shape[1], 32)):
        acc += (hq[:, j0 : j0 + 32] @ q[j0 : j0 + 32].astype(np.float64)) * hs[:, b : b + 1]
    return acc


def _delta(h: np.ndarray, lm: LayerMap, precision: str) -> np.ndarray:
    """What the hook adds to rows h (float32) at alpha 1, in float64: (h @ M + b) - h for a float
    map, (h @ q) * scale + b for an 8-bit one, (hq @ q) * hs * scale + b for a 4-bit one."""
    h64 = h.astype(np.float64)
    if precision in ("f32", "f16"):
        return h64 @ lm.matrix.astype(np.float64) + lm.bias - h64
    if precision == "q8":
        return (h64 @ lm.delta_q8.astype(np.float64)) * lm.delta_scale + lm.bias
    return _q4_product(h, unpack_nibbles(lm.delta_q4)) * lm.delta_scale + lm.bias


@pytest.fixture(scope="module")
def narrow_model(tmp_path_factory):
    """A model 40 wide: one whole block of 32 and a part, two whole panels of 16 and a part."""
    from tinymodel import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("narrow") / "narrow.gguf", n_embd=40, n_head=4, n_ff=96)


@pytest.mark.parametrize("width", ["tiny", "narrow"])
def test_hook_applies_the_formula_to_the_real_hidden_states(tiny_model, narrow_model, width, conversion, precision):
    """Capture the last token's state at layer 1 without and with a map there: the map turned h
    into h + alpha * delta, delta the precision's formula (_delta) computed in float64 for
    reference; for q8 and q4 that is also close to what the float32 map they came from gives."""
    path = tiny_model if width == "tiny" else narrow_model
    t32 = _maps(path, [1])
    t = t32.to_precision(precision)
    lm = t.layers[1]
    assert t.precision == precision
    _assert_stored_as(lm, precision)
    llm = tiny_llm(path)
    # all positions, sentences packed together: many rows per call; the last token only, one
    # sentence per decode: one row, decode's kernel. (The reference h is read with the same
    # batching: llama.cpp's own arithmetic depends on it.)
    for positions, max_sequences in (("all", 32), ("last", 1)):
        h = lingalign.capture(llm, SENTENCES, layers=[1], pool="last", max_sequences=max_sequences, progress=False).layer(1)
        for alpha in (1.0, 0.5, -0.5):
            y = lingalign.capture(
                llm, SENTENCES, layers=[1], pool="last", transform=t, alpha=alpha, positions=positions,
                max_sequences=max_sequences, progress=False,
            ).layer(1)
            h64 = h.astype(np.float64)
            np.testing.assert_allclose(y, h64 + alpha * _delta(h, lm, precision), rtol=1e-5, atol=1e-5)
            assert not np.allclose(y, h, atol=1e-3)
            if precision in QUANTIZED:
                exact = h64 + alpha * ((h64 @ t32.layers[1].matrix.astype(np.float64)) - h64 + t32.layers[1].bias)
                moved = np.linalg.norm(exact - h64)
                assert moved > 1e-2 and np.linalg.norm(y - exact) < {"q8": 0.05, "q4": 0.2}[precision] * moved


def test_file_round_trip_and_conversions(tiny_model, tmp_path, precision):
    """Full maps at `precision`, a low-rank map (float16 factors at every precision but f32) and
    biases (float32): saved, loaded back with the same bytes, converted back to float32."""
    t32 = _maps(tiny_model, [0, 2]).to_precision("f32")
    t32 = dataclasses.replace(t32, layers={**t32.layers, 3: _maps(tiny_model, [3], kind="lowrank").layers[3]})
    tp = t32.to_precision(precision)
    assert tp.precision == precision
    _assert_stored_as(tp.layers[0], precision)
    assert tp.layers[3].precision == ("f32" if precision == "f32" else "f16")  # low-rank factors are already small
    path = tmp_path / f"{precision}.gguf"
    tp.save(path)
    types = {x.name: x.tensor_type for x in gguf.GGUFReader(str(path)).tensors}
    Q = gguf.GGMLQuantizationType
    half = Q.F32 if precision == "f32" else Q.F16
    assert types["blk.0.bias"] == Q.F32 and types["blk.3.lr_u"] == half and types["blk.3.lr_vt"] == half
    if precision in QUANTIZED:
        assert types[f"blk.0.delta_{precision}"] == Q.I8 and types["blk.0.delta_scale"] == Q.F32
        assert "blk.0.map" not in types
    else:
        assert types["blk.0.map"] == half and "blk.0.delta_scale" not in types
    back = Transform.load(path)
    assert back.precision == precision and back.summary() == tp.summary()
    _assert_same_tensors(tp, back, ("matrix", "bias", "vector", "lowrank_u", "lowrank_vt", "delta_q8", "delta_q4",
                                     "delta_scale"))
    # back to float: the dense map, exactly
    f = back.to_precision("f32")
    assert f.precision == "f32" and f.layers[0].delta_q8 is None and f.layers[0].delta_q4 is None
    assert np.array_equal(f.layers[0].matrix, back.layers[0].dense())
    assert np.array_equal(f.layers[0].matrix, tp.layers[0].dense())
    if precision == "f32":
        return  # the sizes below compare with f32 itself
    d = tp.model.n_embd
    stored = {"f16": 2 * d * d, "q8": d * d, "q4": d * d // 2}[precision]  # bytes per map, against 4 d^2 in float32
    t32.save(tmp_path / "f32.gguf")
    assert path.stat().st_size < (tmp_path / "f32.gguf").stat().st_size - 2 * (4 * d * d - stored)


def test_to_precision_leaves_vectors_and_clamps_as_they_are(tiny_model, precision):
    fp = lingalign.model.fingerprint(tiny_model)
    d = fp.n_embd
    t = Transform(
        layers={
            0: LayerMap(vector=np.ones(d, np.float32)),
            1: LayerMap(clamp_index=np.arange(2, dtype=np.int32), clamp_value=np.ones(2, np.float32)),
        },
        model=fp,
        method="test",
    )
    h = t.to_precision(precision)
    assert h.precision == "f32" and h.layers[0].vector.dtype == np.float32 and h.layers[1].clamp_value.dtype == np.float32
    assert np.array_equal(h.layers[0].vector, t.layers[0].vector)
    assert np.array_equal(h.layers[1].clamp_index, t.layers[1].clamp_index)
    assert np.array_equal(h.layers[1].clamp_value, t.layers[1].clamp_value)


def test_quantization_is_within_half_a_step(precision):
    only_for(precision, QUANTIZED, "float maps have no per-column quantization steps")
    qmax = Q_MAX[precision]
    rng = np.random.default_rng(0)
    d = 48
    base = (np.eye(d) + 0.05 * rng.standard_normal((d, d))).astype(np.float32)
    with_identity_column = base.copy()
    with_identity_column[:, 3] = 0.0
    with_identity_column[3, 3] = 1.0  # a column equal to the identity's: scale 0, all steps 0
    for m in (base, with_identity_column):
        q, scale = quantize_delta(m, qmax)
        assert q.dtype == np.int8 and scale.dtype == np.float32 and q.shape == (d, d) and scale.shape == (d,)
        assert np.abs(q).max() == qmax and q.min() >= -qmax
        lm = LayerMap(matrix=m).to_precision(precision)
        _assert_stored_as(lm, precision)
        stored = unpack_nibbles(lm.delta_q4) if precision == "q4" else lm.delta_q8
        assert np.array_equal(stored, q) and np.array_equal(lm.delta_scale, scale)
        dense = lm.dense()
        err = np.abs(dense.astype(np.float64) - m)
        assert (err <= scale[None, :] / 2 * (1 + 1e-5) + 1e-7).all()
        # relative to the map's difference from I, the error is small: that is why I is left out
        assert np.linalg.norm(dense - m) / np.linalg.norm(m - np.eye(d)) < {"q8": 0.01, "q4": 0.15}[precision]
    assert scale[3] == 0 and not q[:, 3].any()  # with_identity_column's
    # the identity quantizes to exact zeros
    qi, si = quantize_delta(np.eye(d, dtype=np.float32), qmax)
    assert not qi.any() and not si.any()
    ident = LayerMap(matrix=np.eye(d, dtype=np.float32)).to_precision(precision)
    assert not (unpack_nibbles(ident.delta_q4) if precision == "q4" else ident.delta_q8).any()
    assert not ident.delta_scale.any() and np.array_equal(ident.dense(), np.eye(d, dtype=np.float32))


def _refused_files(precision: str, d: int) -> dict[str, dict[str, np.ndarray]]:
    """Bad tensors for layer 1, by the message they are refused with."""
    s = np.ones(d, np.float32)
    if precision == "f16":  # float16 where float32 (or int32) is required, and bad f16 maps
        return {
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
    if precision == "q8":
        q = np.zeros((d, d), np.int8)
        return {
            "needs both delta_q8 and delta_scale": {"blk.1.delta_q8": q},
            "delta_scale contains NaN or Inf": {"blk.1.delta_q8": q, "blk.1.delta_scale": np.full(d, np.nan, np.float32)},
            "delta_q8 holds -128": {"blk.1.delta_q8": np.full((d, d), -128, np.int8), "blk.1.delta_scale": s},
            "delta_q8 has shape": {"blk.1.delta_q8": np.zeros((d, d - 1), np.int8), "blk.1.delta_scale": s},
            "blk.1.delta_q8 has ggml type F32, expected I8$": {"blk.1.delta_q8": q.astype(np.float32), "blk.1.delta_scale": s},
            "blk.1.map has ggml type I8": {"blk.1.map": q},
            "exactly one of a map, an 8-bit map": {"blk.1.map": np.eye(d, dtype=np.float32), "blk.1.delta_q8": q,
                                                      "blk.1.delta_scale": s},
        }
    q = np.zeros((d, d // 2), np.int8)
    return {
        "needs both delta_q4 and delta_scale": {"blk.1.delta_q4": q},
        "delta_scale belongs to an 8- or 4-bit map": {"blk.1.delta_scale": s},
        "delta_scale contains NaN or Inf": {"blk.1.delta_q4": q, "blk.1.delta_scale": np.full(d, np.inf, np.float32)},
        r"delta_q4 has shape \(64, 64\), expected \(64, 32\)": {"blk.1.delta_q4": np.zeros((d, d), np.int8),
                                                                        "blk.1.delta_scale": s},
        "blk.1.delta_q4 has ggml type F16, expected I8$": {"blk.1.delta_q4": q.astype(np.float16), "blk.1.delta_scale": s},
        "exactly one of a map, an 8-bit map": {"blk.1.delta_q8": np.zeros((d, d), np.int8), "blk.1.delta_q4": q,
                                              "blk.1.delta_scale": s},
    }


def test_bad_files_are_refused_and_good_ones_load(tiny_model, tmp_path, precision):
    only_for(precision, ("f16", "q8", "q4"), "float32 maps' files are test_transform_file.py's")
    fp = lingalign.model.fingerprint(tiny_model)
    d = fp.n_embd
    _assert_refused(tmp_path, fp, _refused_files(precision, d))
    # a valid map at this precision, with a float32 bias, loads
    good = {
        "f16": {"blk.1.map": np.eye(d, dtype=np.float16)},
        "q8": {"blk.1.delta_q8": np.zeros((d, d), np.int8), "blk.1.delta_scale": np.ones(d, np.float32)},
        "q4": {"blk.1.delta_q4": np.zeros((d, d // 2), np.int8), "blk.1.delta_scale": np.ones(d, np.float32)},
    }[precision]
    path = tmp_path / "good.gguf"
    _write_raw(path, kv=_valid_kv(fp, [1]), tensors={**good, "blk.1.bias": np.zeros(d, np.float32)})
    _assert_stored_as(Transform.load(path).layers[1], precision)


def test_hook_refuses_bad_maps(precision):
    """The C++ side checks the shapes, element types and layers of what it is given, whatever
    Python checked before; values (NaN, Inf) are checked once, when the LayerMap is made."""
    only_for(precision, ("f16", "q8", "q4"), "float32 maps' C++ checks are test_hook.py's")
    prepared = _core.Prepared(64, 4)
    A, L = _core.KIND_AFFINE, _core.KIND_LOWRANK
    z8, ones = np.zeros((64, 64), np.int8), np.ones(64, np.float32)
    calls = {
        "f16": [
            (r"map has shape \[3, 3\], expected \[64, 64\]", lambda: prepared.set_layer(1, A, {"map": np.zeros((3, 3), np.float16)})),
            ("lr_vt is float32, expected float16",
             lambda: prepared.set_layer(1, L, {"lr_u": np.zeros((64, 2), np.float16), "lr_vt": np.zeros((2, 64), np.float32)})),
            ("not C-contiguous", lambda: prepared.set_layer(1, A, {"map": np.eye(128, dtype=np.float16)[::2, ::2]})),
        ],
        "q8": [
            (r"delta_scale has shape \[3\], expected \[64\]", lambda: prepared.set_layer(1, A, {"delta_q8": z8, "delta_scale": np.ones(3, np.float32)})),
            (r"delta_q8 has shape \[3, 3\]", lambda: prepared.set_layer(1, A, {"delta_q8": np.zeros((3, 3), np.int8), "delta_scale": ones})),
            ("needs the tensor delta_scale", lambda: prepared.set_layer(1, A, {"delta_q8": z8})),
            ("unknown layer 9", lambda: prepared.set_layer(9, A, {"delta_q8": z8, "delta_scale": ones})),
        ],
        "q4": [
            (r"delta_q4 has shape \[8, 8\], expected \[64, 32\]",
             lambda: prepared.set_layer(1, A, {"delta_q4": np.zeros((8, 8), np.int8), "delta_scale": ones})),
            ("even n_embd", lambda: _core.Prepared(63, 2).set_layer(
                0, A, {"delta_q4": np.zeros((63, 31), np.int8), "delta_scale": np.ones(63, np.float32)})),
            ("unknown layer 9", lambda: prepared.set_layer(9, A, {"delta_q4": np.zeros((64, 32), np.int8), "delta_scale": ones})),
        ],
    }[precision]
    for message, call in calls:
        with pytest.raises(_core.LayerError, match=message):
            call()
    # values are refused where the arrays enter lingalign
    bad = {
        "f16": dict(matrix=np.full((64, 64), np.nan, np.float16)),
        "q8": dict(delta_q8=z8, delta_scale=np.full(64, np.inf, np.float32)),
        "q4": dict(delta_q4=np.zeros((64, 32), np.int8), delta_scale=np.full(64, np.nan, np.float32)),
    }[precision]
    with pytest.raises(TransformFileError, match="NaN or Inf"):
        LayerMap(**bad)


# ---------------------------------------------------------------------------------------------
# float16 only: the half -> float conversion, files mixing f16 and f32 maps, validation


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


def test_f16_and_f32_maps_mix_in_a_file_that_round_trips_exactly(tiny_model, tmp_path):
    """Random halves (not _maps' values), next to a vector and a float32 map in the same file."""
    fp = lingalign.model.fingerprint(tiny_model)
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
    _assert_same_tensors(t, back, ("matrix", "bias", "vector", "lowrank_u", "lowrank_vt"))
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


def test_f16_validation_and_conversion_errors(tiny_model):
    fp = lingalign.model.fingerprint(tiny_model)
    d = fp.n_embd
    with pytest.raises(TransformFileError, match="bias is float16, expected float32$"):
        LayerMap(matrix=np.eye(d, dtype=np.float16), bias=np.zeros(d, np.float16))
    with pytest.raises(TransformFileError, match="vector is float16, expected float32$"):
        LayerMap(vector=np.zeros(d, np.float16))
    with pytest.raises(TransformFileError, match="map is float64, expected float32 or float16"):
        LayerMap(matrix=np.eye(d))
    LayerMap(matrix=np.eye(d, dtype=np.float16), bias=np.zeros(d, np.float32)).check_width(0, d)
    big = Transform(layers={1: LayerMap(matrix=np.full((d, d), 1e5, np.float32))}, model=fp, method="test")
    with pytest.raises(TransformFileError, match="layer 1: map has values beyond float16's range"):
        big.to_precision("f16")
    with pytest.raises(TransformFileError, match="unknown precision"):
        big.to_precision("bf16")


def test_hook_stores_float16_maps_as_float16():
    prepared = _core.Prepared(64, 4)
    # a float16 map is stored as float16 (from a non-contiguous array, copied contiguous by LayerMap)
    lm = LayerMap(matrix=np.eye(128, dtype=np.float16)[::2, ::2])
    prepared.set_layer(1, _core.KIND_AFFINE, dict(lm.tensors))
    assert prepared.map_bytes(1) == 64 * 64 * 2
    prepared.set_layer(2, _core.KIND_LOWRANK, {"lr_u": np.zeros((64, 3), np.float16), "lr_vt": np.zeros((3, 64), np.float16),
                                               "bias": np.zeros(64, np.float32)})
    assert prepared.map_bytes(2) == 2 * 64 * 3 * 2
    prepared.set_layer(1, _core.KIND_AFFINE, {"map": np.eye(64, dtype=np.float32)})
    assert prepared.map_bytes(1) == 64 * 64 * 4
    with pytest.raises(_core.LayerError, match="unsupported element type"):  # float64: never converted silently
        prepared.set_layer(1, _core.KIND_AFFINE, {"map": np.eye(64)})
    prepared.set_layer(1, _core.KIND_ADDITIVE, {"vector": np.zeros(64, np.float32)})
    assert prepared.map_bytes(1) == 0


# ---------------------------------------------------------------------------------------------
# 4 bits only: nibble packing and the integer kernel alone (its SIMD tiers and VNNI variants are
# test_simd.py's)


def test_nibbles_round_trip_and_convert_between_4_and_8_bits():
    every = np.arange(-8, 8, dtype=np.int8)
    q = np.stack([np.roll(every, k) for k in range(16)])
    packed = pack_nibbles(q)
    assert packed.dtype == np.int8 and packed.shape == (16, 8)
    assert np.array_equal(unpack_nibbles(packed), q)
    assert packed.view(np.uint8)[0, 0] == 0x10  # -8 -> 0 in the low nibble, -7 -> 1 in the high one
    rng = np.random.default_rng(0)
    d = 48
    m = (np.eye(d) + 0.05 * rng.standard_normal((d, d))).astype(np.float32)
    lm = LayerMap(matrix=m).to_precision("q4")
    # q4 <-> q8 go through the dense map; an odd width cannot be packed
    assert lm.to_precision("q8").precision == "q8" and lm.to_precision("q4").delta_q4.tobytes() == lm.delta_q4.tobytes()
    with pytest.raises(TransformFileError, match="layer 3: 4-bit maps need an even width"):
        LayerMap(matrix=np.eye(5, dtype=np.float32)).to_precision("q4", layer=3)


def test_q4_kernel_matches_the_formula_for_every_shape():
    """The kernel alone, for widths with and without whole blocks of 32 and panels of 16 (one
    panel at a time and groups of four), 1 to 9 rows: the formula, and the same bits from the
    portable code; zero rows give exact zeros and a NaN or Inf in a block gives no finite result."""
    rng = np.random.default_rng(1)
    for d in (2, 4, 16, 30, 32, 34, 48, 62, 64, 66, 96, 126, 128, 130, 192, 254):
        q = rng.integers(-8, 8, size=(d, d), dtype=np.int8)
        packed = pack_nibbles(q)
        for n in (1, 3, 9):
            h = (rng.standard_normal((n, d)) * rng.choice([1e-3, 1.0, 50.0], size=(n, 1))).astype(np.float32)
            h[-1] = 0.0
            y = _core.testing.q4_multiply(h, packed)
            assert y.dtype == np.float32 and y.shape == (n, d)
            ref = _q4_product(h, q)
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
            assert np.array_equal(y, _core.testing.q4_multiply(h, packed, portable=True))
            assert not y[-1].any()
    h = np.ones((2, 64), np.float32)
    h[0, 40], h[1, 3] = np.nan, np.inf
    for portable in (False, True):
        y = _core.testing.q4_multiply(h, pack_nibbles(np.ones((64, 64), np.int8)), portable=portable)
        assert not np.isfinite(y).any()
    with pytest.raises(ValueError, match="rows \\[n, d\\] and q \\[d, d/2\\]"):
        _core.testing.q4_multiply(np.ones((2, 64), np.float32), np.zeros((64, 64), np.int8))
