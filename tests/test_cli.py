"""The lingalign command on a tiny model: each subcommand works, bad input exits 1 with a message."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lingalign
from lingalign import Transform
from lingalign.cli import main



def test_capture_writes_activations(tiny_model, texts, tmp_path, capsys):
    out = tmp_path / "acts.npz"
    assert main(["capture", "--model", str(tiny_model), "--text", str(texts[0]), "--out", str(out), "--layers", "1,3", "--limit", "4"]) == 0
    captures = lingalign.Captures.load(out)  # what `lingalign.capture` returns, saved
    assert captures.activations.shape == (4, 2, 64)
    assert captures.layers == (1, 3) and captures.model.n_layer == 4 and captures.pool == "mean"
    assert captures.info["sentences"] == 4 and len(captures.info["sha256"]) == 64


@pytest.mark.parametrize("method", ["ridge", "incline", "meanshift", "contrastive", "langvec", "lda"])
def test_fit_info_run(tiny_model, texts, tmp_path, capsys, method):
    out = tmp_path / f"{method}.gguf"
    args = ["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]), "--out", str(out)]
    args += ["--method", method, "--src-lang", "spa", "--layers", "all", "--skip", "1", "--limit", "5"]
    if method == "ridge":
        args += ["--lambda", "1.0"]
    assert main(args) == 0
    t = Transform.load(out)
    assert t.method == method and sorted(t.layers) == [0, 1, 2, 3]
    assert t.fit_info["pairs"] == 5 and t.fit_info["skip"] == 1
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert f"method:      {method}" in capsys.readouterr().out
    assert main(["info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["source_lang"] == "spa"
    assert main(["run", "--model", str(tiny_model), "-p", "hola", "-n", "4", "--transform", str(out), "--alpha", "0.5"]) == 0
    assert capsys.readouterr().out.strip() != ""


def test_fit_staged_puts_its_two_stages_on_the_default_layers_and_control_shuffles(tiny_model, texts, tmp_path, capsys):
    out = tmp_path / "staged.gguf"
    base = ["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1])]
    assert main([*base, "--out", str(out), "--method", "staged"]) == 0
    t = Transform.load(out)
    assert t.fit_info["stages"] == {"align": [1], "anchor": [3], "anchor_strength": 1.0}  # a quarter to two thirds; the last sixth of 4
    assert [t.layers[il].kind for il in (1, 3)] == ["shift", "shift"]
    assert main([*base, "--out", str(out), "--method", "staged", "--layers", "0-1", "--anchor-layers", "2-3",
                 "--anchor-strength", "0.25"]) == 0
    assert Transform.load(out).fit_info["stages"] == {"align": [0, 1], "anchor": [2, 3], "anchor_strength": 0.25}
    shuffled = tmp_path / "shuffled.gguf"
    assert main([*base, "--out", str(shuffled), "--method", "ridge", "--lambda", "1", "--layers", "2",
                 "--control", "shuffled"]) == 0
    honest = tmp_path / "honest.gguf"
    assert main([*base, "--out", str(honest), "--method", "ridge", "--lambda", "1", "--layers", "2"]) == 0
    assert Transform.load(shuffled).fit_info["control"] == "shuffled pairs (seed 0)"
    assert not np.allclose(Transform.load(shuffled).layers[2].dense(), Transform.load(honest).layers[2].dense())
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--method", "ridge", "--anchor-layers", "3"]) == 1
    assert "--anchor-layers and --anchor-strength are for --method staged" in capsys.readouterr().err


def test_fit_also_writes_a_lexicon_from_the_same_pairs(tiny_model, tmp_path, capsys):
    """fit --lexicon: the word lexicon of the pairs the transform is fitted on (as `lingalign
    lexicon` learns it), written before the model is touched; it needs the source language."""
    from lingalign.lexicon import Lexicon, fit_lexicon

    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    pairs = [("paka mdogo analala", "the small cat sleeps"), ("mbwa mdogo anakimbia", "the small dog runs"),
             ("paka analala", "the cat sleeps"), ("mbwa anakimbia", "the dog runs")] * 3
    src.write_text("\n".join(p for p, _ in pairs) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(e for _, e in pairs) + "\n", encoding="utf-8")
    base = ["fit", "--model", str(tiny_model), "--src", str(src), "--tgt", str(tgt), "--out", str(tmp_path / "t.gguf"),
            "--method", "meanshift", "--layers", "2"]
    assert main([*base, "--src-lang", "swh", "--lexicon", str(tmp_path / "sw.tsv")]) == 0
    lex = Lexicon.load(tmp_path / "sw.tsv")
    assert lex.source_lang == "swh" and lex.meta["pairs"] == str(len(pairs))
    assert lex.entries == fit_lexicon([p for p, _ in pairs], [e for _, e in pairs], source_lang="swh").entries
    assert lex.entries["paka"] == "cat" and Transform.load(tmp_path / "t.gguf").method == "meanshift"
    capsys.readouterr()
    assert main([*base, "--lexicon", str(tmp_path / "x.tsv")]) == 1
    assert "--lexicon records the source language: give --src-lang" in capsys.readouterr().err


def test_fit_with_too_few_pairs_to_choose_a_layer_uses_the_last(tiny_model, texts, tmp_path, capsys):
    out = tmp_path / "t.gguf"
    assert main(["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]), "--out", str(out), "--lambda", "1"]) == 0
    assert sorted(Transform.load(out).layers) == [3]
    assert "too few to choose a layer" in capsys.readouterr().err


def test_fit_layers_auto_picks_one_layer_and_alpha(tiny_model, tmp_path):
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    words = ["hola amigo", "buenos dias", "la casa es azul", "me gusta el cafe", "donde esta el tren", "tengo hambre"]
    src.write_text("\n".join(f"{w} {i}" for i in range(4) for w in words) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(f"{w.upper()} {i}" for i in range(4) for w in words) + "\n", encoding="utf-8")
    out = tmp_path / "auto.gguf"
    assert main(["fit", "--model", str(tiny_model), "--src", str(src), "--tgt", str(tgt), "--out", str(out),
                 "--lambda", "1"]) == 0  # --layers auto is the default
    t = Transform.load(out)
    choice = t.fit_info["layer_choice"]
    assert len(t.layers) == 1 and sorted(choice["gain_by_layer"]) == ["0", "1", "2", "3"]
    assert choice["heldout_pairs"] == 5  # round(24 / 5): the one held-out split (metrics.heldout_split)
    from lingalign.fit import DEFAULT_ALPHA

    assert t.method == "contrastive" and t.alpha == DEFAULT_ALPHA  # the default method stores the rule's strength
    assert t.fit_info["fidelity_check"]["tried"][0]["alpha"] == DEFAULT_ALPHA  # checked, and kept
    assert main(["fit", "--model", str(tiny_model), "--method", "experts", "--src", str(src), "--tgt", str(tgt),
                 "--out", str(out), "--layers", "auto"]) == 1


def test_fit_lowers_the_strength_until_answers_keep_their_language(tiny_model, tmp_path, capsys, monkeypatch):
    """fit's fidelity check: after --layers auto, the stored strength is lowered (0.25, 0.1, then
    off) until greedy answers to the first source sentences stay in their language. The tiny
    model speaks no language, so the language check is replaced: strengths above 0.2 turn the
    answers English (what 0.5 did on Gemma 3 270M in every dev language)."""
    import lingalign.tune as tune_module

    calls = []

    def fake_fidelity(llm, t, prompts, lang, max_tokens):
        calls.append((None if t is None else t.alpha, len(prompts), lang))
        return {"fidelity": 0.0 if t is not None and t.alpha > limit[0] else 1.0, "english_share": 0.0, "looping": 0.0}

    limit = [0.2]
    monkeypatch.setattr(tune_module, "_fidelity", fake_fidelity)
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    words = ["hola amigo", "buenos dias", "la casa es azul", "me gusta el cafe", "donde esta el tren", "tengo hambre"]
    src.write_text("\n".join(f"{w} {i}" for i in range(4) for w in words) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(f"{w.upper()} {i}" for i in range(4) for w in words) + "\n", encoding="utf-8")
    base = ["fit", "--model", str(tiny_model), "--src", str(src), "--tgt", str(tgt), "--src-lang", "es"]
    out = tmp_path / "t.gguf"
    assert main([*base, "--out", str(out)]) == 0
    t = Transform.load(out)
    assert t.alpha == 0.1 and [c[0] for c in calls] == [None, 0.5, 0.25, 0.1]
    assert calls[0][1:] == (8, "spa")  # the first 8 source sentences, in the source language
    assert [r["alpha"] for r in t.fit_info["fidelity_check"]["tried"]] == [0.5, 0.25, 0.1]
    assert "stored alpha 0.1" in capsys.readouterr().err
    limit[0] = 0.0  # no strength keeps the language: off
    assert main([*base, "--out", str(out)]) == 0
    assert Transform.load(out).alpha == 0.0
    assert "alpha 0 (off)" in capsys.readouterr().err
    calls.clear()
    for flags in (["--fidelity-check", "0"], ["--alpha", "1"], ["--layers", "2"]):  # no check: off, or not fit's choice
        assert main([*base, *flags, "--out", str(out)]) == 0
    assert calls == []


def test_fit_and_convert_precision_f16_halves_the_file_q8_quarters_it_q4_eighths_it(tiny_model, texts, tmp_path, capsys):
    sizes = {}
    for precision in ("f32", "f16", "q8", "q4"):
        out = tmp_path / f"{precision}.gguf"
        assert main(["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]), "--out", str(out),
                     "--lambda", "1", "--rank", "full", "--layers", "all", "--precision", precision]) == 0
        t = Transform.load(out)
        stored = {"q8": t.layers[0].delta_q8, "q4": t.layers[0].delta_q4}.get(precision, t.layers[0].matrix)
        dtypes = {"f32": np.float32, "f16": np.float16, "q8": np.int8, "q4": np.int8}
        assert t.precision == precision and stored.dtype == dtypes[precision]
        sizes[precision] = out.stat().st_size
        capsys.readouterr()
        assert main(["info", str(out)]) == 0
        assert f"precision:   {precision}" in capsys.readouterr().out
    assert sizes["f16"] < 0.6 * sizes["f32"]
    assert sizes["q8"] < 0.35 * sizes["f32"]
    assert sizes["q4"] < 0.2 * sizes["f32"]
    # convert: the same maps in another precision, as fit would have stored them
    f32 = Transform.load(tmp_path / "f32.gguf")
    for precision in ("q4", "f16"):
        out = tmp_path / f"converted-{precision}.gguf"
        capsys.readouterr()
        assert main(["convert", str(tmp_path / "f32.gguf"), str(out), "--precision", precision]) == 0
        assert f"f32 -> {precision}" in capsys.readouterr().out
        back = Transform.load(out)
        assert back.precision == precision and back.summary() == f32.summary()
        for il, lm in back.layers.items():
            assert np.array_equal(lm.dense(), f32.layers[il].to_precision(precision).dense())
    assert main(["convert", str(tmp_path / "nope.gguf"), str(tmp_path / "x.gguf"), "--precision", "q4"]) == 1
    assert "transform file not found" in capsys.readouterr().err


def test_a_closed_output_pipe_ends_quietly(tiny_model, texts, tmp_path, capsys, monkeypatch):
    """`lingalign info T | head -1`: the reader goes away; no error message, exit 141 (SIGPIPE)."""
    out = tmp_path / "t.gguf"
    assert main(["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]), "--out", str(out),
                 "--lambda", "1"]) == 0
    capsys.readouterr()

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["info", str(out)]) == 141
    assert capsys.readouterr().err == ""


def test_bad_input_exits_1_with_message(tiny_model, texts, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("caf\xe9\n".encode("latin-1"))
    cases = [
        (["info", str(texts[0])], "not a GGUF file"),
        (["info", str(tmp_path / "nope.gguf")], "transform file not found"),
        (["info", str(tiny_model)], "not a lingalign transform"),
        (["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(short), "--out", str(tmp_path / "x.gguf")], "line-aligned"),
        (["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]), "--out", str(tmp_path / "x.gguf"), "--layers", "7"], "unknown layer"),
        (["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]), "--out", str(tmp_path / "x.gguf"), "--layers", "x"], "bad layer spec"),
        (["fit", "--model", str(tiny_model), "--src", str(texts[0]), "--tgt", str(texts[1]), "--out", str(tmp_path / "x.gguf"), "--skip", "100"], "no sentence pairs"),
        (["capture", "--model", str(tiny_model), "--text", str(not_utf8), "--out", str(tmp_path / "a.npz")], "not UTF-8"),
        (["run", "--model", str(tmp_path / "missing.gguf"), "-p", "hi"], "model file not found"),
        (["run", "--model", str(texts[0]), "-p", "hi"], "not a GGUF model file"),
        (["fit", "--model", str(tiny_model), "--out", str(tmp_path / "x.gguf")], "--src"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("lingalign: error:") and message in err, (args, err)


def test_bench_json_has_the_ratios_and_hook_times(tiny_model, capsys):
    """`lingalign bench --json` on a tiny model: every ratio the issue names, and the time spent
    inside the hook, which is zero for the variants that apply nothing."""
    import json

    assert main(["bench", "--model", str(tiny_model), "--repeats", "1", "--threads", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("pp_ratio_full", "decode_ratio_full", "pp_ratio_idle", "decode_ratio_idle", "pp_ratio_last", "decode_ratio_splits",
                "capture_ratio", "decode_ratio_full_q8", "decode_ratio_full_q4", "decode_ratio_full_f16"):
        assert r[key] > 0, key
    assert r["decode_hook_ms_idle"] == 0.0
    assert r["decode_hook_ms_last"] == 0.0  # the last-token policy leaves generated tokens alone
    assert r["decode_hook_ms_full"] > 0 and r["decode_hook_ms_full_q8"] > 0 and r["decode_hook_ms_full_q4"] > 0


def test_bench_device_maps_and_gpu_layers_are_recorded(tiny_model, capsys):
    """--device-maps adds the GPU variants; on a CPU-only build the maps stay on the CPU kernels
    (host tensors), which the output says, rather than failing."""
    import json

    import llama_cpp

    args = ["bench", "--model", str(tiny_model), "--repeats", "1", "--threads", "1", "--device-maps", "-ngl", "-1"]
    assert main(args + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["pp_ratio_full_device"] > 0 and r["decode_ratio_full_q4_device"] > 0
    assert r["n_gpu_layers"] == -1 and r["gpu_offload"] == bool(llama_cpp.llama_supports_gpu_offload())
    if not r["gpu_offload"]:
        assert r["device_maps"] == "ready"  # never used: every tensor is in host memory
        assert main(args) == 0
        assert "(requested, but this llama-cpp-python has no GPU offload)" in capsys.readouterr().out


def test_run_with_gpu_flags_on_a_cpu_build(tiny_model, capsys):
    assert main(["run", "--model", str(tiny_model), "-p", "the dog", "-n", "4", "-ngl", "-1", "--device-maps"]) == 0
    captured = capsys.readouterr()
    assert "lingalign: device maps: ready" in captured.err
    assert captured.out.strip() != ""
