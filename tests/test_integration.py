"""The real default model on real data (../shared/data): slower, marked `integration`."""

from __future__ import annotations

import os

import pytest
from conftest import SHARED_DATA

import lingalign
from lingalign import Transform
from conftest import capture_array as capture
from lingalign.cli import main
from lingalign.data import read_lines
from lingalign.evaluate import retrieval_top1

pytestmark = pytest.mark.integration

TATOEBA = SHARED_DATA / "tatoeba"


@pytest.fixture(scope="module")
def tatoeba_spa():
    src, tgt = TATOEBA / "tatoeba.spa-eng.spa", TATOEBA / "tatoeba.spa-eng.eng"
    if not src.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing in CI: {src}")
        pytest.skip(f"shared data not found at {TATOEBA}")
    return src, tgt


@pytest.fixture(scope="module")
def gemma():
    return lingalign.load(n_ctx=512)


def test_spa_eng_transform_retrieves_better_on_held_out_pairs(tatoeba_spa, gemma, tmp_path_factory):
    """Fit on pairs 1-500 with the CLI; on pairs 501-1000 the source sentences, read with the
    transform active inside llama.cpp, find their English translation more often."""
    src_file, tgt_file = tatoeba_spa
    out = tmp_path_factory.mktemp("fit") / "spa-eng.gguf"
    layers = [6, 17]
    assert main(["fit", "--src", str(src_file), "--tgt", str(tgt_file), "--limit", "500", "--src-lang", "spa",
                 "--layers", ",".join(map(str, layers)), "--out", str(out)]) == 0
    transform = Transform.load(out)
    assert transform.fit_info["pairs"] == 500 and sorted(transform.layers) == layers
    src = read_lines(src_file, skip=500)
    eng = capture(gemma, read_lines(tgt_file, skip=500), layers=layers)
    plain = capture(gemma, src, layers=layers)
    for k, il in enumerate(layers):
        single = Transform(layers={il: transform.layers[il]}, model=transform.model, method=transform.method)
        moved = capture(gemma, src, layers=[il], transform=single)[:, 0]
        before = retrieval_top1(plain[:, k], eng[:, k])[0]
        after = retrieval_top1(moved, eng[:, k])[0]
        print(f"layer {il}: held-out spa->eng top-1 {before:.3f} -> {after:.3f}")
        assert after > before + 0.05, (il, before, after)


def test_identity_on_real_model_is_bit_identical(gemma):
    import numpy as np

    from lingalign import LayerMap

    fp = lingalign.attach(gemma).model
    prompt = b"Habari ya asubuhi, rafiki yangu."
    tokens = gemma.tokenize(prompt)

    def last_logits():
        gemma.reset()
        gemma.eval(tokens)
        return np.ctypeslib.as_array(gemma._ctx.get_logits(), shape=(gemma.n_vocab(),)).copy()

    steering = lingalign.attach(gemma)
    steering.clear()
    plain = last_logits()
    eye = {il: LayerMap(matrix=np.eye(fp.n_embd, dtype=np.float32)) for il in range(fp.n_layer)}
    steering.set(Transform(layers=eye, model=fp, method="identity"))
    assert np.array_equal(last_logits(), plain)
    assert steering.take_rows_transformed() == len(tokens) * (fp.n_layer - 1) + 1  # last layer: output row only
    steering.clear()


def test_demo_runs_and_reports(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Swahili" in out and "Tamil" in out and "mean" in out


def test_run_with_shipped_transform_by_language(capsys):
    assert main(["run", "--lang", "sw", "-p", "Habari ya asubuhi", "-n", "6"]) == 0
    assert capsys.readouterr().out.strip() != ""
    assert main(["run", "--lang", "xx", "-p", "hi"]) == 1
    assert "no shipped transform" in capsys.readouterr().err
