"""lingalign serve without a server: the request field, the catalog of served transforms and
what a request selects (no server extra needed)."""

from __future__ import annotations

import dataclasses
import math
import sys

import pytest
from conftest import tiny_llm
from test_hook import _transform

import lingalign
from lingalign.data import EMBEDDED_LANGUAGES, embedded_path, read_lines
from lingalign.errors import LingalignError, ModelMismatchError, RequestError
from lingalign.model import ModelFingerprint, fingerprint
from lingalign.serve.catalog import Catalog, read_transforms
from lingalign.serve.selection import Ask, chat_text, completion_text, parse, select, with_lexicon

LANGS = [lang for lang in EMBEDDED_LANGUAGES if lang != "eng"]


@pytest.fixture(scope="module")
def folder(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    for k, lang in enumerate(LANGS):
        dataclasses.replace(_transform(tiny_model, [1, 2], seed=k), source_lang=lang).save(d / f"{lang}-eng.gguf")
    # a second Spanish transform, listed after spa-eng: auto keeps picking spa-eng
    dataclasses.replace(_transform(tiny_model, [3], seed=99), source_lang="es", positions="last").save(d / "spa2.gguf")
    return d


@pytest.fixture(scope="module")
def steering(tiny_model):
    return lingalign.attach(tiny_llm(tiny_model))


@pytest.fixture(scope="module")
def catalog(folder, tiny_model, steering):
    return Catalog.prepare(read_transforms([folder], fingerprint(tiny_model)), steering)


def test_parse_takes_every_key_and_defaults_the_missing_ones():
    assert parse({"prompt": "x"}, "auto") == Ask("auto")
    assert parse({"lingalign": None}, None) == Ask(None)
    assert parse({"lingalign": {}}, "spa-eng") == Ask("spa-eng")
    assert parse({"lingalign": {"alpha": 0.5}}, "auto") == Ask("auto", 0.5)
    assert parse({"lingalign": {"transform": None}}, "auto") == Ask(None)
    assert parse({"lingalign": {"transform": "none"}}, "auto") == Ask(None)
    assert parse({"lingalign": {"transform": "x", "alpha": 2, "positions": "last"}}, None) == Ask("x", 2.0, "last")


@pytest.mark.parametrize("field, words", [
    ("spa-eng", '"lingalign" must be an object'),
    ([1], '"lingalign" must be an object'),
    ({"transform": 3}, '"lingalign.transform" must be a transform name'),
    ({"transform": ["spa-eng"]}, '"lingalign.transform" must be a transform name'),
    ({"strength": 1}, "unknown key 'strength'"),
    ({"alpha": math.nan}, "alpha nan is out of range"),
    ({"alpha": math.inf}, "alpha inf is out of range"),
    ({"alpha": 1e9}, "out of range"),
    ({"alpha": "0.5"}, '"lingalign.alpha" must be a number, not a string'),
    ({"alpha": True}, '"lingalign.alpha" must be a number, not a boolean'),
    ({"positions": "middle"}, "unknown position policy 'middle'"),
    ({"positions": 1}, '"lingalign.positions" must be a string'),
])
def test_parse_refuses_a_malformed_field_in_one_line(field, words):
    with pytest.raises(RequestError) as e:
        parse({"prompt": "x", "lingalign": field}, None)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_prompt_texts_for_auto():
    assert completion_text({"prompt": "hola"}) == "hola"
    assert completion_text({"prompt": ["hola"]}) == "hola"
    assert completion_text({"prompt": [1, 2]}) is None
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "Habari"}, {"type": "image_url", "image_url": {}},
                                             {"type": "text", "text": "rafiki"}]}]
    assert chat_text({"messages": messages}) == "Habari\nrafiki"
    assert chat_text({"messages": messages[:3]}) == "first"
    assert chat_text({"messages": [{"role": "system", "content": "x"}]}) is None
    assert chat_text({"messages": "nonsense"}) is None


