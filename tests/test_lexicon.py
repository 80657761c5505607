"""The word lexicon: learned from parallel sentences, glossing prompts, its file, its commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_llm

from lingalign import LingalignError
from lingalign.cli import main
from lingalign.evaluate import eval_choice
from lingalign.lexicon import Lexicon, fit_lexicon, gloss_item, ibm1, words_of
from lingalign.tasks import ChoiceItem, likelihood_prompt

SOURCE = [f"w{k}x" for k in range(30)]
ENGLISH = [f"e{k}y" for k in range(30)]


def planted_bitext(n: int = 400, seed: int = 0) -> tuple[list[str], list[str]]:
    """Sentences of 3-8 words; each source word translates one English word, in another order,
    with capitals and punctuation on the source side."""
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n):
        ks = rng.choice(len(SOURCE), size=int(rng.integers(3, 9)), replace=False)
        order = rng.permutation(len(ks))
        src.append(" ".join(SOURCE[ks[i]].capitalize() for i in order) + ".")
        tgt.append(" ".join(ENGLISH[k] for k in ks))
    return src, tgt


def test_fit_recovers_a_planted_dictionary():
    src, tgt = planted_bitext()
    lex = fit_lexicon(src, tgt, source_lang="xx")
    assert dict(lex.entries) == dict(zip(SOURCE, ENGLISH))
    assert lex.meta["pairs"] == "400" and lex.source_lang == "xx"


def test_ibm1_probabilities_are_distributions_and_em_sharpens_them():
    src, tgt = planted_bitext(100)
    s, e = [words_of(x) for x in src], [words_of(x) for x in tgt]
    one, five = ibm1(s, e, 1), ibm1(s, e, 5)
    for t in (one, five):  # t(s | e) sums to one over s, for each e
        totals: dict[str, float] = {}
        for (_, ew), p in t.items():
            totals[ew] = totals.get(ew, 0.0) + p
        assert all(v == pytest.approx(1.0) for v in totals.values())
    assert five[(SOURCE[3], ENGLISH[3])] > one[(SOURCE[3], ENGLISH[3])]


def test_gloss_replaces_known_words_and_keeps_the_rest():
    lex = Lexicon("swh", {"paka": "cat", "anakula": "eats"})
    assert lex.gloss("Paka anakula samaki, Nairobi 2024 !") == "cat eats samaki, Nairobi 2024 !"
    assert lex.coverage("Paka anakula samaki") == pytest.approx(2 / 3)
    assert lex.annotate("Paka anakula samaki") == "(cat eats samaki)\nPaka anakula samaki"
    assert lex.annotate("Samaki tu.") == "Samaki tu."  # no word known: the prompt as it is
    assert lex.coverage("...") == 0.0


def test_gloss_item_annotates_the_text_and_keeps_the_options():
    lex = Lexicon("swh", {"paka": "cat"})
    story = ChoiceItem("xstorycloze", "1", (("sentence1", "Paka."), ("sentence2", "Mbwa."), ("sentence3", ""),
                                            ("sentence4", "")), ("a b", "c d"), 1)
    g = gloss_item(story, lex, "before")
    assert likelihood_prompt(g, "sw").context == "(cat Mbwa.)\nPaka. Mbwa." and g.options == story.options
    assert g.label == 1 and g.uid == "1"
    copa = ChoiceItem("xcopa", "2", (("premise", "Paka alikula."), ("question", "effect")), ("x.", "y."), 0)
    assert gloss_item(copa, lex, "before").field("premise") == "(cat alikula.)\nPaka alikula." and \
        gloss_item(copa, lex, "before").field("question") == "effect"


def test_file_round_trip_and_bad_files(tmp_path):
    src, tgt = planted_bitext(200)
    lex = fit_lexicon(src, tgt, source_lang="xx")
    p = tmp_path / "xx.tsv"
    lex.save(p)
    back = Lexicon.load(p)
    assert back == lex
    cases = {
        "no magic": "paka\tcat\n",
        "lexicon line": "# lingalign lexicon 1\npaka cat\n",
        "not a lexicon word": "# lingalign lexicon 1\nPaka\tcat\n",
        "no words": "# lingalign lexicon 1\n# source_lang=swh\n",
    }
    for what, text in cases.items():
        bad = tmp_path / "bad.tsv"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(LingalignError, match=what if what != "no magic" else "not a lingalign lexicon"):
            Lexicon.load(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LingalignError, match="not a lingalign lexicon"):
        Lexicon.load(bad)
    with pytest.raises(LingalignError, match="no such lexicon file"):
        Lexicon.load(tmp_path / "missing.tsv")


def test_fit_refuses_what_it_cannot_learn_from():
    with pytest.raises(LingalignError, match="differ in length"):
        fit_lexicon(["a b"], ["c d", "e"], source_lang="xx")
    with pytest.raises(LingalignError, match="no sentence pairs"):
        fit_lexicon([], [], source_lang="xx")
    unspaced = ["这是一个没有空格的很长的句子它一直写下去没有任何停顿也没有空格分开每个词语所以看起来像一个词"] * 5
    with pytest.raises(LingalignError, match="without spaces"):
        fit_lexicon(unspaced, ["this is a sentence"] * 5, source_lang="zho_Hans")


def test_lexicon_command_writes_a_file_and_refuses_bad_arguments(tmp_path, capsys):
    src, tgt = planted_bitext(300)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n".join(src[:150]) + "\n", encoding="utf-8")
    b.write_text("\n".join(tgt[:150]) + "\n", encoding="utf-8")
    c, d = tmp_path / "c.txt", tmp_path / "d.txt"
    c.write_text("\n".join(src[150:]) + "\n", encoding="utf-8")
    d.write_text("\n".join(tgt[150:]) + "\n", encoding="utf-8")
    out = tmp_path / "lex.tsv"
    assert main(["lexicon", "--src", str(a), "--tgt", str(b), "--src", str(c), "--tgt", str(d),
                 "--src-lang", "xx", "--out", str(out)]) == 0
    assert "30 words from 300 pairs" in capsys.readouterr().out
    assert dict(Lexicon.load(out).entries) == dict(zip(SOURCE, ENGLISH))
    assert main(["lexicon", "--src", str(a), "--tgt", str(b), "--src", str(c), "--src-lang", "xx",
                 "--out", str(out)]) == 1
    assert "give a --tgt for each --src" in capsys.readouterr().err
    assert main(["lexicon", "--src", str(a), "--tgt", str(b), "--src-lang", "xx", "--out", str(out),
                 "--min-prob", "0"]) == 1
    assert "--min-prob" in capsys.readouterr().err


def test_choice_with_a_lexicon_reads_each_item_through_it(tiny_model, monkeypatch):
    """eval_choice with a lexicon scores the glossed items (the same numbers as scoring them
    directly) and compares them with the items as they are: fixed, broken, gap closed."""
    lex = Lexicon("xx", {"tap": "faucet", "glass": "cup"})
    items = [ChoiceItem("xcopa", str(k), (("premise", p), ("question", "effect")), ("it broke.", "water flowed."), k % 2)
             for k, p in enumerate(["the man opened the tap.", "the glass fell.", "the sun rose."])]
    english = [ChoiceItem(it.task, it.uid, it.fields, it.options, it.label) for it in items]
    llm = tiny_llm(tiny_model)
    r = eval_choice(llm, items, lang="en", english=english, lexicon=lex, chat=False)
    direct = eval_choice(llm, [gloss_item(it, lex) for it in items], lang="en", chat=False)
    plain = eval_choice(llm, items, lang="en", chat=False)
    assert r["correct"] == direct["correct"] and r["accuracy_without"] == plain["accuracy"]
    assert {"fixed", "broken", "sign_p", "gap_closed"} <= set(r)


def test_run_and_eval_read_prompts_through_a_lexicon(tiny_model, tmp_path, capsys):
    lex = tmp_path / "xx.tsv"
    Lexicon("xx", {"paka": "cat"}).save(lex)
    assert main(["run", "--model", str(tiny_model), "-p", "paka mdogo", "-n", "4", "--lexicon", str(lex)]) == 0
    assert "the model reads: '(cat mdogo)\\npaka mdogo'" in capsys.readouterr().err
    prompts = tmp_path / "p.txt"
    prompts.write_text("paka mdogo\nmbwa mkubwa\n", encoding="utf-8")
    assert main(["eval", "fidelity", "--model", str(tiny_model), "--data", str(prompts), "--lang", "sw", "-n", "4",
                 "--lexicon", str(lex), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["with"]["n"] == out["without"]["n"] == 2
    bad = tmp_path / "bad.tsv"
    bad.write_text("nothing\n", encoding="utf-8")
    assert main(["run", "--model", str(tiny_model), "-p", "x", "--lexicon", str(bad)]) == 1
    assert "not a lingalign lexicon" in capsys.readouterr().err


def _choice_result(correct: list[bool]) -> dict:
    return {"accuracy": sum(correct) / len(correct), "correct": correct}


@pytest.mark.parametrize("with_lexicon, fidelity_with, reads, why", [
    ([True, True, True, False], 1.0, True, None),  # higher, language kept
    ([True, True, False, False], 1.0, True, None),  # as high: not lowered
    ([True, False, False, False], 1.0, False, "lowered dev accuracy"),
    ([True, True, True, False], 0.5, False, "lowered the share of answers in the language"),
])
def test_tune_lexicon_reads_unless_it_lowers_accuracy_or_fidelity(monkeypatch, with_lexicon, fidelity_with, reads,
                                                                  why):
    """The verdict: dev accuracy not lowered and fidelity kept within max_fidelity_drop; written
    into the lexicon's metadata, which its file keeps."""
    import lingalign.tune as tune_mod

    plain = [True, True, False, False]
    monkeypatch.setattr(tune_mod, "eval_choice", lambda llm, items, lang, lexicon=None, progress=None:
                        _choice_result(with_lexicon if lexicon is not None else plain))
    glossed_prompts: list[list[str]] = []

    def fidelity(llm, t, prompts, lang, max_tokens):
        glossed = prompts[0].startswith("(")
        glossed_prompts.append(list(prompts)) if glossed else None
        return {"fidelity": fidelity_with if glossed else 1.0, "looping": 0.0}

    monkeypatch.setattr(tune_mod, "_fidelity", fidelity)
    lex = Lexicon("xx", {"paka": "cat"}, meta={"pairs": "9"})
    tuned, record = tune_mod.tune_lexicon(None, lex, ["a", "b", "c", "d"], lang="sw", fidelity_prompts=["paka"])
    assert record["reads"] is reads and tuned.meta["reads"] == str(reads).lower() and tuned.meta["pairs"] == "9"
    assert (record["why"] is None) if why is None else (why in record["why"] and why in tuned.meta["tuned"])
    if why != "lowered dev accuracy":  # fidelity is generated only where accuracy lets it read
        assert glossed_prompts == [["(cat)\npaka"]]
    else:
        assert glossed_prompts == [] and "fidelity" not in record
    assert tuned.entries == lex.entries


