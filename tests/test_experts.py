"""Language expert neurons: AUROC scoring, the clamp in the C++ hook, files and the CLI (tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_llm

import lingalign
from lingalign import LayerMap, Transform
from conftest import capture_array as capture
from lingalign.cli import main
from lingalign.errors import LingalignError, TransformFileError
from lingalign.experts import auroc, find_experts, random_neurons

SENTENCES = ["the quick brown fox", "jumps over the lazy dog", "a b c d e f", "hello there friend"]


def _reference_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(equal), by comparing every pair."""
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def test_auroc_matches_pairwise_reference_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(41, 300)).astype(np.float32)  # many ties
    scores[:, 0] = 1.0  # a constant column: every pair tied
    labels = rng.random(41) < 0.35
    got = auroc(scores, labels)
    want = np.array([_reference_auroc(scores[:, j], labels) for j in range(scores.shape[1])])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0] == 0.5
    # perfect and reversed separation
    sep = np.where(labels, 2.0, 1.0)[:, None]
    assert auroc(sep, labels)[0] == 1.0 and auroc(-sep, labels)[0] == 0.0


def test_auroc_refuses_bad_input():
    with pytest.raises(LingalignError, match="positive and one negative"):
        auroc(np.zeros((4, 2)), np.ones(4, bool))
    with pytest.raises(LingalignError, match="NaN"):
        auroc(np.full((4, 2), np.nan), np.array([1, 0, 1, 0], bool))
    with pytest.raises(LingalignError, match="labels"):
        auroc(np.zeros((4, 2)), np.ones(3, bool))


def test_find_experts_recovers_planted_neurons():
    rng = np.random.default_rng(1)
    pos, neg = rng.standard_normal((60, 3, 50)), rng.standard_normal((90, 3, 50))
    pos[:, 2, 7] += 3.0  # fires for the target language
    pos[:, 0, 41] += 2.5
    slot, neuron, score = find_experts(pos, neg, k=2)
    assert list(zip(slot.tolist(), neuron.tolist())) == [(2, 7), (0, 41)]
    assert score[0] >= score[1] > 0.9


def test_fit_experts_clamps_to_positive_mean_and_random_control_differs(tiny_model):
    fp = lingalign.model.fingerprint(tiny_model)
    rng = np.random.default_rng(2)
    pos, neg = rng.standard_normal((20, 2, 128)), rng.standard_normal((30, 2, 128))
    pos[:, 1, 5] += 4.0
    positive = lingalign.Captures(pos.astype(np.float32), (1, 3), fp, site="ffn")
    negative = lingalign.Captures(neg.astype(np.float32), (1, 3), fp, site="ffn")
    t = Transform.fit(positive, negative, method="experts", k=10)
    assert t.method == "experts" and sum(lm.clamp_index.size for lm in t.layers.values()) == 10
    lm = t.layers[3]
    assert 5 in lm.clamp_index.tolist()
    k = lm.clamp_index.tolist().index(5)
    assert lm.clamp_value[k] == np.float32(pos[:, 1, 5].mean())
    r = Transform.fit(positive, negative, method="random-neurons", k=10)
    assert r.method == "random-neurons" and sum(lm.clamp_index.size for lm in r.layers.values()) == 10
    chosen = {(il, int(n)) for il, lm in t.layers.items() for n in lm.clamp_index}
    drawn = {(il, int(n)) for il, lm in r.layers.items() for n in lm.clamp_index}
    assert chosen != drawn
    s1, n1 = random_neurons(2, 128, 10, seed=3)
    assert len(set(zip(s1.tolist(), n1.tolist()))) == 10


def _clamp(model_path, layer, index, value, alpha=1.0, positions="all") -> Transform:
    lm = LayerMap(clamp_index=np.array(index, np.int32), clamp_value=np.array(value, np.float32))
    return Transform(layers={layer: lm}, model=lingalign.model.fingerprint(model_path), method="experts", alpha=alpha,
                     positions=positions)


