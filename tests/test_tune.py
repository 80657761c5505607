"""tune: searches alpha (both signs), positions and layers on dev data, writes the defaults."""

from __future__ import annotations

import json

import pytest
from test_evaluate import ITEMS
from test_hook import _transform

from lingalign import LingalignError, Transform
from lingalign.cli import main
from lingalign.metrics import sign_test_p
from lingalign.tune import faithful_alpha, layer_subsets, refuse_test_data


def test_tune_retrieval_and_choice_write_defaults(tiny_model, tmp_path, capsys):
    t = _transform(tiny_model, [1, 2], alpha=1.0)
    path = tmp_path / "t.gguf"
    t.save(path)
    src, tgt = tmp_path / "dev.src", tmp_path / "dev.eng"
    src.write_text("hola amigo\nbuenos dias\nla casa azul\nel perro\nme gusta\n", encoding="utf-8")
    tgt.write_text("hello friend\ngood morning\nthe blue house\nthe dog\ni like it\n", encoding="utf-8")
    out = tmp_path / "tuned.gguf"
    assert main(["tune", "--model", str(tiny_model), "--transform", str(path), "--dev", str(src), "--dev-tgt", str(tgt), "--out", str(out)]) == 0
    tuned = Transform.load(out)
    record = tuned.fit_info["tuned"]
    assert record["metric"] == "retrieval" and record["candidates"] == 3 * 7  # {1,2}, {1}, {2} x 7 alphas
    assert tuned.alpha == record["best"]["alpha"] and sorted(tuned.layers) == record["best"]["layers"]
    assert "no transform" in capsys.readouterr().out

    val = tmp_path / "val.sw.jsonl"
    val.write_text("\n".join(json.dumps(i) for i in ITEMS) + "\n", encoding="utf-8")
    assert main(["tune", "--model", str(tiny_model), "--transform", str(path), "--dev", str(val), "--metric", "choice"]) == 0
    tuned = Transform.load(path)  # in place
    assert tuned.fit_info["tuned"]["metric"] == "choice" and tuned.fit_info["tuned"]["candidates"] == 3 * 7 * 2
    assert tuned.positions in ("all", "last")


def test_tune_refuses_test_data(tiny_model, tmp_path, capsys):
    for name in ("test.sw.jsonl", "xcopa.test.jsonl", "sw.eval.tsv", "test.tsv"):
        with pytest.raises(LingalignError, match="test data"):
            refuse_test_data(tmp_path / name)
    (tmp_path / "test.sw.jsonl").write_text(json.dumps(ITEMS[0]) + "\n", encoding="utf-8")
    t = tmp_path / "t.gguf"
    _transform(tiny_model, [1]).save(t)
    assert main(["tune", "--model", str(tiny_model), "--transform", str(t), "--dev", str(tmp_path / "test.sw.jsonl"), "--metric", "choice"]) == 1
    assert "test data" in capsys.readouterr().err
    assert layer_subsets([3, 1]) == [[1, 3], [1], [3]] and layer_subsets(list(range(8))) == [list(range(8))]


def test_tune_keeps_the_transform_off_when_nothing_beats_no_transform(tiny_model, tmp_path, capsys):
    # Identical dev pairs: no transform already retrieves every sentence (top-1 1.0 at every
    # layer), so no candidate can score above it.
    t = _transform(tiny_model, [1, 2], alpha=1.0)
    path = tmp_path / "t.gguf"
    t.save(path)
    dev = tmp_path / "dev.txt"
    dev.write_text("hola amigo\nbuenos dias\nla casa azul\nel perro\nme gusta\n", encoding="utf-8")
    assert main(["tune", "--model", str(tiny_model), "--transform", str(path), "--dev", str(dev), "--dev-tgt", str(dev)]) == 0
    assert "alpha set to 0 (off)" in capsys.readouterr().out
    tuned = Transform.load(path)
    assert tuned.alpha == 0.0 and tuned.fit_info["tuned"]["best"]["off"] is True
    assert tuned.fit_info["tuned"]["baseline_score"] == 1.0


def test_tune_takes_storycloze_and_sib_dev_files(tiny_model, tmp_path, capsys):
    """`tune --metric choice` reads the dev splits of XStoryCloze and SIB-200 as it reads XCOPA val."""
    from test_tasks import STORY_HEADER

    story = tmp_path / "sw.train.tsv"
    story.write_text(STORY_HEADER + "\n" + "".join(f"id{k}\tA {k}.\tB.\tC.\tD.\tE {k}.\tF.\t{1 + k % 2}\n" for k in range(4)),
                     encoding="utf-8")
    sib = tmp_path / "dev.tsv"
    sib.write_text("index_id\tcategory\ttext\n" + "".join(f"{k}\t{c}\ttext {k}\n" for k, c in enumerate(["travel", "sports"] * 2)),
                   encoding="utf-8")
    t = tmp_path / "t.gguf"
    _transform(tiny_model, [1]).save(t)
    for dev in (story, sib):
        out = tmp_path / f"tuned-{dev.stem}.gguf"
        assert main(["tune", "--model", str(tiny_model), "--transform", str(t), "--dev", str(dev), "--metric", "choice",
                     "--out", str(out)]) == 0
        record = Transform.load(out).fit_info["tuned"]
        assert record["metric"] == "choice" and record["n_dev"] == 4


