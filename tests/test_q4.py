"""4-bit maps: M = I + q * scale (q in -8..7, two values per byte; one float32 scale per column),
applied by the hook with integer dot products: each hidden state h is quantized to int8 per
block of 32 (scale max|h| / 127, nearest even), so h' = h + alpha * ((hq @ q) * hs * scale + b).

What is asserted: packing round-trips; quantization stays within half a step; the hook computes
exactly that formula on the model's real hidden states (read back with capture), also for widths
that are not whole blocks and panels; the result stays close to the float32 map's; thread
counts and the portable kernel change nothing; bad files are refused. test_q8.py's tests parametrized by precision cover 4 bits too:
logits close to the float32 map's, the identity bit-identical to no transform, files that
round-trip at an eighth of float32's size.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_llm
from test_f16 import _decode_logits, _maps, _prompt_logits, _run
from test_transform_file import _assert_refused

import lingalign
from lingalign import LayerMap, TransformFileError, _core
from lingalign.transform import Q4_MAX, pack_nibbles, unpack_nibbles

SENTENCES = ["the quick brown fox jumps over the lazy dog", "a dog", "over the lazy fox and the dog jumps"]


def _quantized_rows(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hook's quantization of rows h [n, d] (float32): per block of 32, hs = max|h| / 127 and
    hq = rint(h * (127 / max|h|)), in float32 as the C++ code computes it."""
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


def _q4_delta(h: np.ndarray, lm: LayerMap) -> np.ndarray:
    """(hq @ q) * hs * scale + b in float64, as the hook computes it."""
    return _q4_product(h, unpack_nibbles(lm.delta_q4)) * lm.delta_scale + lm.bias


def test_nibbles_round_trip_and_quantization_is_within_half_a_step():
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
    assert lm.precision == "q4" and lm.matrix is None and lm.delta_q4.shape == (d, d // 2)
    assert np.abs(unpack_nibbles(lm.delta_q4)).max() == Q4_MAX
    err = np.abs(lm.dense().astype(np.float64) - m)
    assert (err <= lm.delta_scale[None, :] / 2 * (1 + 1e-5) + 1e-7).all()
    assert np.linalg.norm(lm.dense() - m) / np.linalg.norm(m - np.eye(d)) < 0.15
    ident = LayerMap(matrix=np.eye(d, dtype=np.float32)).to_precision("q4")
    assert not ident.delta_scale.any() and np.array_equal(ident.dense(), np.eye(d, dtype=np.float32))
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


@pytest.fixture(scope="module")
def narrow_model(tmp_path_factory):
    """A model 40 wide: one whole block of 32 and a part, two whole panels of 16 and a part."""
    from tinymodel import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("narrow") / "narrow.gguf", n_embd=40, n_head=4, n_ff=96)


@pytest.mark.parametrize("width", ["tiny", "narrow"])
def test_hook_applies_the_q4_formula_to_the_real_hidden_states(tiny_model, narrow_model, width, conversion):
    """Capture the last token's state at layer 1 without and with a 4-bit map there: the map
    turned h into h + alpha * ((hq @ q) * hs * scale + b), computed in float64 for reference;
    and that is close to what the float32 map it came from gives."""
    path = tiny_model if width == "tiny" else narrow_model
    t32 = _maps(path, [1])
    t = t32.to_precision("q4")
    lm = t.layers[1]
    assert t.precision == "q4" and lm.kind == "affine" and lm.matrix is None
    llm = tiny_llm(path)
    # all positions, sentences packed together: many rows per call; the last token only, one
    # sentence per decode: one row, decode's kernel
    for positions, max_sequences in (("all", 32), ("last", 1)):
        h = lingalign.capture(llm, SENTENCES, layers=[1], pool="last", max_sequences=max_sequences, progress=False)[:, 0]
        for alpha in (1.0, -0.5):
            y = lingalign.capture(
                llm, SENTENCES, layers=[1], pool="last", transform=t, alpha=alpha, positions=positions,
                max_sequences=max_sequences, progress=False,
            )[:, 0]
            h64 = h.astype(np.float64)
            np.testing.assert_allclose(y, h64 + alpha * _q4_delta(h, lm), rtol=1e-5, atol=1e-5)
            exact = h64 + alpha * ((h64 @ t32.layers[1].matrix.astype(np.float64)) - h64 + t32.layers[1].bias)
            moved = np.linalg.norm(exact - h64)
            assert moved > 1e-2 and np.linalg.norm(y - exact) < 0.2 * moved


