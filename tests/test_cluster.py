"""Sharded capture and fitting (lingalign.cluster): the one-process sharded path on the tiny
model, and Ray (when installed) inside a loopback-only network namespace the test creates."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lingalign.errors import LingalignError

HERE = Path(__file__).resolve().parent
SRC = [f"the {w} is near the river number {i}" for i, w in enumerate("cat dog sun tree house moon bird fish car boat".split() * 2)]
TGT = [s.upper() for s in SRC]


def _one_process(model: Path, method: str, shard_size: int, **options):
    """The plain one-process fit (Transform.fit on captures) of the same shards' captures.

    Capture of a shard must batch the same sentences together as the reference: llama.cpp's
    results depend on the batch (on the tiny random model, capturing 20 sentences at once or in
    shards of 6 differs by up to 2.5e-4 relative), so the reference captures the same shards."""
    from lingalign import Captures, Transform
    from lingalign.capturing import capture
    from lingalign.hook import open_model

    llm = open_model(str(model), n_ctx=1024, n_threads=1, n_threads_batch=1)
    parts = range(0, len(SRC), shard_size)
    X = [capture(llm, SRC[i : i + shard_size], layers=[1, 3], progress=False) for i in parts]
    Y = [capture(llm, TGT[i : i + shard_size], layers=[1, 3], progress=False) for i in parts]
    X = Captures(np.concatenate([c.activations for c in X]), [1, 3], X[0].model)
    Y = Captures(np.concatenate([c.activations for c in Y]), [1, 3], Y[0].model)
    return Transform.fit(X, Y, method=method, layers=[1, 3], **options)


@pytest.mark.parametrize("method,lam", [("ridge", 0.1), ("meanshift", None), ("langvec", None), ("incline", None),
                                        ("contrastive", None)])
def test_sharded_fit_equals_one_process_fit(tiny_model, method, lam):
    from lingalign.cluster import fit_sharded

    sharded, summary = fit_sharded(str(tiny_model), SRC, TGT, method=method, lam=lam, layers=[1, 3], shard_size=6,
                                   progress=False)
    assert summary["shards"] == 4 and summary["pairs"] == 20
    options = {"lam": lam, "rank": None} if method in ("ridge", "incline", "contrastive") else {}
    whole = _one_process(tiny_model, method, 6, **options)
    worst = 0.0
    for il in (1, 3):
        for a, b in zip(sharded.layers[il]._tensors.values(), whole.layers[il]._tensors.values()):
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30)))
    if method == "contrastive":  # the same captures in the same order: the same fit, bit for bit
        assert worst == 0.0
    else:  # float64 statistics vs the rows (SVD, lstsq, mean): ~1e-13 in float64, then float32 rounding
        assert worst < 1e-6, worst


def test_resume_keeps_finished_shards_and_refuses_another_model(tiny_model, other_tiny_model, tmp_path):
    from lingalign.cluster import fit_sharded

    kw = dict(method="ridge", lam=0.1, layers=[2], shard_size=7, progress=False)
    first, summary = fit_sharded(str(tiny_model), SRC, TGT, resume_dir=tmp_path, **kw)
    assert summary["shards_resumed"] == 0
    files = sorted(tmp_path.glob("shard-*.npz"))
    assert len(files) == 3
    files[-1].unlink()  # interrupted before the last shard
    again, summary = fit_sharded(str(tiny_model), SRC, TGT, resume_dir=tmp_path, **kw)
    assert summary["shards_resumed"] == 2 and again == first
    with pytest.raises(LingalignError, match="another model"):
        fit_sharded(str(other_tiny_model), SRC, TGT, resume_dir=tmp_path, **kw)
    with pytest.raises(LingalignError, match="other data"):
        fit_sharded(str(tiny_model), SRC[:-1], TGT[:-1], resume_dir=tmp_path, **kw)
    with pytest.raises(LingalignError, match="other layers"):
        fit_sharded(str(tiny_model), SRC, TGT, resume_dir=tmp_path, **{**kw, "layers": [1]})


def test_ridge_needs_lambda_and_ray_missing_says_how_to_install(tiny_model, monkeypatch):
    from lingalign.cluster import fit_sharded, import_ray

    with pytest.raises(LingalignError, match="--lambda"):
        fit_sharded(str(tiny_model), SRC, TGT, method="ridge", layers=[1], shard_size=5)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(LingalignError, match=r'pip install "lingalign\[ray\]"'):
        import_ray()


def _netns_ok() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None or shutil.which("ss") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def test_ray_in_loopback_namespace(tmp_path):
    """--ray equals the one-process sharded fit bit for bit (ridge, meanshift, contrastive); a worker
    killed mid-shard is retried with the same result; resume continues and refuses another
    model; every Ray socket listens on loopback. One Ray start, in its own network namespace."""
    if importlib.util.find_spec("ray") is None:  # not imported here: Ray runs only in the namespace
        pytest.skip('needs Ray: pip install "lingalign[ray]"')
    if not _netns_ok():
        pytest.skip("needs `unshare -n` (root) to run Ray in a loopback-only network namespace")
    # the same lingalign as this test: the interpreter's (installed, as in CI) or PYTHONPATH's
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$1" "$2"',
           sys.executable, str(HERE / "cluster_in_netns.py"), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[-1][len("RESULT "):])
    assert report["ok"], report
    assert not report["non_loopback"] and report["listening"]


def _texts(tmp_path: Path) -> tuple[str, str]:
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("\n".join(SRC[:9]) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(TGT[:9]) + "\n", encoding="utf-8")
    return str(src), str(tgt)


def test_cli_fit_resume_writes_the_same_file_twice(tiny_model, tmp_path, capsys):
    from lingalign.cli import main
    from lingalign.transform import Transform

    src, tgt = _texts(tmp_path)
    base = ["fit", "--model", str(tiny_model), "--src", src, "--tgt", tgt, "--method", "meanshift", "--layers", "1,3",
            "--threads", "1", "--shard-size", "4", "--resume", str(tmp_path / "r")]
    assert main(base + ["--out", str(tmp_path / "a.gguf")]) == 0
    assert main(base + ["--out", str(tmp_path / "b.gguf")]) == 0
    err = capsys.readouterr().err
    assert "9 pairs, 3 shards (3 resumed)" in err
    a, b = Transform.load(tmp_path / "a.gguf"), Transform.load(tmp_path / "b.gguf")
    assert a == b and a.fit_info["sharded"] == {"shards": 3, "shard_size": 4}


def test_cli_ray_without_ray_says_how_to_install(tiny_model, tmp_path, capsys, monkeypatch):
    from lingalign.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    src, tgt = _texts(tmp_path)
    rc = main(["fit", "--model", str(tiny_model), "--src", src, "--tgt", tgt, "--method", "meanshift", "--layers", "1",
               "--ray", "--out", str(tmp_path / "a.gguf")])
    assert rc != 0
    assert 'pip install "lingalign[ray]"' in capsys.readouterr().err


def test_cli_capture_in_shards_equals_capturing_the_same_shards(tiny_model, tmp_path, capsys):
    from lingalign import Captures
    from lingalign.capturing import capture
    from lingalign.cli import main
    from lingalign.hook import open_model

    src, _ = _texts(tmp_path)
    out = tmp_path / "acts.npz"
    assert main(["capture", "--model", str(tiny_model), "--text", src, "--layers", "0,2", "--pool", "last",
                 "--threads", "1", "--shard-size", "4", "--resume", str(tmp_path / "r"), "--out", str(out)]) == 0
    got = Captures.load(out)
    llm = open_model(str(tiny_model), n_ctx=1024, n_threads=1, n_threads_batch=1)
    parts = [capture(llm, SRC[i : min(i + 4, 9)], layers=[0, 2], pool="last", progress=False) for i in range(0, 9, 4)]
    assert got.pool == "last" and got.layers == (0, 2)
    assert np.array_equal(got.activations, np.concatenate([p.activations for p in parts]))