def test_tune_with_fidelity_rejects_settings_that_change_the_answer_language(tiny_model, tmp_path, capsys, monkeypatch):
    """--fidelity: the best-scoring setting is kept only if the share of answers in the prompts'
    language stays within --max-fidelity-drop of no transform's. The tiny model neither answers
    a task nor speaks a language, so the dev score and the language check are replaced: positive
    strengths score higher and turn the answers English (what the default transform did to
    Swahili on Gemma), negative ones score a little higher and keep the language."""
    import lingalign.tune as tune_module

    def fake_choice(llm, items, lang="en", transform=None, progress=None):
        a = 0.0 if transform is None else transform.alpha
        return {"accuracy": 0.5 + (0.1 * a if a > 0 else 0.05 * abs(a))}

    calls = []

    def fake_fidelity(llm, t, prompts, lang, max_tokens):
        calls.append(t)
        return {"fidelity": 0.0 if t is not None and t.alpha > 0 else 1.0, "looping": 0.0}

    monkeypatch.setattr(tune_module, "eval_choice", fake_choice)
    monkeypatch.setattr(tune_module, "_fidelity", fake_fidelity)
    path = tmp_path / "t.gguf"
    _transform(tiny_model, [1, 2], alpha=1.0).save(path)
    val = tmp_path / "val.es.jsonl"
    val.write_text("\n".join(json.dumps(i) for i in ITEMS) + "\n", encoding="utf-8")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hola, ¿cómo estás?\n¿dónde está la estación?\n", encoding="utf-8")
    # the fake scores have no items to test a gain on: any gain counts (--max-p 1)
    base = ["tune", "--model", str(tiny_model), "--transform", str(path), "--dev", str(val), "--metric", "choice",
            "--max-p", "1"]
    assert main([*base, "--out", str(tmp_path / "plain.gguf")]) == 0
    plain = Transform.load(tmp_path / "plain.gguf").fit_info["tuned"]
    assert plain["best"]["alpha"] == 1.0 and "fidelity" not in plain  # the unconstrained winner switches language
    assert main([*base, "--out", str(tmp_path / "kept.gguf"), "--fidelity", str(prompts), "--lang", "spa"]) == 0
    record = Transform.load(tmp_path / "kept.gguf").fit_info["tuned"]
    assert record["fidelity"]["baseline"] == 1.0 and record["fidelity"]["lang"] == "spa"
    # alphas 1, 0.75 and 0.5 score above -1's 0.55 (0.5 ties it and is gentler), at 2 positions x 3 layer subsets
    assert len(record["fidelity"]["rejected"]) == 3 * 2 * 3
    assert record["best"]["alpha"] == -1.0 and record["best"]["fidelity"] == 1.0
    assert calls[0] is None and len(calls) == 1 + 18 + 1  # no transform, then best first until one is kept
    said = capsys.readouterr()
    assert "18 better-scoring setting(s) rejected" in said.out
    # two prompts cannot resolve a 2-point drop: the user is told that one answer decides
    assert "with 2 fidelity prompts one answer is 50.0 points" in said.err
    assert main([*base, "--out", str(tmp_path / "loose.gguf"), "--fidelity", str(prompts), "--lang", "spa",
                 "--max-fidelity-drop", "0.5"]) == 0
    assert "one answer is" not in capsys.readouterr().err
    assert main([*base, "--fidelity", str(prompts), "--max-fidelity-drop", "2"]) == 1
    assert main([*base, "--alphas", "0.5,x"]) == 1
    assert "--alphas" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "few.gguf"), "--alphas", "0.5", "--positions", "all"]) == 0
    assert Transform.load(tmp_path / "few.gguf").fit_info["tuned"]["candidates"] == 3


def test_staged_transforms_tune_each_stage_alone_too():
    assert layer_subsets([7, 8, 24, 25], {"align": [7, 8], "anchor": [24, 25]}) == [[7, 8, 24, 25], [7, 8], [24, 25]]


