"""The kernels' SIMD tiers compute the same bits.

The hook picks its code by what the CPU has: AVX-512 (float32 prompt kernel, 12 rows x 32
columns) and VNNI (4-bit prompt kernel) where available, else AVX2, else the portable C++ other
CPUs run. Every tier adds the same products in the same order with the same fused multiply-adds,
so a user's logits do not depend on the machine's instruction set. Asserted for every precision,
for prompt processing (many rows: whole tiles plus remainders) and decode (one row), at widths
whose last panel is partial. On a CPU without AVX-512 or VNNI the "wide" tier is the AVX2 one and
the comparison still holds; the CI machine has both.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_precision import _decode_logits, _maps, _prompt_logits, _run

from lingalign import _core

PROMPT = " ".join(["the quick brown fox"] * 8)  # 129 tokens: ubatches of 128 rows (ten 12-row tiles,
# a 6-row one and 2 more) and 1 row


def _tier(name: str) -> None:
    _core.testing.set_portable_kernels(name == "portable")
    _core.testing.set_wide_kernels(name == "wide")


@pytest.fixture
def tiers():
    yield ("wide", "avx2", "portable")
    _tier("wide")


@pytest.mark.parametrize("precision", ["f32", "f16", "q8", "q4"])
@pytest.mark.parametrize("n_embd", [40, 208])  # 2 panels + 8 columns; 13 panels (2 threads: 7 + 6)
def test_every_tier_gives_the_same_logits(tmp_path, tiers, precision, n_embd):
    from tinymodel import write_tiny_llama

    path = write_tiny_llama(tmp_path / "w.gguf", n_embd=n_embd, n_layer=2, n_ff=64)
    transform = _maps(path, [0, 1]).to_precision(precision)
    kw = dict(n_ctx=256, n_batch=128, n_ubatch=128, n_threads=2, n_threads_batch=2)
    plain, _, _ = _run(path, None, lambda llm: _prompt_logits(llm, PROMPT), **kw)
    for logits in (lambda llm: _prompt_logits(llm, PROMPT), lambda llm: _decode_logits(llm, PROMPT)):
        results = {}
        for tier in tiers:
            _tier(tier)
            results[tier], rows, _ = _run(path, transform, logits, **kw)
            assert rows > 0
        assert results["wide"].shape[0] == 129
        assert not np.allclose(results["wide"], plain, atol=1e-4)  # the maps really act
        assert np.array_equal(results["wide"], results["avx2"])
        assert np.array_equal(results["wide"], results["portable"])


def test_q4_kernel_tiers_agree_for_every_row_count(tiers):
    """The 4-bit kernel alone: 1-30 rows (whole groups of 2 or 4 rows and the rest) at widths
    with partial blocks and panels, with each VNNI variant the CPU has."""
    rng = np.random.default_rng(3)
    variants = ["auto", *_core.testing.q4_vnni_available()]
    try:
        for d in (34, 64, 208):
            q = rng.integers(0, 256, size=(d, d // 2), dtype=np.uint8).view(np.int8)
            for n in (1, 2, 3, 4, 5, 7, 12, 30):
                rows = rng.standard_normal((n, d)).astype(np.float32)
                out = {}
                for tier in tiers:
                    _tier(tier)
                    out[tier] = _core.testing.q4_multiply(rows, q, portable=tier == "portable")
                assert np.array_equal(out["wide"], out["avx2"]), (d, n)
                assert np.array_equal(out["wide"], out["portable"]), (d, n)
                _tier("wide")
                for vnni in variants:
                    _core.testing.set_q4_vnni(vnni)
                    assert np.array_equal(_core.testing.q4_multiply(rows, q), out["portable"]), (d, n, vnni)
    finally:
        _core.testing.set_q4_vnni("auto")


def test_forcing_a_vnni_variant_the_cpu_lacks_is_refused():
    for which in ("avxvnni", "avx512vnni"):
        if which not in _core.testing.q4_vnni_available():
            with pytest.raises(ValueError, match=f"no {which}"):
                _core.testing.set_q4_vnni(which)
    with pytest.raises(ValueError, match="no sse9"):
        _core.testing.set_q4_vnni("sse9")


def test_wide_kernels_are_reported():
    import platform
    from pathlib import Path

    if platform.machine() not in ("x86_64", "AMD64"):
        assert not _core.testing.wide_kernels_available()
        return
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = Path("/proc/cpuinfo").read_text().split()
    expected = "avx512f" in flags or "avx_vnni" in flags or ("avx512_vnni" in flags and "avx512vl" in flags)
    assert _core.testing.wide_kernels_available() == expected


def test_kernel_paths_say_which_code_runs(tiers):
    """What `lingalign bench` records with its numbers: the tier switches change it, and it names
    AVX-512 / VNNI only where the CPU has them."""
    _tier("portable")
    assert _core.testing.kernel_paths() == {"float_prompt": "portable", "float_decode": "portable", "q4_prompt": "portable"}
    _tier("avx2")
    avx2 = _core.testing.kernel_paths()
    assert avx2["float_prompt"] in ("avx2", "portable") and avx2["q4_prompt"] == avx2["float_prompt"]
    assert avx2["float_decode"] in ("avx2", "portable")
    _tier("wide")
    wide = _core.testing.kernel_paths()
    assert wide["q4_prompt"] in ("avxvnni", "avx512vnni", "avx2", "portable")
    if wide["q4_prompt"] in ("avxvnni", "avx512vnni"):
        assert wide["q4_prompt"] == _core.testing.q4_vnni_available()[0]
    assert (wide["float_prompt"] == "avx512") == (wide["float_decode"] == "avx512")
    if not _core.testing.wide_kernels_available():
        assert wide == avx2
