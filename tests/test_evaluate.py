"""Evaluation commands on the tiny model: retrieval per layer, multiple choice by log-likelihood."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_llm
from test_hook import _transform

import lingalign
from lingalign import LingalignError
from lingalign.cli import main
from lingalign.evaluate import _log_softmax_rows, choice_scores, eval_choice, load_choice_items

ITEMS = [
    {"premise": "the man opened the tap.", "choice1": "the toilet filled.", "choice2": "water flowed out.", "question": "effect", "label": 1},
    {"premise": "the girl was tired.", "choice1": "she slept.", "choice2": "she ran a race.", "question": "effect", "label": 0},
    {"premise": "the glass broke.", "choice1": "it fell.", "choice2": "it was new.", "question": "cause", "label": 0},
]


@pytest.fixture
def choice_file(tmp_path):
    p = tmp_path / "val.sw.jsonl"
    p.write_text("\n".join(json.dumps(i) for i in ITEMS) + "\n", encoding="utf-8")
    return p


def _reference_choice_scores(llm, item, connector):
    """Log-likelihood of each choice, one full evaluation per choice, no KV reuse."""
    context = item["premise"][:-1] + " " + connector
    out = []
    for key in ("choice1", "choice2"):
        ctx = llm.tokenize(context.encode(), add_bos=True)
        cont = llm.tokenize((" " + item[key]).encode(), add_bos=False)
        llm.reset()
        llm.eval(ctx + cont)
        logp = _log_softmax_rows(np.asarray(llm.scores[len(ctx) - 1 : len(ctx) + len(cont) - 1], np.float64))
        out.append(float(logp[np.arange(len(cont)), cont].sum()))
    return out


def test_choice_scores_match_a_plain_reference(tiny_model):
    llm = tiny_llm(tiny_model, logits_all=True)
    ref = np.array([_reference_choice_scores(llm, it, "kwa hiyo" if it["question"] == "effect" else "kwa sababu") for it in ITEMS])
    # Several items per decode, shared contexts, logits only where needed: the same numbers.
    sums, counts, _ = choice_scores(tiny_llm(tiny_model), ITEMS, lang="sw")
    np.testing.assert_allclose(sums, ref, rtol=1e-4, atol=1e-4)
    lens = [[len(llm.tokenize((" " + it[k][:1].lower() + it[k][1:]).encode(), add_bos=False)) for k in ("choice1", "choice2")] for it in ITEMS]
    assert counts.tolist() == lens
    # One item per decode gives the same as many.
    one, _, _ = choice_scores(tiny_llm(tiny_model), ITEMS, lang="sw", max_outputs=1)
    np.testing.assert_allclose(one, sums, rtol=1e-4, atol=1e-4)
    expected = np.mean([(s[1] > s[0]) == (it["label"] == 1) for s, it in zip(ref, ITEMS)])
    result = eval_choice(tiny_llm(tiny_model), ITEMS, lang="sw")
    assert result["n"] == 3 and result["accuracy"] == pytest.approx(expected)


def test_choice_with_a_transform_matches_the_attached_hook(tiny_model):
    t = _transform(tiny_model, [1, 2])
    llm = tiny_llm(tiny_model, logits_all=True)
    lingalign.attach(llm, t)
    ref = np.array([_reference_choice_scores(llm, it, "kwa hiyo" if it["question"] == "effect" else "kwa sababu") for it in ITEMS])
    sums, _, info = choice_scores(tiny_llm(tiny_model), ITEMS, lang="sw", transform=t)
    np.testing.assert_allclose(sums, ref, rtol=1e-4, atol=1e-4)
    plain, _, _ = choice_scores(tiny_llm(tiny_model), ITEMS, lang="sw")
    assert not np.allclose(plain, sums)
    off, _, _ = choice_scores(tiny_llm(tiny_model), ITEMS, lang="sw", transform=t, alpha=0.0)
    np.testing.assert_array_equal(off, plain)


def test_choice_scores_options_as_generated_for_generated_only_layers(tiny_model):
    """Options are scored as generated tokens: a generated-only layer moves them and not the
    context, as when the model generates the answer after the prompt."""
    import dataclasses

    t = dataclasses.replace(_transform(tiny_model, [1, 2]), generated_layers=(2,))
    llm = tiny_llm(tiny_model, logits_all=True)
    steering = lingalign.attach(llm, t)
    ref = []
    for it in ITEMS:
        context = it["premise"][:-1] + " " + ("kwa hiyo" if it["question"] == "effect" else "kwa sababu")
        row = []
        for key in ("choice1", "choice2"):
            ctx = llm.tokenize(context.encode(), add_bos=True)
            cont = llm.tokenize((" " + it[key]).encode(), add_bos=False)
            llm.reset()
            llm.eval(ctx)
            with steering.tokens_are("generated"):
                llm.eval(cont)
            logp = _log_softmax_rows(np.asarray(llm.scores[len(ctx) - 1 : len(ctx) + len(cont) - 1], np.float64))
            row.append(float(logp[np.arange(len(cont)), cont].sum()))
        ref.append(row)
    sums, _, info = choice_scores(tiny_llm(tiny_model), ITEMS, lang="sw", transform=t)
    np.testing.assert_allclose(sums, np.array(ref), rtol=1e-4, atol=1e-4)
    every, _, _ = choice_scores(tiny_llm(tiny_model), ITEMS, lang="sw", transform=dataclasses.replace(t, generated_layers=()))
    assert not np.allclose(every, sums)


def test_choice_with_last_policy_moves_only_the_context_token(tiny_model):
    llm = tiny_llm(tiny_model)
    r = eval_choice(llm, ITEMS[:1], transform=_transform(tiny_model, [1], positions="last"))
    assert r["rows_transformed"] == 1  # the context's last token (shared by both choices), not the choices'
    r = eval_choice(llm, ITEMS[:1], transform=_transform(tiny_model, [1], positions="generated"))
    # every choice token but the last, whose logits would predict nothing and are not computed
    n_cont = sum(len(llm.tokenize((" " + ITEMS[0][k][:1].lower() + ITEMS[0][k][1:]).encode(), add_bos=False)) - 1 for k in ("choice1", "choice2"))
    assert r["rows_transformed"] == n_cont


def test_eval_cli_json(tiny_model, choice_file, tmp_path, capsys):
    assert main(["eval", "choice", "--model", str(tiny_model), "--data", str(choice_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and out["lang"] == "sw" and 0 <= out["accuracy"] <= 1

    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("hola amigo\nbuenos dias\nla casa\nel perro\n", encoding="utf-8")
    tgt.write_text("hello friend\ngood morning\nthe house\nthe dog\n", encoding="utf-8")
    assert main(["eval", "retrieval", "--model", str(tiny_model), "--src", str(src), "--tgt", str(tgt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 4 and len(out["layers"]) == 4 and {"best_layer", "best_top1"} <= set(out)
    t = tmp_path / "t.gguf"
    _transform(tiny_model, [2]).save(t)
    assert main(["eval", "retrieval", "--model", str(tiny_model), "--src", str(src), "--tgt", str(tgt), "--transform", str(t), "--json"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["layers"][:2] == out["layers"][:2]  # layers before the transform are untouched
    assert moved["layers"][2]["pair_distance"] != out["layers"][2]["pair_distance"]


def test_bad_choice_files(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"premise": "x"}\n', encoding="utf-8")
    with pytest.raises(LingalignError, match="missing field"):
        load_choice_items(p)
    p.write_text("not json\n", encoding="utf-8")
    with pytest.raises(LingalignError, match="not JSON"):
        load_choice_items(p)


def test_retrieval_plot_is_drawn(tiny_model, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("hola amigo\nbuenos dias\nla casa\nel perro\n", encoding="utf-8")
    tgt.write_text("hello friend\ngood morning\nthe house\nthe dog\n", encoding="utf-8")
    t = tmp_path / "t.gguf"
    _transform(tiny_model, [2]).save(t)
    png = tmp_path / "r.png"
    assert main(["eval", "retrieval", "--model", str(tiny_model), "--src", str(src), "--tgt", str(tgt),
                 "--transform", str(t), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
