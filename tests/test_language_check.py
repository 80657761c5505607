"""`lingalign check`: chrF as sacrebleu computes it, the check's scoring around the model's
translations, and the command on a tiny model (it runs, and refuses bad input with a message)."""

from __future__ import annotations

import json

import pytest

from lingalign.cli import main
from lingalign.errors import LingalignError
from lingalign.language_check import READS_CHRF, check_language, chrf, language_name

SRC = ["hola amigo", "buenos dias", "la casa es azul"]
TGT = ["hello friend", "good morning", "the house is blue"]


def test_chrf_is_100_for_the_reference_0_for_nothing_shared_and_ignores_whitespace():
    assert chrf("the house is blue", "the house is blue") == pytest.approx(100.0)
    assert chrf("the  house is\tblue", "the house is blue") == pytest.approx(100.0)
    assert chrf("xyz", "abc") == 0.0
    assert chrf("", "abc") == 0.0
    assert 0.0 < chrf("the house is red", "the house is blue") < 100.0


def test_chrf_matches_sacrebleu_sentence_chrf():
    # sacrebleu 2.6 CHRF().sentence_score(hyp, [ref]).score for these pairs (its defaults: chrF, beta 2)
    assert chrf("The cat sat on the mat.", "The cat is sitting on the mat.") == pytest.approx(49.65, abs=0.01)
    assert chrf("hello world", "world hello") == pytest.approx(59.06, abs=0.01)


def test_language_names_from_any_code():
    assert language_name("sw") == language_name("swh_Latn") == "Swahili"
    assert language_name("zho_Hans") == "Chinese"
    assert language_name("xx") is None and language_name(None) is None


class Translator:
    """A stand-in for a Llama with a chat template that answers with a fixed text per prompt."""

    metadata = {"tokenizer.chat_template": "{{ messages }}"}

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.prompts: list[str] = []

    def tokenize(self, text: bytes, add_bos: bool = True) -> list[int]:
        return list(range(len(text.split())))

    def create_chat_completion(self, messages, temperature, max_tokens):
        prompt = messages[0]["content"]
        self.prompts.append(prompt)
        source = prompt.rsplit("\n\n", 1)[1]
        return {"choices": [{"message": {"role": "assistant", "content": self.answers[source]}}]}


def test_a_model_that_translates_reads_one_that_copies_does_not():
    perfect = check_language(Translator(dict(zip(SRC, TGT))), SRC, TGT, "es")
    assert perfect.chrf == pytest.approx(100.0) and perfect.reads and perfect.n == 3
    copier = check_language(Translator({s: s for s in SRC}), SRC, TGT, "es")
    assert copier.chrf == pytest.approx(copier.chrf_untranslated) and copier.chrf < READS_CHRF
    assert not copier.reads and "barely reads Spanish" in copier.verdict()


def test_the_instruction_names_the_language_when_it_is_known():
    model = Translator(dict(zip(SRC, TGT)))
    check_language(model, SRC[:1], TGT[:1], "spa_Latn")
    check_language(model, SRC[:1], TGT[:1], "xx")
    assert model.prompts[0].startswith("Translate this Spanish text into English.")
    assert model.prompts[1].startswith("Translate this text into English.")


def test_unpaired_or_no_sentences_are_refused():
    with pytest.raises(LingalignError, match="must be pairs"):
        check_language(Translator({}), SRC, TGT[:2])
    with pytest.raises(LingalignError, match="no sentence pairs"):
        check_language(Translator({}), [], [])


def test_check_command_on_a_tiny_base_model(tiny_model, texts, capsys):
    # the tiny model has no chat template: it continues "Spanish: ...\nEnglish:" (its text is noise)
    assert main(["check", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]),
                 "--lang", "es", "--limit", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["name"] == "Spanish" and out["threshold"] == READS_CHRF
    assert 0.0 <= out["chrf"] <= 100.0 and out["reads"] == (out["chrf"] >= READS_CHRF)
    assert main(["check", "--model", str(tiny_model), "--lang", "sw", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "Swahili, 1 sentences translated" in out and "chrF against the reference English" in out


def test_check_command_refuses_bad_input(tiny_model, texts, tmp_path, capsys):
    long = tmp_path / "long.txt", tmp_path / "long-en.txt"
    long[0].write_text("hola\n" + " ".join(["palabra"] * 3000) + "\n", encoding="utf-8")
    long[1].write_text("hello\nword\n", encoding="utf-8")
    cases = [
        (["check", "--model", str(tiny_model), "--src", str(texts[0])], "both --src and --tgt"),
        (["check", "--model", str(tiny_model)], "give --lang"),
        (["check", "--model", str(tiny_model), "--lang", "en"], "--lang eng"),
        (["check", "--model", str(tiny_model), "--lang", "yo"], "no embedded data"),
        (["check", "--model", str(tiny_model), "--lang", "sw", "--limit", "0"], "--limit must be at least 1"),
        (["check", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(tmp_path / "none.txt")], "not found"),
        (["check", "--model", str(tiny_model), "--src", str(long[0]), "--tgt", str(long[1])], "source sentence 2: Requested tokens"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("lingalign: error:") and message in err, (args, err)
