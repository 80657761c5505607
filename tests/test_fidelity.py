"""Answer-language fidelity: wrong-language and looping answers are flagged; prompts are read
from task and text files."""

from __future__ import annotations

import pytest
from conftest import tiny_llm
from test_hook import _transform

from lingalign.fidelity import describe_answer, eval_fidelity, is_looping, read_prompts, summarize
from test_tasks import STORY_HEADER


def test_wrong_language_and_looping_answers_are_flagged():
    answers = [
        "Kituo cha treni kiko karibu na soko, tembea moja kwa moja kisha pinda kushoto.",  # Swahili
        "The answer is that you can get to the station by bus or train.",  # English
        "I am not sure about that. I am not sure about that. I am not sure about that.",  # English, looping
        "",  # nothing
    ]
    r = summarize(answers, "sw")
    assert r["lang"] == "swh" and r["n"] == 4
    assert r["fidelity"] == 0.25 and r["english_share"] == 0.5 and r["looping"] == 0.25 and r["empty"] == 0.25
    assert summarize(answers[:1], "swh_Latn")["fidelity"] == 1.0
    assert is_looping("na na na") and is_looping("one two three, one two three, one two three.")
    assert not is_looping("one two three, one two three, and then four.")
    assert describe_answer(answers[0], "sw") == "in Swahili"
    assert describe_answer(answers[2], "swh") == "in English, not Swahili; looping"
    assert describe_answer(answers[3], "sw") == "no words"


def test_prompts_from_story_sib_and_text_files(tmp_path):
    story = tmp_path / "sw.train.tsv"
    story.write_text(STORY_HEADER + "\nid\tA.\tB.\tC.\tD.\tE.\tF.\t1\n", encoding="utf-8")
    assert read_prompts(story) == ["A. B. C. D."]
    sib = tmp_path / "dev.tsv"
    sib.write_text("index_id\tcategory\ttext\n" + "".join(f"{k}\t{c}\ttext {k}\n" for k, c in
                                                           enumerate(["travel"] * 5 + ["sports"] * 5)), encoding="utf-8")
    sample = read_prompts(sib, limit=4)
    assert len(sample) == 4 and sum(int(p.split()[1]) < 5 for p in sample) == 2  # stratified, not the first rows
    text = tmp_path / "q.txt"
    text.write_text("swali moja\nswali mbili\n", encoding="utf-8")
    assert read_prompts(text, limit=1) == ["swali moja"]


def test_eval_fidelity_measures_with_and_without_and_restores_the_steering(tiny_model):
    import lingalign

    llm = tiny_llm(tiny_model, n_ctx=256)
    steering = lingalign.attach(llm)
    t = _transform(tiny_model, [1, 2], scale=3.0)
    r = eval_fidelity(llm, ["hello there friend", "the quick brown fox"], "en", transform=t, max_tokens=6)
    assert set(r) >= {"without", "with", "examples"} and r["without"]["n"] == 2 and r["with"]["n"] == 2
    assert r["examples"][0]["with"] != r["examples"][0]["without"]  # the transform was applied
    assert steering.transform is None  # as it was before