def test_the_fidelity_guard_takes_the_strongest_strength_that_keeps_the_language(tiny_model, monkeypatch):
    """faithful_alpha tries the transform's strength, then 0.25 and 0.1, strongest first, and stops
    at the first whose answers stay in the prompts' language (detected when not given); off when
    none does. The language check is replaced (the tiny model speaks none)."""
    import lingalign.tune as tune_module
    from conftest import tiny_llm

    seen = []

    def fake_fidelity(llm, t, prompts, lang, max_tokens):
        seen.append((None if t is None else t.alpha, lang))
        return {"fidelity": {None: 0.9, 1.0: 0.5, 0.25: 0.88, 0.1: 0.9}[None if t is None else t.alpha],
                "english_share": 0.0, "looping": 0.0}

    monkeypatch.setattr(tune_module, "_fidelity", fake_fidelity)
    llm = tiny_llm(tiny_model)
    t = _transform(tiny_model, [1], alpha=1.0)
    prompts = ["¿Dónde está la estación de tren más cercana?", "Me gusta mucho el café por la mañana."]
    alpha, record = faithful_alpha(llm, t, prompts)
    assert alpha == 0.25 and record["lang"] == "spa" and record["baseline"] == 0.9  # 0.88 is within 2 points
    assert seen == [(None, "spa"), (1.0, "spa"), (0.25, "spa")]
    assert faithful_alpha(llm, t, prompts, "spa", max_drop=0.0)[0] == 0.1
    monkeypatch.setattr(tune_module, "_fidelity", lambda llm, t, p, lang, n: {"fidelity": 0.0 if t else 1.0, "english_share": 1.0})
    alpha, record = faithful_alpha(llm, t, prompts, "spa")
    assert alpha == 0.0 and [r["alpha"] for r in record["tried"]] == [1.0, 0.25, 0.1]
    with pytest.raises(LingalignError, match="needs prompts"):
        faithful_alpha(llm, t, [])


def test_tune_keeps_only_settings_with_evidence_of_a_gain(tiny_model, tmp_path, capsys, monkeypatch):
    """choice: a dev gain counts only if the items a setting fixes outnumber those it breaks by a
    one-sided sign test at --max-p (0.05): the top scorer here fixes 12 and breaks 6 (p 0.12)
    and loses to one that fixes 5 and breaks none (p 1/32); with --max-p 1 the top scorer wins,
    and a setting that fixes 2 only is not kept at all (off)."""
    import lingalign.tune as tune_module

    n = 40
    base_right = [k < 20 for k in range(n)]

    def changed(fixed: int, broken: int) -> list[bool]:
        right = list(base_right)
        for k in range(fixed):
            right[20 + k] = True
        for k in range(broken):
            right[k] = False
        return right

    outcomes = {1.0: changed(12, 6), 0.5: changed(5, 0), 0.25: changed(2, 0)}

    def fake_choice(llm, items, lang="en", transform=None, progress=None):
        right = base_right if transform is None else outcomes[transform.alpha]
        return {"accuracy": sum(right) / n, "correct": right}

    monkeypatch.setattr(tune_module, "eval_choice", fake_choice)
    path = tmp_path / "t.gguf"
    _transform(tiny_model, [1], alpha=1.0).save(path)
    val = tmp_path / "val.sw.jsonl"
    val.write_text("\n".join(json.dumps(i) for i in ITEMS) + "\n", encoding="utf-8")
    base = ["tune", "--model", str(tiny_model), "--transform", str(path), "--dev", str(val), "--metric", "choice",
            "--positions", "all"]
    assert main([*base, "--alphas", "1,0.5,0.25", "--out", str(tmp_path / "a.gguf")]) == 0
    record = Transform.load(tmp_path / "a.gguf").fit_info["tuned"]
    assert record["best"]["alpha"] == 0.5 and record["best"]["p"] == 1 / 32 and record["max_p"] == 0.05
    assert [(u["alpha"], u["fixed"], u["broken"]) for u in record["unproven"]] == [(1.0, 12, 6), (0.25, 2, 0)]
    assert "without evidence" in capsys.readouterr().out
    assert main([*base, "--alphas", "1,0.5,0.25", "--max-p", "1", "--out", str(tmp_path / "b.gguf")]) == 0
    assert Transform.load(tmp_path / "b.gguf").alpha == 1.0
    assert main([*base, "--alphas", "0.25", "--out", str(tmp_path / "c.gguf")]) == 0
    assert Transform.load(tmp_path / "c.gguf").alpha == 0.0
    assert main([*base, "--max-p", "0"]) == 1
    assert "--max-p must be in (0, 1]" in capsys.readouterr().err
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 1) == 5 / 16 and sign_test_p(5, 0) == 1 / 32
    with pytest.raises(LingalignError, match="non-negative"):
        sign_test_p(-1, 2)
