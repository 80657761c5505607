"""Routing: the right transform for sentences in each embedded language; fail safe otherwise."""

from __future__ import annotations

import dataclasses

from conftest import tiny_llm
from test_hook import _transform

import lingalign
from lingalign.data import EMBEDDED_LANGUAGES, embedded_path, read_lines
from lingalign.route import Router, detect_language


def _router(model_path):
    langs = [lang for lang in EMBEDDED_LANGUAGES if lang != "eng"]
    transforms = {lang: dataclasses.replace(_transform(model_path, [1], seed=k), source_lang=lang) for k, lang in enumerate(langs)}
    return Router(transforms.values()), transforms


def test_router_picks_each_embedded_language(tiny_model):
    router, transforms = _router(tiny_model)
    for lang in EMBEDDED_LANGUAGES:
        lines = read_lines(embedded_path(lang))[:40]
        picks = [router.select(line) for line in lines]
        if lang == "eng":
            assert all(t is None for _, t in picks)
            continue
        right = sum(t is transforms[lang] for _, t in picks)
        wrong = sum(t is not None and t is not transforms[lang] for _, t in picks)
        assert right >= 36 and wrong <= 1, (lang, right, wrong)


def test_routing_fails_safe():
    assert detect_language("12345 ???")[0] is None
    assert detect_language("")[0] is None
    assert Router([]).select("Habari ya asubuhi, rafiki yangu.") == ("swh", None)  # known language, no transform


def test_a_detected_language_and_a_file_for_it_meet_under_one_code(tiny_model):
    """Every language the detector reports gets a three-letter code, the one a file for the
    language is keyed by however it names it ('fi', 'fin'): a user's Finnish transform is routed
    to, whatever code its source_lang uses."""
    from lingalign.data import normalize_lang
    from lingalign.route import _identifier

    assert all(len(normalize_lang(code)) == 3 for code in _identifier().nb_classes)
    for sib200, detected in (("pes_Arab", "fa"), ("npi_Deva", "ne"), ("uzn_Latn", "uz"), ("lvs_Latn", "lv"),
                             ("ekk_Latn", "et"), ("swh_Latn", "sw"), ("arb_Arab", "ar"), ("zsm_Latn", "ms")):
        assert normalize_lang(sib200) == normalize_lang(detected), sib200  # a SIB-200 folder's code meets detection
    finnish = "Kissa istuu ikkunalla ja katsoo lintuja puutarhassa."
    for code in ("fi", "fin", "FI"):
        t = dataclasses.replace(_transform(tiny_model, [1], seed=0), source_lang=code)
        assert Router([t]).select(finnish) == ("fin", t)


def test_steering_routes_each_generation(tiny_model, other_tiny_model):
    llm = tiny_llm(tiny_model)
    steering = lingalign.attach(llm)
    router, transforms = _router(tiny_model)
    foreign = dataclasses.replace(transforms["spa"], model=lingalign.model.ModelFingerprint("llama", 64, 4, "0" * 64, "1" * 64))
    router.transforms["spa"] = foreign  # made for another model: refused, so no transform
    steering.set_router(router)
    llm("Mama yangu anapika chakula kitamu jikoni.", max_tokens=2)
    assert steering.routed_language == "swh" and steering.transform is transforms["swh"]
    assert steering.take_rows_transformed() > 0
    llm("My mother is cooking a tasty meal in the kitchen.", max_tokens=2)
    assert steering.routed_language == "eng" and steering.transform is None
    assert steering.take_rows_transformed() == 0
    llm("Mi madre está cocinando una comida deliciosa en la cocina.", max_tokens=2)
    assert steering.routed_language == "spa" and steering.transform is None
    steering.set_router(None)
