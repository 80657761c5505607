"""Models by name: assembled once from their packages and checked by size and sha256; a missing
package gets the install hint, a corrupted file is caught by its hash."""

from __future__ import annotations

import hashlib

import pytest

import lingalign.models as models
from lingalign.cli import main
from lingalign.errors import ModelFileError


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A known model made of two chunk packages on sys.path, and the cache in tmp_path."""
    data = [b"GGUF" + bytes(range(200)) * 3, bytes(reversed(range(256))) * 2]
    for n, blob in enumerate(data, 1):
        pkg = tmp_path / "site" / f"fakechunk_part{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    whole = b"".join(data)
    model = models.KnownModel(
        name="fake-1b", file="fake.gguf", description="a fake", architecture="llama", n_layer=2, n_embd=8,
        packages=("fakechunk_part1", "fakechunk_part2"), install='pip install "lingalign[fake]"', chat=False,
        size=len(whole), sha256=hashlib.sha256(whole).hexdigest(),
        chunks=("fakechunk_part1/data/part01.bin", "fakechunk_part2/data/part02.bin"),
    )
    monkeypatch.setitem(models.KNOWN_MODELS, "fake-1b", model)
    return model, whole


def test_a_known_model_is_assembled_once_and_checked(fake_model):
    model, whole = fake_model
    path = models.resolve_model("fake-1b")
    assert path == model.path and path.read_bytes() == whole
    stamp = path.with_name(path.name + ".sha256.json").read_text()
    assert models.resolve_model("fake-1b") == path and path.with_name(path.name + ".sha256.json").read_text() == stamp
    # a file changed after its check is hashed again, and refused
    path.write_bytes(whole[:10] + bytes([whole[10] ^ 1]) + whole[11:])  # one bit, same size
    with pytest.raises(ModelFileError, match="corrupted .*delete it"):
        models.resolve_model("fake-1b")
    path.unlink()
    assert models.resolve_model("fake-1b").read_bytes() == whole  # assembled again


def test_missing_packages_and_bad_chunks_give_the_fix(fake_model, monkeypatch, capsys):
    model, _ = fake_model
    monkeypatch.setitem(models.KNOWN_MODELS, "fake-1b",
                        models.KnownModel(**{**model.__dict__, "packages": ("no_such_chunk_package",)}))
    assert main(["run", "--model", "fake-1b", "-p", "hi"]) == 1
    err = capsys.readouterr().err
    assert 'model fake-1b is not installed: pip install "lingalign[fake]"' in err and "Traceback" not in err
    monkeypatch.setitem(models.KNOWN_MODELS, "fake-1b", models.KnownModel(**{**model.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ModelFileError, match="reinstall them"):
        models.resolve_model("fake-1b")
    assert not model.path.exists()  # nothing half-made is left


def test_models_command_lists_known_models(capsys):
    assert main(["models", "--json"]) == 0
    import json

    table = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert table["gemma3-270m"]["default"] and table["gemma3-270m"]["architecture"] == "gemma3"
    assert table["qwen2.5-coder-1.5b"]["layers"] == 28 and table["qwen2.5-coder-1.5b"]["install"].endswith('[qwen]"')
    assert main(["run", "--model", "no-such-model", "-p", "hi"]) == 1
    assert "known models: gemma3-270m, qwen2.5-coder-1.5b" in capsys.readouterr().err


def test_each_known_model_has_its_own_shipped_set():
    from lingalign.data import shipped_dir, shipped_model_name, shipped_transform_path
    from lingalign.errors import LingalignError

    root = shipped_dir()
    assert shipped_dir("gemma3-270m") == root and shipped_dir("/some/other.gguf") == root
    assert shipped_dir("qwen2.5-coder-1.5b") == root / "qwen2.5-coder-1.5b"
    assert shipped_model_name(models.KNOWN_MODELS["qwen2.5-coder-1.5b"].path) == "qwen2.5-coder-1.5b"
    assert shipped_transform_path("sw").parent == root  # the default model's set
    with pytest.raises(LingalignError, match="no shipped transform for 'xx' on qwen2.5-coder-1.5b"):
        shipped_transform_path("xx", "qwen2.5-coder-1.5b")


def test_the_qwen_set_is_shipped_with_its_manifest():
    """`run --model qwen2.5-coder-1.5b --lang sw` finds a transform made for that model, with the
    numbers it was measured at (bench/methods.py --ship)."""
    import json

    from lingalign import Transform
    from lingalign.data import shipped_dir, shipped_transform_path
    from lingalign.fit import DEFAULT_ALPHA, DEFAULT_METHOD

    manifest = json.loads((shipped_dir("qwen2.5-coder-1.5b") / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model"]["architecture"] == "qwen2"
    for lang in ("sw", "id"):
        t = Transform.load(shipped_transform_path(lang, "qwen2.5-coder-1.5b"))
        entry = manifest["transforms"][t.source_lang]
        assert t.model.n_embd == 1536 and t.method == DEFAULT_METHOD and t.alpha == DEFAULT_ALPHA
        assert entry["measured"] and all("accuracy_without" in m for m in entry["measured"].values())