def test_clamp_changes_exactly_the_chosen_neurons(tiny_model):
    llm = tiny_llm(tiny_model, n_batch=8, n_ubatch=4)
    before = capture(llm, SENTENCES, site="ffn", pool="last")
    index, value = [3, 17, 100], [0.25, -1.5, 7.0]
    t = _clamp(tiny_model, 1, index, value)
    after = capture(llm, SENTENCES, site="ffn", pool="last", transform=t)
    mean_after = capture(llm, SENTENCES, site="ffn", pool="mean", transform=t)
    assert np.array_equal(before[:, 0], after[:, 0])  # layers before the clamp: untouched
    assert np.array_equal(after[:, 1, index], np.tile(np.array(value, np.float32), (len(SENTENCES), 1)))
    assert np.array_equal(mean_after[:, 1, index], np.tile(np.array(value, np.float32), (len(SENTENCES), 1)))
    others = np.setdiff1d(np.arange(128), index)
    assert np.array_equal(before[:, 1][:, others], after[:, 1][:, others])  # same layer, other neurons
    assert not np.array_equal(before[:, 2], after[:, 2])  # later layers see the clamp
    half = capture(llm, SENTENCES, site="ffn", pool="last", transform=t, alpha=0.5)
    np.testing.assert_allclose(half[:, 1, index], (before[:, 1, index] + np.array(value)) / 2, rtol=1e-6)


def test_clamp_respects_positions_and_alpha_zero(tiny_model):
    llm = tiny_llm(tiny_model, logits_all=True, n_batch=8, n_ubatch=4)
    tokens = llm.tokenize(SENTENCES[1].encode())
    llm.eval(tokens)
    plain = np.array(llm.scores[: len(tokens)], copy=True)
    steering = lingalign.attach(llm, _clamp(tiny_model, 2, [1, 2, 3], [5.0, 5.0, 5.0]), alpha=0.0)
    llm.reset()
    llm.eval(tokens)
    assert np.array_equal(np.array(llm.scores[: len(tokens)]), plain)
    steering.set(_clamp(tiny_model, 2, [1, 2, 3], [5.0, 5.0, 5.0], positions="last"))
    llm.reset()
    llm.eval(tokens)
    out = np.array(llm.scores[: len(tokens)])
    assert np.array_equal(out[:-1], plain[:-1]) and not np.array_equal(out[-1], plain[-1])
    assert steering.take_rows_transformed() == 1


def test_clamp_files_round_trip_and_bad_clamps_are_refused(tiny_model, tmp_path):
    t = _clamp(tiny_model, 1, [0, 9, 127], [1.0, 2.0, 3.0])
    path = tmp_path / "experts.gguf"
    t.save(path)
    back = Transform.load(path)
    assert back.layers[1].clamp_index.dtype == np.int32
    assert np.array_equal(back.layers[1].clamp_index, [0, 9, 127])
    assert np.array_equal(back.layers[1].clamp_value, np.array([1.0, 2.0, 3.0], np.float32))
    for index, value, message in [
        ([1, 1], [0.0, 0.0], "twice"),
        ([-1], [0.0], "out of range"),
        ([1, 2], [0.0], "must be equal"),
        ([1], [np.nan], "NaN"),
    ]:
        with pytest.raises(TransformFileError, match=message):
            _clamp(tiny_model, 1, index, value).validate()
    llm = tiny_llm(tiny_model)
    with pytest.raises(TransformFileError, match="neuron 128 out of range"):  # past the model's 128 neurons
        lingalign.attach(llm, _clamp(tiny_model, 1, [128], [0.0]))


def test_cli_fit_experts_and_random_control(tiny_model, tmp_path, capsys):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("hola amigo\nbuenos dias\nla casa es azul\nme gusta el cafe\n", encoding="utf-8")
    tgt.write_text("hello friend\ngood morning\nthe house is blue\ni like coffee\n", encoding="utf-8")
    for method in ("experts", "random-neurons"):
        out = tmp_path / f"{method}.gguf"
        args = ["fit", "--model", str(tiny_model), "--threads", "1", "--method", method, "--src", str(src), "--tgt", str(tgt)]
        assert main(args + ["--src-lang", "spa", "--k", "20", "--out", str(out)]) == 0
        t = Transform.load(out)
        assert t.method == method and sum(lm.clamp_index.size for lm in t.layers.values()) == 20
        assert "deu" in t.fit_info["negative_languages"] and "spa" not in t.fit_info["negative_languages"]
        assert main(["run", "--model", str(tiny_model), "--transform", str(out), "-p", "hola", "-n", "4"]) == 0
    assert main(["fit", "--model", str(tiny_model), "--method", "experts", "--src", str(src), "--tgt", str(tgt),
                 "--k", "100000", "--out", str(tmp_path / "x.gguf")]) == 1
    assert "--k must be in 1..512" in capsys.readouterr().err
