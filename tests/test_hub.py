"""pull / push / list with the real huggingface-hub client against a loopback Hub (tests/hubserver.py).

The CLI runs in a subprocess so that HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE are read the way a
user's shell sets them (huggingface-hub reads them at import)."""

from __future__ import annotations

import dataclasses

import os
import subprocess
import sys

import pytest
from hubserver import FakeHub
from test_transform_file import _transform

import lingalign
from lingalign import Transform
from lingalign.hub import model_card, push


def _cli(args, hub, hf_home, **env_extra):
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "lingalign.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def files(tiny_model, tmp_path):
    out = {}
    for name, alpha in (("v1", 0.25), ("v2", 0.5)):
        t = dataclasses.replace(_transform(tiny_model), alpha=alpha)
        t.save(tmp_path / f"{name}.gguf")
        out[name] = (tmp_path / f"{name}.gguf").read_bytes()
    foreign = dataclasses.replace(_transform(tiny_model),
                                  model=lingalign.model.ModelFingerprint("llama", 64, 4, "0" * 64, "1" * 64, "another"))
    foreign.save(tmp_path / "foreign.gguf")
    out["foreign"] = (tmp_path / "foreign.gguf").read_bytes()
    return out


def test_pull_cache_revision_offline_and_refusals(tiny_model, files, tmp_path):
    hf_home = tmp_path / "hf"
    model = ["--model", str(tiny_model)]
    with FakeHub() as hub:
        c1 = hub.add_commit("org/swh", {"swh.gguf": files["v1"], "README.md": b"card"})
        hub.add_commit("org/swh", {"swh.gguf": files["v2"], "README.md": b"card"})

        r = _cli(["pull", "org/swh", *model], hub, hf_home)
        assert r.returncode == 0, r.stderr
        path = r.stdout.strip()
        assert path.startswith(str(hf_home)) and Transform.load(path).alpha == 0.5  # main = latest commit
        assert hub.gets == ["swh.gguf"]

        r = _cli(["pull", "org/swh", "--file", "swh.gguf", *model], hub, hf_home)
        assert r.returncode == 0 and r.stdout.strip() == path
        assert hub.gets == ["swh.gguf"]  # cache hit: no second download

        r = _cli(["pull", "org/swh", "--file", "swh.gguf", "--revision", c1, *model], hub, hf_home)
        assert r.returncode == 0, r.stderr
        assert Transform.load(r.stdout.strip()).alpha == 0.25  # pinned revision

        n_requests = len(hub.gets)
        r = _cli(["pull", "org/swh", "--file", "swh.gguf", *model], hub, hf_home, HF_HUB_OFFLINE="1")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == path and len(hub.gets) == n_requests
        r = _cli(["pull", "org/other", "--file", "x.gguf", *model], hub, hf_home, HF_HUB_OFFLINE="1")
        assert r.returncode == 1 and "cannot download" in r.stderr

        hub.add_commit("org/bad", {"t.gguf": files["v1"]})
        hub.corrupt.add(("org/bad", "t.gguf"))
        r = _cli(["pull", "org/bad", "--file", "t.gguf", *model], hub, hf_home)
        assert r.returncode == 1 and "corrupted download" in r.stderr, r.stderr

        hub.add_commit("org/foreign", {"t.gguf": files["foreign"]})
        r = _cli(["pull", "org/foreign", *model], hub, hf_home)
        assert r.returncode == 1 and "another model" in r.stderr
        r = _cli(["pull", "org/foreign", "--force", *model], hub, hf_home)
        assert r.returncode == 0 and "warning" in r.stderr

        hub.add_commit("org/two", {"a.gguf": files["v1"], "b.gguf": files["v2"]})
        r = _cli(["pull", "org/two", *model], hub, hf_home)
        assert r.returncode == 1 and "choose one with --file" in r.stderr
        r = _cli(["pull", "org/missing", "--file", "x.gguf", *model], hub, hf_home)
        assert r.returncode == 1 and "cannot download" in r.stderr

        r = _cli(["list"], hub, hf_home)
        assert r.returncode == 0
        assert "hub:org/swh@" in r.stdout and "tiny-llama-0" in r.stdout


class RecordingApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_file(self, **kw):
        self.calls.append(("upload_file", kw))
        return f"https://hub.example/{kw['repo_id']}/commit/abc"


def test_push_uploads_validated_file_and_model_card(tiny_model, tmp_path):
    t = _transform(tiny_model)
    path = tmp_path / "swh-eng.gguf"
    t.save(path)
    api = RecordingApi()
    push(path, "org/swh", private=True, api=api)
    assert api.calls[0] == ("create_repo", {"repo_id": "org/swh", "repo_type": "model", "private": True, "exist_ok": True})
    assert api.calls[1][1]["path_in_repo"] == "swh-eng.gguf"
    card = api.calls[2][1]["path_or_fileobj"].decode()
    assert api.calls[2][1]["path_in_repo"] == "README.md"
    assert "library_name: lingalign" in card and t.model.vocab_sha256 in card and "fit.pairs | 500" in card
    assert card == model_card(t, "swh-eng.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(lingalign.TransformFileError):
        push(bad, "org/swh", api=RecordingApi())  # nothing invalid is published
