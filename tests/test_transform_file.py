"""Transform files round-trip bit-exactly and every kind of bad file is refused by name."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import lingalign
from lingalign import LayerMap, Transform, TransformFileError


def _transform(model_path) -> Transform:
    fp = lingalign.model.fingerprint(model_path)
    rng = np.random.default_rng(3)
    d = fp.n_embd
    return Transform(
        layers={
            0: LayerMap(matrix=rng.standard_normal((d, d)).astype(np.float32), bias=rng.standard_normal(d).astype(np.float32)),
            2: LayerMap(vector=rng.standard_normal(d).astype(np.float32)),
            3: LayerMap(matrix=rng.standard_normal((d, d)).astype(np.float32)),
            1: LayerMap(lowrank_u=rng.standard_normal((d, 5)).astype(np.float32), lowrank_vt=rng.standard_normal((5, d)).astype(np.float32), bias=rng.standard_normal(d).astype(np.float32)),
        },
        model=fp,
        method="ridge",
        source_lang="swh",
        target_lang="eng",
        alpha=0.3,
        positions="last",
        fit_info={"pairs": 500, "src_sha256": "ab" * 32},
    )


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    t = _transform(tiny_model)
    path = tmp_path / "t.gguf"
    t.save(path)
    back = Transform.load(path)
    assert back.summary() == t.summary()
    assert back.alpha == 0.3  # float64 metadata, no float32 rounding
    for il, lm in t.layers.items():
        for part in ("matrix", "bias", "vector", "lowrank_u", "lowrank_vt"):
            a, b = getattr(lm, part), getattr(back.layers[il], part)
            assert (a is None) == (b is None)
            if a is not None:
                assert a.tobytes() == b.tobytes()


def test_generated_only_layers_round_trip_in_a_version_2_file(tiny_model, tmp_path):
    """A transform with generated-only layers is written as format 2 (a lingalign that does not
    know them refuses the file instead of moving the prompt with them); one without stays 1."""
    import dataclasses

    t = _transform(tiny_model)
    plain, staged = tmp_path / "plain.gguf", tmp_path / "staged.gguf"
    t.save(plain)
    dataclasses.replace(t, generated_layers=(3, 2)).save(staged)
    version = lambda path: int(gguf.GGUFReader(str(path)).fields["lingalign.format_version"].contents())  # noqa: E731
    assert (version(plain), version(staged)) == (1, 2)
    assert Transform.load(plain).generated_layers == ()
    back = Transform.load(staged)
    assert back.generated_layers == (2, 3) and back.summary()["generated_layers"] == [2, 3]
    assert back.with_layers([0, 3]).generated_layers == (3,)
    with pytest.raises(TransformFileError, match=r"generated-only layer\(s\) \[7\] have no transform"):
        dataclasses.replace(t, generated_layers=(7,))
    bad = tmp_path / "bad_generated.gguf"
    kv = _valid_kv(lingalign.model.fingerprint(tiny_model), [1])
    kv["lingalign.format_version"], kv["lingalign.generated_layers"] = 2, [2]
    _write_raw(bad, kv=kv, tensors={"blk.1.vector": np.zeros(t.model.n_embd, np.float32)})
    with pytest.raises(TransformFileError, match=r"bad_generated.gguf: generated-only layer\(s\) \[2\]"):
        Transform.load(bad)


def _write_raw(path, arch="lingalign", kv=None, tensors=None):
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in (kv or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, list):
            w.add_array(k, v)
        elif isinstance(v, float):
            w.add_float64(k, v)
        else:
            w.add_uint32(k, v)
    for name, arr in (tensors or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _assert_refused(tmp_path, fp, cases: dict, layers=(1,)) -> None:
    """Each case's tensors, written with valid metadata for `layers`, are refused by
    Transform.load with a TransformFileError matching the case's message."""
    for message, tensors in cases.items():
        path = tmp_path / "bad.gguf"
        _write_raw(path, kv=_valid_kv(fp, list(layers)), tensors=tensors)
        with pytest.raises(TransformFileError, match=message):
            Transform.load(path)