def test_tune_lexicon_with_max_p_needs_evidence(monkeypatch):
    import lingalign.tune as tune_mod

    monkeypatch.setattr(tune_mod, "eval_choice", lambda llm, items, lang, lexicon=None, progress=None:
                        _choice_result([True, True] if lexicon is not None else [False, True]))
    _, record = tune_mod.tune_lexicon(None, Lexicon("xx", {"a": "b"}), [1, 2], lang="sw", max_p=0.05)
    assert record["reads"] is False and "not evidence" in record["why"]  # one fixed item: p 0.5
    _, record = tune_mod.tune_lexicon(None, Lexicon("xx", {"a": "b"}), [1, 2], lang="sw")
    assert record["reads"] is True


def test_tune_lexicon_command_writes_its_verdict_and_run_follows_it(tiny_model, tmp_path, capsys):
    lex = tmp_path / "xx.tsv"
    Lexicon("xx", {"tap": "faucet", "glass": "cup"}).save(lex)
    dev = tmp_path / "val.xx.jsonl"
    dev.write_text("".join(json.dumps({"premise": p, "choice1": "it broke.", "choice2": "water flowed.",
                                       "question": "effect", "label": k % 2, "idx": k}) + "\n"
                           for k, p in enumerate(["the man opened the tap.", "the glass fell.", "the sun rose."])),
                   encoding="utf-8")
    out = tmp_path / "tuned.tsv"
    assert main(["tune", "--lexicon", str(lex), "--dev", str(dev), "--metric", "choice", "--lang", "en",
                 "--model", str(tiny_model), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    tuned = Lexicon.load(out)
    assert tuned.meta["reads"] in ("true", "false") and "choice on 3 dev items" in tuned.meta["tuned"]
    assert "tiny.gguf" in tuned.meta["tuned"] and f"written to {out}" in said
    off = tmp_path / "off.tsv"
    Lexicon("xx", {"paka": "cat"}, meta={"reads": "false", "tuned": "choice on 9 dev items: 0.5 -> 0.4"}).save(off)
    assert main(["run", "--model", str(tiny_model), "-p", "paka mdogo", "-n", "2", "--lexicon", str(off)]) == 0
    err = capsys.readouterr().err
    assert "was tuned off (choice on 9 dev items: 0.5 -> 0.4)" in err and "the model reads" not in err
    for argv, message in [(["--transform", str(lex), "--lexicon", str(lex)], "--transform or --lexicon"),
                          (["--lexicon", str(lex)], "--metric choice"),
                          (["--lexicon", str(lex), "--metric", "choice", "--alphas", "0.5"], "--alphas tunes a transform")]:
        assert main(["tune", *argv, "--dev", str(dev), "--model", str(tiny_model)]) == 1
        assert message in capsys.readouterr().err
    test_like = tmp_path / "test.xx.jsonl"
    test_like.write_text(dev.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["tune", "--lexicon", str(lex), "--dev", str(test_like), "--metric", "choice",
                 "--model", str(tiny_model)]) == 1
    assert "looks like test data" in capsys.readouterr().err
    assert main(["eval", "choice", "--data", str(dev), "--reading", "gloss", "--model", str(tiny_model)]) == 1
    assert "--reading says how items are read through --lexicon" in capsys.readouterr().err
    assert main(["eval", "choice", "--data", str(dev), "--lexicon", str(lex), "--reading", "gloss",
                 "--model", str(tiny_model), "--lang", "en"]) == 0
    assert "(read through the lexicon: gloss)" in capsys.readouterr().out


def test_items_are_read_as_their_task_says_or_as_asked():
    """before: the text annotated, options as they are; gloss: text and in-language options
    glossed (SIB-200's options are English topic names and stay); default: TASK_READING."""
    from lingalign.lexicon import TASK_READING

    lex = Lexicon("xx", {"paka": "cat", "alikimbia": "ran", "alilala": "slept"})
    story = ChoiceItem("xstorycloze", "1", (("sentence1", "paka mdogo"), ("sentence2", ""), ("sentence3", ""),
                                            ("sentence4", "")), ("paka alikimbia", "paka alilala"), 0)
    sib = ChoiceItem("sib200", "2", (("text", "paka alilala"),), ("science/technology", "travel"), 1)
    before = gloss_item(story, lex, "before")
    assert likelihood_prompt(before, "sw").context == "(cat mdogo)\npaka mdogo" and before.options == story.options
    glossed = gloss_item(story, lex, "gloss")
    assert likelihood_prompt(glossed, "sw").context == "cat mdogo" and glossed.options == ("cat ran", "cat slept")
    assert gloss_item(sib, lex, "gloss").options == sib.options and gloss_item(sib, lex, "gloss").field("text") == "cat slept"
    assert gloss_item(story, lex) == gloss_item(story, lex, TASK_READING["xstorycloze"])
    assert gloss_item(sib, lex) == gloss_item(sib, lex, TASK_READING["sib200"])
    with pytest.raises(LingalignError, match="unknown reading 'after'"):
        gloss_item(story, lex, "after")


def test_info_describes_a_lexicon_its_verdict_and_the_shipped_rule(tmp_path, capsys):
    """`lingalign info` on a lexicon: its languages, size, what it was learned from and
    tune --lexicon's verdict; on a shipped one, the manifest's rule per model; --json has it all."""
    from lingalign.data import shipped_lexicon_path

    lex = Lexicon("swh", {"paka": "cat", "mbwa": "dog"}, meta={"pairs": "2", "reads": "false", "tuned": "choice: worse"})
    lex.save(tmp_path / "sw.tsv")
    assert Lexicon.load(tmp_path / "sw.tsv").reads is False and Lexicon("swh", {"paka": "cat"}).reads is None
    assert Lexicon("swh", {"paka": "cat"}, meta={"reads": "true"}).reads is True
    assert main(["info", str(tmp_path / "sw.tsv")]) == 0
    out = capsys.readouterr().out
    assert "swh -> eng, 2 words" in out and "off (read as it is): choice: worse" in out and "learned.pairs: 2" in out
    assert main(["info", "--json", str(tmp_path / "sw.tsv")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["words"] == 2 and info["meta"]["reads"] == "false" and info["shipped_rule"] == {}
    assert main(["info", str(shipped_lexicon_path("sw"))]) == 0
    out = capsys.readouterr().out
    assert "rule.qwen2.5-coder-1.5b: reads prompts in the language" in out and "rule.gemma3-270m: off: " in out
    (tmp_path / "bad.tsv").write_text("paka\tcat\n", encoding="utf-8")
    assert main(["info", str(tmp_path / "bad.tsv")]) == 1  # neither a lexicon nor a transform: one line says so
    assert "not a GGUF file" in capsys.readouterr().err