def test_catalog_names_lists_and_routes(catalog):
    assert catalog.names == sorted([f"{lang}-eng" for lang in LANGS] + ["spa2"], key=lambda n: n + ".gguf")
    listed = {d["name"]: d for d in catalog.describe()}
    assert listed["deu-eng"] == {"name": "deu-eng", "method": "test", "source_lang": "deu", "target_lang": "eng",
                                 "alpha": 1.0, "positions": "all", "layers": [1, 2], "auto": True,
                                 "file": "deu-eng.gguf", "warnings": []}
    assert listed["spa2"]["auto"] is False and listed["spa2"]["positions"] == "last" and listed["spa2"]["layers"] == [3]
    assert catalog.for_language("spa").name == "spa-eng"
    assert catalog.for_language("eng") is None and catalog.for_language(None) is None
    with pytest.raises(RequestError, match=r"unknown transform 'fra-eng' \(this server has: cmn-eng, deu-eng"):
        catalog.entry("fra-eng")


def test_variants_share_the_packed_maps_and_stay_bounded(catalog, monkeypatch):
    base = catalog.prepared("spa-eng")
    assert base is catalog.entry("spa-eng").prepared
    assert catalog.prepared("spa-eng", 1.0, "all") is base  # the file's own settings: the prepared one
    half = catalog.prepared("spa-eng", 0.5)
    assert half is not base and half.core is base.core  # no packing
    assert (half.alpha, half.positions) == (0.5, "all")
    assert catalog.prepared("spa-eng", 0.5, "all") is half  # the same object: KV reuse stays possible
    monkeypatch.setattr(catalog, "_max_variants", 3)
    for k in range(5):
        catalog.prepared("spa-eng", 0.1 * (k + 1), "last")
    assert len(catalog._variants) == 3
    assert catalog.prepared("spa-eng", 0.5) is not half  # evicted: made again


def test_select_named_auto_and_none(catalog):
    s = select(Ask("deu-eng", 0.25, "prompt"), catalog, None)
    assert (s.name, s.prepared.alpha, s.prepared.positions, s.language) == ("deu-eng", 0.25, "prompt", None)
    assert s.report() == {"transform": "deu-eng", "requested": "deu-eng", "language": None, "confidence": None,
                          "alpha": 0.25, "positions": "prompt", "lexicon": None}
    assert s.headers() == {"x-lingalign-transform": "deu-eng"}
    none = select(Ask(None), catalog, "Mi madre cocina.")
    assert none.prepared is None and none.headers() == {"x-lingalign-transform": "none"}
    english = select(Ask("auto"), catalog, "My mother is cooking a tasty meal in the kitchen.")
    assert english.name is None and english.language == "eng" and english.confidence > 0.5
    assert english.headers() == {"x-lingalign-transform": "none", "x-lingalign-language": "eng"}
    assert select(Ask("auto"), catalog, "").language is None
    assert select(Ask("auto"), catalog, None).name is None


def test_auto_selects_each_embedded_language_and_none_for_english(catalog):
    for lang in EMBEDDED_LANGUAGES:
        picks = [select(Ask("auto"), catalog, line).name for line in read_lines(embedded_path(lang))[:40]]
        if lang == "eng":
            assert picks == [None] * 40
            continue
        right = picks.count(f"{lang}-eng")
        wrong = sum(p is not None and p != f"{lang}-eng" for p in picks)
        assert right >= 36 and wrong <= 1, (lang, right, wrong)


def test_read_transforms_refuses_what_cannot_be_served(tiny_model, tmp_path):
    model = fingerprint(tiny_model)
    good = _transform(tiny_model, [1])
    with pytest.raises(LingalignError, match="not a folder"):
        read_transforms([tmp_path / "nope"], model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LingalignError, match="no .gguf transform"):
        read_transforms([tmp_path / "empty"], model)
    for d, name in (("a", "x"), ("b", "x")):
        (tmp_path / d).mkdir()
        good.save(tmp_path / d / f"{name}.gguf")
    with pytest.raises(LingalignError, match="would both be served as 'x'"):
        read_transforms([tmp_path / "a", tmp_path / "b"], model)
    for bad_name, words in (("auto", "means something else"), ("sp ace", "rename it")):
        (tmp_path / bad_name).mkdir()
        good.save(tmp_path / bad_name / f"{bad_name}.gguf")
        with pytest.raises(LingalignError, match=words):
            read_transforms([tmp_path / bad_name], model)
    (tmp_path / "other").mkdir()
    other = ModelFingerprint("llama", 64, 4, "0" * 64, "1" * 64)
    dataclasses.replace(good, model=other).save(tmp_path / "other" / "o.gguf")
    with pytest.raises(ModelMismatchError, match=r"o\.gguf: transform was made for another model"):
        read_transforms([tmp_path / "other"], model)
    [forced] = read_transforms([tmp_path / "other"], model, force=True)
    assert forced.name == "o" and forced.warnings