def _valid_kv(fp, layers):
    return {
        "lingalign.format_version": 1,
        "lingalign.method": "ridge",
        "lingalign.source_lang": "spa",
        "lingalign.target_lang": "eng",
        "lingalign.alpha": 1.0,
        "lingalign.positions": "all",
        "lingalign.layers": layers,
        "lingalign.model.architecture": fp.architecture,
        "lingalign.model.n_embd": fp.n_embd,
        "lingalign.model.n_layer": fp.n_layer,
        "lingalign.model.vocab_sha256": fp.vocab_sha256,
        "lingalign.model.weights_sha256": fp.weights_sha256,
        "lingalign.model.name": fp.name,
        "lingalign.fit_info": "{}",
    }


def test_bad_files_are_refused(tiny_model, tmp_path):
    fp = lingalign.model.fingerprint(tiny_model)
    good = tmp_path / "good.gguf"
    _transform(tiny_model).save(good)
    data = good.read_bytes()

    cases = {}
    (tmp_path / "missing.gguf").unlink(missing_ok=True)
    cases["not found"] = tmp_path / "missing.gguf"
    text = tmp_path / "text.gguf"
    text.write_text("hello, not a transform")
    cases["not a GGUF file"] = text
    cases["not a lingalign transform"] = tiny_model  # a model, not a transform
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    cases["truncated"] = truncated
    header_cut = tmp_path / "header_cut.gguf"
    header_cut.write_bytes(data[:200])
    cases["truncated or corrupt"] = header_cut

    d = fp.n_embd
    wrong_shape = tmp_path / "shape.gguf"
    _write_raw(wrong_shape, kv=_valid_kv(fp, [1]), tensors={"blk.1.map": np.zeros((d, d + 1), np.float32)})
    cases["shape"] = wrong_shape
    nan = tmp_path / "nan.gguf"
    arr = np.eye(d, dtype=np.float32)
    arr[3, 4] = np.nan
    _write_raw(nan, kv=_valid_kv(fp, [1]), tensors={"blk.1.map": arr})
    cases["NaN or Inf"] = nan
    layer = tmp_path / "layer.gguf"
    _write_raw(layer, kv=_valid_kv(fp, [9]), tensors={"blk.9.vector": np.zeros(d, np.float32)})
    cases["unknown layer 9"] = layer
    undeclared = tmp_path / "undeclared.gguf"
    _write_raw(undeclared, kv=_valid_kv(fp, [1, 2]), tensors={"blk.1.vector": np.zeros(d, np.float32)})
    cases["declares"] = undeclared
    missing_key = tmp_path / "missing_key.gguf"
    kv = _valid_kv(fp, [1])
    del kv["lingalign.model.vocab_sha256"]
    _write_raw(missing_key, kv=kv, tensors={"blk.1.vector": np.zeros(d, np.float32)})
    cases["missing metadata lingalign.model.vocab_sha256"] = missing_key
    future = tmp_path / "future.gguf"
    kv = _valid_kv(fp, [1])
    kv["lingalign.format_version"] = 99
    _write_raw(future, kv=kv, tensors={"blk.1.vector": np.zeros(d, np.float32)})
    cases["format version 99"] = future
    stray = tmp_path / "stray.gguf"
    _write_raw(stray, kv=_valid_kv(fp, [1]), tensors={"blk.1.vector": np.zeros(d, np.float32), "evil": np.zeros(2, np.float32)})
    cases["unexpected tensor"] = stray
    half = tmp_path / "half_lowrank.gguf"
    _write_raw(half, kv=_valid_kv(fp, [1]), tensors={"blk.1.lr_u": np.zeros((d, 3), np.float32)})
    cases["both factors"] = half
    mismatched = tmp_path / "mismatched_lowrank.gguf"
    _write_raw(mismatched, kv=_valid_kv(fp, [1]), tensors={"blk.1.lr_u": np.zeros((d, 3), np.float32), "blk.1.lr_vt": np.zeros((4, d), np.float32)})
    cases["lr_vt has shape"] = mismatched
    f16 = tmp_path / "f16.gguf"
    _write_raw(f16, kv=_valid_kv(fp, [1]), tensors={"blk.1.vector": np.zeros(d, np.float16)})
    cases["expected F32"] = f16

    for message, path in cases.items():
        with pytest.raises(TransformFileError, match=message):
            Transform.load(path)


def test_truncation_anywhere_is_refused_not_crashing(tiny_model, tmp_path):
    good = tmp_path / "good.gguf"
    _transform(tiny_model).save(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.gguf"
    for n in list(range(0, 400, 7)) + list(range(400, len(data), max(1, len(data) // 50))):
        cut.write_bytes(data[:n])
        with pytest.raises(TransformFileError):
            Transform.load(cut)