def test_q4_threads_and_the_portable_kernel_give_the_same_logits(tmp_path):
    from tinymodel import write_tiny_llama

    path = write_tiny_llama(tmp_path / "wide.gguf", n_embd=208, n_layer=2, n_ff=256)  # 3 groups of 4 panels + 1
    t4 = _maps(path, [0, 1]).to_precision("q4")
    prompt = " ".join(["the quick brown fox"] * 8)
    kw = dict(n_ctx=256, n_batch=128, n_ubatch=128)
    for logits in (lambda llm: _prompt_logits(llm, prompt), _decode_logits):
        one, _, s1 = _run(path, t4, logits, n_threads=1, n_threads_batch=1, **kw)
        two, rows, s2 = _run(path, t4, logits, n_threads=2, n_threads_batch=2, **kw)
        assert rows > 0 and s1._hook.threads == 1 and s2._hook.threads == 2
        assert np.array_equal(one, two)
        _core.testing.set_portable_kernels(True)
        try:
            portable, _, _ = _run(path, t4, logits, n_threads=2, n_threads_batch=2, **kw)
        finally:
            _core.testing.set_portable_kernels(False)
        assert np.array_equal(two, portable)


def test_bad_q4_maps_are_refused(tiny_model, tmp_path):
    fp = lingalign.fingerprint(tiny_model)
    d = fp.n_embd
    q = np.zeros((d, d // 2), np.int8)
    s = np.ones(d, np.float32)
    cases = {
        "needs both delta_q4 and delta_scale": {"blk.1.delta_q4": q},
        "delta_scale belongs to an 8- or 4-bit map": {"blk.1.delta_scale": s},
        "delta_scale contains NaN or Inf": {"blk.1.delta_q4": q, "blk.1.delta_scale": np.full(d, np.inf, np.float32)},
        r"delta_q4 has shape \(64, 64\), the model needs \(64, 32\)": {"blk.1.delta_q4": np.zeros((d, d), np.int8),
                                                                        "blk.1.delta_scale": s},
        "blk.1.delta_q4 has ggml type F16, expected I8$": {"blk.1.delta_q4": q.astype(np.float16), "blk.1.delta_scale": s},
        "exactly one of a map, an 8-bit map": {"blk.1.delta_q8": np.zeros((d, d), np.int8), "blk.1.delta_q4": q,
                                              "blk.1.delta_scale": s},
    }
    _assert_refused(tmp_path, fp, cases)
    hook = _core.Hook(64, 4)
    with pytest.raises(ValueError, match="scale contains NaN or Inf"):
        hook.set_affine_q4(1, np.zeros((64, 32), np.int8), np.full(64, np.nan, np.float32))
    with pytest.raises(ValueError, match="4-bit map has 64 bytes, the model needs 64x32"):
        hook.set_affine_q4(1, np.zeros((8, 8), np.int8), np.ones(64, np.float32))
    with pytest.raises(ValueError, match="even n_embd"):
        _core.Hook(63, 2).set_affine_q4(0, np.zeros((63, 31), np.int8), np.ones(63, np.float32))
    with pytest.raises(IndexError, match="unknown layer 9"):
        hook.set_affine_q4(9, np.zeros((64, 32), np.int8), np.ones(64, np.float32))
