"""llama.cpp control vectors: lingalign's writer and reader, and the same effect as llama.cpp's own."""

from __future__ import annotations

import dataclasses

import ctypes

import gguf
import numpy as np
import pytest
from conftest import tiny_llm
from test_hook import _logits, _transform

import lingalign
from lingalign import ModelMismatchError, Transform, TransformFileError
from lingalign.cli import main


def _vectors(model_path, layers=(1, 2, 3)):
    return _transform(model_path, list(layers), kind="additive", scale=0.5)


def test_export_has_the_keys_llama_cpp_reads_and_round_trips(tiny_model, tmp_path, capsys):
    t = _vectors(tiny_model)
    src = tmp_path / "t.gguf"
    t.save(src)
    out = tmp_path / "cvec.gguf"
    assert main(["export", "--format", "controlvector", str(src), str(out), "--alpha", "0.5"]) == 0
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 3
    assert sorted(x.name for x in reader.tensors) == ["direction.1", "direction.2", "direction.3"]
    assert all(x.tensor_type == gguf.GGMLQuantizationType.F32 and list(x.shape) == [64] for x in reader.tensors)
    back = Transform.load(out)
    assert back.method == "controlvector" and back.alpha == 1.0 and sorted(back.layers) == [1, 2, 3]
    for il in (1, 2, 3):
        assert np.array_equal(back.layers[il].vector, (0.5 * t.layers[il].vector.astype(np.float64)).astype(np.float32))
    assert "--control-vector" in capsys.readouterr().out


def test_same_effect_as_llama_cpp_native_control_vector(tiny_model, tmp_path):
    t = _vectors(tiny_model)
    path = tmp_path / "cvec.gguf"
    t.save_controlvector(path, alpha=1.0)
    cvec = Transform.load(path)

    native = tiny_llm(tiny_model, logits_all=True, n_batch=8, n_ubatch=4)
    n_embd, n_layer = 64, 4
    data = np.zeros((n_layer - 1) * n_embd, np.float32)  # starts at layer 1
    for il, lm in cvec.layers.items():
        data[(il - 1) * n_embd : il * n_embd] = lm.vector
    buf = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    import llama_cpp

    assert llama_cpp.llama_set_adapter_cvec(native.ctx, buf, data.size, n_embd, 1, n_layer - 1) == 0
    expected = _logits(native)

    hooked = tiny_llm(tiny_model, logits_all=True, n_batch=8, n_ubatch=4)
    warnings = lingalign.attach(hooked).set(cvec)
    assert warnings and "no model fingerprint" in warnings[0]
    np.testing.assert_allclose(_logits(hooked), expected, rtol=1e-5, atol=1e-5)


def test_control_vector_refusals(tiny_model, tmp_path):
    with pytest.raises(TransformFileError, match="only additive"):
        _transform(tiny_model, [1]).save_controlvector(tmp_path / "x.gguf")
    with pytest.raises(TransformFileError, match="layer 0"):
        _vectors(tiny_model, (0, 1)).save_controlvector(tmp_path / "x.gguf")
    t = dataclasses.replace(_vectors(tiny_model), model=lingalign.model.ModelFingerprint("qwen2", 64, 4, "v" * 64, "w" * 64))
    t.save_controlvector(tmp_path / "qwen.gguf")
    steering = lingalign.attach(tiny_llm(tiny_model))
    with pytest.raises(ModelMismatchError, match="qwen2"):
        steering.set(Transform.load(tmp_path / "qwen.gguf"))
    assert steering.set(Transform.load(tmp_path / "qwen.gguf"), force=True)
    bad = gguf.GGUFWriter(str(tmp_path / "zero.gguf"), "controlvector")
    bad.add_tensor("direction.0", np.zeros(64, np.float32))
    bad.write_header_to_file()
    bad.write_kv_data_to_file()
    bad.write_tensors_to_file()
    bad.close()
    with pytest.raises(TransformFileError, match="start at layer 1"):
        Transform.load(tmp_path / "zero.gguf")
