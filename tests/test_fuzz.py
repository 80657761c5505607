"""Fuzzing the transform loader and the C++ side with mutated and truncated files.

Every mutated file must either be refused with TransformFileError, or load as a valid
transform that the hook then accepts or refuses with a LingalignError; never another exception,
never a crash. The number of cases is printed when the module finishes (pytest -s shows it).
"""

from __future__ import annotations

import dataclasses

from types import SimpleNamespace

import pytest
from conftest import tiny_llm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_transform_file import _transform

import lingalign
from lingalign import LingalignError, Transform, TransformFileError

CASES = {"n": 0, "refused": 0, "loaded": 0}


class _Env(SimpleNamespace):
    def __repr__(self) -> str:  # hypothesis prints the arguments of failing cases
        return "fuzz_env"


@pytest.fixture(scope="module")
def fuzz_env(tiny_model, tmp_path_factory):
    good = tmp_path_factory.mktemp("fuzz") / "good.gguf"
    t = _transform(tiny_model)
    # the quantized formats too: their bytes and types go through the same mutations
    t = dataclasses.replace(t, layers={**t.layers, 0: t.layers[0].to_precision("q4"), 3: t.layers[3].to_precision("q8")})
    t.save(good)
    llm = tiny_llm(tiny_model, n_batch=8, n_ubatch=4)
    steering = lingalign.attach(llm)
    yield _Env(data=good.read_bytes(), folder=good.parent, steering=steering, llm=llm)
    print(f"\nfuzz cases: {CASES['n']}, refused: {CASES['refused']}, loaded: {CASES['loaded']}, crashes: 0")


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**9), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**9), st.integers(0, 255)),
)


def _mutate(data: bytes, ops: list[tuple[str, int, int]], header_bias: bool) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            break
        # half of the cases aim at the header (metadata and tensor table), where parsing happens
        limit = min(len(buf), 2048) if header_bias else len(buf)
        i = pos % limit
        if kind == "flip":
            buf[i] = value
        elif kind == "cut":
            del buf[i:]
        else:
            buf.insert(i, value)
    return bytes(buf)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(mutation, min_size=1, max_size=4), header_bias=st.booleans())
def test_mutated_transform_files_never_crash(fuzz_env, ops, header_bias):
    data, folder, steering, llm = fuzz_env.data, fuzz_env.folder, fuzz_env.steering, fuzz_env.llm
    path = folder / "mutated.gguf"
    path.write_bytes(_mutate(data, ops, header_bias))
    CASES["n"] += 1
    try:
        t = Transform.load(path)
    except TransformFileError:
        CASES["refused"] += 1
        return
    CASES["loaded"] += 1
    try:
        steering.set(t)
    except LingalignError:
        return
    llm.reset()
    llm.eval(llm.tokenize(b"hello"))  # the hook runs with whatever the file held
    steering.clear()
