"""tune: searches alpha (both signs), positions and layers on dev data, writes the defaults."""

from __future__ import annotations

import json

import pytest
from test_evaluate import ITEMS
from test_hook import _transform

from lingalign import LingalignError, Transform
from lingalign.cli import main
from lingalign.tune import layer_subsets, refuse_test_data


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
