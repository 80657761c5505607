"""Task files parse into one item structure; bad files are refused naming file and line; the
protocols' scoring picks what the model prefers, option orders and all."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_llm

from lingalign import LingalignError
from lingalign.evaluate import _log_softmax_rows, _encode, eval_choice, gap_closed, predictions
from lingalign.tasks import (ChoiceItem, item_text, letter_orders, letter_prompt, likelihood_prompt, load_task,
                             stratified_sample)

STORY_HEADER = ("InputStoryid\tInputSentence1\tInputSentence2\tInputSentence3\tInputSentence4\t"
                "RandomFifthSentenceQuiz1\tRandomFifthSentenceQuiz2\tAnswerRightEnding")


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    xcopa = _write(tmp_path / "val.sw.jsonl", json.dumps(
        {"premise": "Mtu alifungua bomba.", "choice1": "Choo kilijaa.", "choice2": "Maji yalitoka.",
         "question": "effect", "label": 1, "idx": 7}) + "\n")
    story = _write(tmp_path / "sw.train.tsv", STORY_HEADER + "\nid1\tA.\tB.\tC.\tD.\tE1.\tE2.\t2\n")
    (tmp_path / "swh_Latn").mkdir()
    _write(tmp_path / "swh_Latn" / "labels.txt", "science/technology\ntravel\npolitics\nsports\nhealth\n"
                                                 "entertainment\ngeography\n")
    sib = _write(tmp_path / "swh_Latn" / "dev.tsv", "index_id\tcategory\ttext\n5\tsports\tMpira wa miguu.\n")
    return xcopa, story, sib


def test_each_format_parses_into_the_same_item_structure(files):
    xcopa, story, sib = (load_task(p) for p in files)
    assert (xcopa.name, xcopa.lang, story.name, story.lang, sib.name, sib.lang) == \
        ("xcopa", "sw", "xstorycloze", "sw", "sib200", "swh_Latn")
    for task, options, label in ((xcopa, ("Choo kilijaa.", "Maji yalitoka."), 1), (story, ("E1.", "E2."), 1),
                                 (sib, ("science/technology", "travel", "politics", "sports", "health",
                                        "entertainment", "geography"), 3)):
        (item,) = task.items
        assert isinstance(item, ChoiceItem) and item.options == options and item.label == label
    assert xcopa.items[0].uid == "7" and xcopa.items[0].field("question") == "effect"
    assert story.items[0].field("sentence4") == "D."
    # what each item gives its reader besides the options
    assert [item_text(t.items[0]) for t in (xcopa, story, sib)] == ["Mtu alifungua bomba.", "A. B. C. D.", "Mpira wa miguu."]


@pytest.mark.parametrize("kind, text, message", [
    ("xcopa", '{"premise": "x"}\n', r":1: missing field"),
    ("xcopa", '{"premise": "a", "choice1": "b", "choice2": "c", "question": "why", "label": 0}\n', r":1: question must"),
    ("xcopa", "\n\n", r": no items"),
    ("story", STORY_HEADER + "\nid\tA\tB\tC\tD\tE\tF\t3\n", r":2: AnswerRightEnding must be 1 or 2"),
    ("story", STORY_HEADER + "\nid\tA\tB\tC\n", r":2: 4 columns, expected 8"),
    ("story", STORY_HEADER + "\nid\tA\t\tC\tD\tE\tF\t1\n", r":2: an empty field"),
    ("sib", "index_id\tcategory\ttext\n1\tcooking\tsomething\n", r":2: unknown category 'cooking'"),
    ("sib", "index_id\tcategory\n", r":1: not a task file"),
])
def test_malformed_files_are_refused_naming_file_and_line(tmp_path, kind, text, message):
    name = {"xcopa": "val.sw.jsonl", "story": "sw.train.tsv", "sib": "dev.tsv"}[kind]
    path = _write(tmp_path / name, text)
    with pytest.raises(LingalignError, match=message) as e:
        load_task(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_limit_takes_a_seeded_sample_stratified_by_label():
    # sorted by label, as the SIB-200 files are: the first rows would be one topic only
    items = [ChoiceItem("sib200", str(k), (("text", "t"),), tuple("abcdefg"), k // 10) for k in range(70)]
    sample = stratified_sample(items, 14, seed=0)
    assert len(sample) == 14 and sorted(it.label for it in sample) == sorted(list(range(7)) * 2)
    assert [it.uid for it in sample] == [it.uid for it in stratified_sample(items, 14, seed=0)]  # fixed
    assert [int(it.uid) for it in sample] == sorted(int(it.uid) for it in sample)  # in file order
    assert [it.uid for it in stratified_sample(items, 14, seed=1)] != [it.uid for it in sample]
    assert len(stratified_sample(items, 9, seed=0)) == 9


def test_prompts_of_each_protocol():
    item = ChoiceItem("xcopa", "1", (("premise", "The glass broke."), ("question", "cause")), ("It fell.", "It was new."), 0)
    p = likelihood_prompt(item, "en")
    assert p.context == "The glass broke because" and p.continuations == (" it fell.", " it was new.")
    forward, backward = letter_orders(2)
    letter = letter_prompt(item, backward, chat=False)
    assert "A: It was new.\nB: It fell." in letter.context and letter.context.endswith("Answer:")
    assert letter.continuations == (" A", " B") and letter.option_of == (1, 0)
    assert letter_prompt(item, forward, chat=True).continuations == ("A", "B")

    story = ChoiceItem("xstorycloze", "2", (("sentence1", "A. B."), ("sentence2", ""), ("sentence3", "C."),
                                           ("sentence4", "D.")), ("E.", "F."), 1)
    assert likelihood_prompt(story, "en").context == "A. B. C. D."  # an empty sentence adds no space
    assert "Story: A. B. C. D.\n" in letter_prompt(story, forward, chat=True).context


def test_predictions_and_gap_arithmetic_on_hand_made_numbers():
    sums = [np.array([-4.0, -6.0]), np.array([-9.0, -6.0]), np.array([-2.0, -2.0])]
    counts = [np.array([1, 4]), np.array([3, 3]), np.array([1, 1])]
    summed, normalized = predictions(sums, counts)
    assert summed.tolist() == [0, 1, 0]  # a tie goes to the first option
    assert normalized.tolist() == [1, 1, 0]  # -4/1 < -6/4
    assert gap_closed(0.60, 0.50, 0.70) == pytest.approx(0.5)
    assert gap_closed(0.45, 0.50, 0.70) == pytest.approx(-0.25)
    assert gap_closed(0.60, 0.50, 0.50) is None  # English no better: no gap to close


def _reference_logp(llm, context_tokens, continuation_tokens):
    llm.reset()
    llm.eval(context_tokens + continuation_tokens)
    n = len(context_tokens)
    logp = _log_softmax_rows(np.asarray(llm.scores[n - 1 : n + len(continuation_tokens) - 1], np.float64))
    return float(logp[np.arange(len(continuation_tokens)), continuation_tokens].sum())


def test_planted_right_options_score_one_in_both_protocols(tiny_model):
    """Items whose right option is the one the tiny model prefers (found by a plain evaluation per
    option) score 1.0 by summed likelihood; with lettered prompts, labels planted from the
    model's pick in the first order score 1.0 there, and the second order scores what a plain
    evaluation of the reversed prompts says."""
    ref_llm = tiny_llm(tiny_model, logits_all=True, n_ctx=512)
    rng = np.random.default_rng(3)
    words = "the a cat dog sun rain house tree river blue red quick slow old new".split()
    likelihood_items, letter_items, agree = [], [], []
    for k in range(8):
        opts = tuple(" ".join(rng.choice(words, 3)) + "." for _ in range(2))
        item = ChoiceItem("xstorycloze", str(k), tuple((f"sentence{i}", f"{rng.choice(words)} {i}.") for i in range(1, 5)),
                          opts, 0)
        ctx, conts = _encode(ref_llm, likelihood_prompt(item, "en"))
        best = int(np.argmax([_reference_logp(ref_llm, ctx, c) for c in conts]))
        likelihood_items.append(ChoiceItem(item.task, item.uid, item.fields, item.options, best))
        picks = []
        for order in letter_orders(2):
            ctx, conts = _encode(ref_llm, letter_prompt(item, order, chat=False))
            picks.append(order[int(np.argmax([_reference_logp(ref_llm, ctx, c) for c in conts]))])
        letter_items.append(ChoiceItem(item.task, item.uid, item.fields, item.options, picks[0]))
        agree.append(picks[1] == picks[0])
    assert len({it.label for it in likelihood_items}) == 2  # both options are right somewhere
    llm = tiny_llm(tiny_model)
    assert eval_choice(llm, likelihood_items, protocol="likelihood", chat=False)["accuracy"] == 1.0
    r = eval_choice(llm, letter_items, protocol="letter", chat=False)
    assert r["accuracy_by_order"] == [1.0, pytest.approx(np.mean(agree))]
    assert r["accuracy"] == pytest.approx((1.0 + np.mean(agree)) / 2)


def test_letter_protocol_counts_both_orders_and_the_first_letter_share(monkeypatch):
    """With a scorer that knows the answers, the lettered protocol scores 1.0 in both orders; one
    that always says "A" scores one order right only where the answer is listed first, and its
    "A" share is 1.0, so a letter bias cannot pass for accuracy."""
    import lingalign.evaluate as evaluate

    items = [ChoiceItem("xcopa", str(k), (("premise", f"p{k}."), ("question", "cause")), ("x.", "y."), k % 2) for k in range(6)]
    label_of = {}

    def knowing(llm, prompts, **kwargs):
        sums = [np.array([0.0 if p.option_of[c] == label_of[p.context] else -5.0 for c in range(2)]) for p in prompts]
        return sums, [np.ones(2, np.int64) for _ in prompts], {"warnings": [], "rows_transformed": 0}

    def always_a(llm, prompts, **kwargs):
        return [np.array([0.0, -5.0]) for _ in prompts], [np.ones(2, np.int64) for _ in prompts], \
            {"warnings": [], "rows_transformed": 0}

    for it in items:
        for order in letter_orders(2):
            label_of[letter_prompt(it, order, chat=False).context] = it.label
    monkeypatch.setattr(evaluate, "score_prompts", knowing)
    r = eval_choice(object(), items, protocol="letter", chat=False)
    assert r["accuracy"] == 1.0 and r["accuracy_by_order"] == [1.0, 1.0] and r["a_share"] == pytest.approx(0.5)
    monkeypatch.setattr(evaluate, "score_prompts", always_a)
    r = eval_choice(object(), items, protocol="letter", chat=False)
    assert r["accuracy"] == 0.5 and r["a_share"] == 1.0 and r["both_orders_right"] == 0.0


def test_with_a_transform_the_items_it_fixes_and_breaks_are_counted_and_tested(monkeypatch):
    """Compared with no transform on the same items, eval_choice says how many answers the
    transform fixed and broke and whether that is evidence (tune's sign test): 6 fixed and 0
    broken is (p = 1/64); 6 fixed and 6 broken, same accuracy as without, is not."""
    import lingalign.evaluate as evaluate
    from lingalign.metrics import changed_answers, sign_test_p

    items = [ChoiceItem("xcopa", str(k), (("premise", f"p{k}."), ("question", "cause")), ("x.", "y."), 0) for k in range(20)]
    english = [ChoiceItem("xcopa", str(k), (("premise", f"e{k}."), ("question", "cause")), ("x.", "y."), 0) for k in range(20)]

    index = {likelihood_prompt(it, "en").context: k for k, it in enumerate(items)}

    def scorer(right_without, right_with):
        """Scores that pick the right option (0) for the items in the set, the wrong one for the
        others; English items always right."""
        def score(llm, prompts, transform=None, **kwargs):
            right = right_with if transform is not None else right_without
            ks = [index.get(p.context, -1) for p in prompts]
            sums = [np.array([0.0, -1.0]) if (k in right or k < 0) else np.array([-1.0, 0.0]) for k in ks]
            return sums, [np.ones(2, np.int64) for _ in prompts], {"warnings": [], "rows_transformed": 0}
        return score

    monkeypatch.setattr(evaluate, "score_prompts", scorer(set(range(10)), set(range(16))))
    r = eval_choice(object(), items, english=english, transform=object(), chat=False)
    assert (r["accuracy_without"], r["accuracy"], r["fixed"], r["broken"]) == (0.5, 0.8, 6, 0)
    assert r["sign_p"] == pytest.approx(1 / 64)
    monkeypatch.setattr(evaluate, "score_prompts", scorer(set(range(10)), set(range(6, 16))))
    r = eval_choice(object(), items, english=english, transform=object(), chat=False)
    assert (r["accuracy_without"], r["accuracy"], r["fixed"], r["broken"]) == (0.5, 0.5, 6, 6)
    assert r["sign_p"] == pytest.approx(sign_test_p(6, 6)) and r["sign_p"] > 0.5
    assert changed_answers([True, False, True], [False, False, True]) == (1, 0)
    with pytest.raises(LingalignError, match="not the same items"):
        changed_answers([True], [True, False])