def test_the_server_extra_missing_is_one_line_with_the_install_command(monkeypatch):
    import lingalign.serve

    monkeypatch.delitem(sys.modules, "lingalign.serve.app", raising=False)
    monkeypatch.delattr(lingalign.serve, "app", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    with pytest.raises(LingalignError, match=r'needs the server extra: pip install "lingalign\[server\]" \(\w+ is missing\)$'):
        lingalign.serve.create_app(lingalign.serve.ServeConfig())


def test_lexicon_key_parses_selects_and_annotates_the_last_user_message(catalog):
    from lingalign.lexicon import Lexicon

    assert parse({"lingalign": {"lexicon": True}}, None) == Ask(None, lexicon=True)
    assert parse({"lingalign": {"lexicon": "sw"}}, "auto") == Ask("auto", lexicon="sw")
    assert parse({"lingalign": {"lexicon": None}}, None) == Ask(None, lexicon=False)
    assert parse({"lingalign": {}}, None) == parse({}, None) == Ask(None)  # lexicon None: the server's default
    with pytest.raises(RequestError, match="must be true, false or a language code"):
        parse({"lingalign": {"lexicon": 3}}, None)
    with pytest.raises(RequestError, match=r"no lexicon is served for 'xx' \(served: ara, deu, "):
        select(parse({"lingalign": {"lexicon": "xx"}}, None), catalog, "paka")
    swahili = "Watu wengi wanaishi karibu na bahari kaskazini mwa nchi."
    s = select(Ask(None, lexicon=True), catalog, swahili)
    assert s.name is None and s.lexicon is not None and s.report()["lexicon"] == "swh" and s.report()["language"] is None
    assert select(Ask(None, lexicon=True), catalog, "My mother is cooking a meal in the kitchen.").lexicon is None
    assert select(Ask(None), catalog, swahili).lexicon is None
    assert select(Ask("deu-eng", lexicon=True), catalog, swahili).report()["lexicon"] == "deu"  # the transform's
    lex = Lexicon("swh", {"paka": "cat"})
    assert with_lexicon({"prompt": "paka"}, lex, chat=False) == {"prompt": "(cat)\npaka"}
    assert with_lexicon({"prompt": "paka"}, None, chat=False) == {"prompt": "paka"}
    messages = [{"role": "user", "content": "paka"}, {"role": "assistant", "content": "paka"},
                {"role": "user", "content": [{"type": "text", "text": "paka"}, {"type": "image_url", "image_url": "x"}]}]
    out = with_lexicon({"messages": messages}, lex, chat=True)["messages"]
    assert out[:2] == messages[:2] and out[2]["content"] == [{"type": "text", "text": "(cat)\npaka"}, messages[2]["content"][1]]
    assert messages[2]["content"][0]["text"] == "paka"  # the request's own body is not changed


def test_the_servers_lexicon_default_reads_only_requests_that_do_not_say(catalog):
    """--lexicon auto: a request that does not mention the lexicon gets its language's shipped
    lexicon where the language is in the server's set; false, another language, English don't."""
    from lingalign.data import shipped_lexicon_reads
    from lingalign.serve import ServeConfig
    from lingalign.serve.lexicons import Lexicons

    swahili = "Watu wengi wanaishi karibu na bahari kaskazini mwa nchi."
    reads = Lexicons(default=frozenset({"swh"}))
    s = select(Ask(None), catalog, swahili, reads)
    assert s.lexicon is not None and s.report()["lexicon"] == "swh"
    assert select(Ask(None, lexicon=False), catalog, swahili, reads).lexicon is None
    assert select(Ask(None), catalog, swahili, Lexicons(default=frozenset({"tur"}))).lexicon is None
    assert select(Ask(None), catalog, "My mother is cooking a meal in the kitchen.", reads).lexicon is None
    assert select(Ask("deu-eng"), catalog, swahili, reads).lexicon is None  # the transform's language: deu
    assert ServeConfig(model="qwen2.5-coder-1.5b", lexicon="auto").lexicons().default == \
        shipped_lexicon_reads("qwen2.5-coder-1.5b") != frozenset()
    assert ServeConfig(model="qwen2.5-coder-1.5b").lexicons().default == frozenset()  # default: none
    assert ServeConfig(model="/some/other.gguf", lexicon="auto").lexicons().default == frozenset()
    with pytest.raises(LingalignError, match="--lexicon 'always': not auto or none"):
        ServeConfig(lexicon="always").lexicons()


def test_a_users_lexicon_files_serve_before_the_shipped_ones(catalog, tmp_path):
    """--lexicon-file: the user's lexicon replaces the shipped one for its language and adds
    languages none is shipped for; --lexicon auto reads it by default only where `tune --lexicon`
    measured it on; bad files are refused when the server starts, with one line naming them."""
    from lingalign.data import shipped_lexicon_reads
    from lingalign.lexicon import Lexicon, shipped_lexicon
    from lingalign.serve import ServeConfig

    swahili = "Watu wengi wanaishi karibu na bahari kaskazini mwa nchi."
    files = {}
    for name, lang, entries, reads in (("sw.tsv", "swh_Latn", {"watu": "PEOPLE"}, "false"),
                                        ("fi.tsv", "fi", {"kissa": "cat"}, "true"),
                                        ("tr.tsv", "tr", {"kedi": "cat"}, None)):
        meta = {} if reads is None else {"reads": reads, "tuned": "measured"}
        Lexicon(lang, entries, meta=meta).save(tmp_path / name)
        files[lang] = tmp_path / name
    qwen = "qwen2.5-coder-1.5b"
    assert {"swh", "tur"} <= shipped_lexicon_reads(qwen)  # so that the user's files change the default below
    lexicons = ServeConfig(model=qwen, lexicon="auto", lexicon_files=tuple(files.values())).lexicons()
    # tuned off (swh), not tuned (tur): not read by default; tuned on (fin): read
    assert lexicons.default == (shipped_lexicon_reads(qwen) - {"swh", "tur"}) | {"fin"}
    assert "own: fin (fi.tsv, tuned on), swh (sw.tsv, tuned off), tur (tr.tsv, not tuned)" in lexicons.describe()
    s = select(Ask(None, lexicon="sw"), catalog, swahili, lexicons)
    assert s.lexicon is not None and s.lexicon.entries == {"watu": "PEOPLE"} and s.report()["lexicon"] == "swh"
    assert select(Ask(None, lexicon=True), catalog, swahili, lexicons).lexicon.entries == {"watu": "PEOPLE"}
    assert select(Ask(None), catalog, swahili, lexicons).lexicon is None  # tuned off: not by default
    assert select(Ask(None, lexicon="fin"), catalog, "kissa", lexicons).lexicon.entries == {"kissa": "cat"}
    finnish = "Kissa istuu ikkunalla ja katsoo lintuja puutarhassa."  # detected: fin, the file's "fi"
    assert select(Ask(None), catalog, finnish, lexicons).report()["lexicon"] == "fin"  # tuned on: by default
    assert select(Ask(None, lexicon="vi"), catalog, "con mèo", lexicons).lexicon is shipped_lexicon("vie")
    assert "fin" in lexicons.languages() and "vie" in lexicons.languages()
    bad = tmp_path / "bad.tsv"
    bad.write_text("paka\tcat\n", encoding="utf-8")
    nameless = tmp_path / "nameless.tsv"
    nameless.write_text("# lingalign lexicon 1\npaka\tcat\n", encoding="utf-8")
    for paths, words in (([bad], "bad.tsv: not a lingalign lexicon"), ([tmp_path / "none.tsv"], "no such lexicon file"),
                         ([nameless], "does not say its language"),
                         ([files["fi"], files["fi"]], "a second lexicon for fin")):
        with pytest.raises(LingalignError, match=words):
            ServeConfig(lexicon_files=tuple(paths)).lexicons()


