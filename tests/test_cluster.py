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

from conftest import SHARED_DATA
from lingalign.errors import LingalignError

HERE = Path(__file__).resolve().parent
SRC = [f"the {w} is near the river number {i}" for i, w in enumerate("cat dog sun tree house moon bird fish car boat".split() * 2)]
TGT = [s.upper() for s in SRC]


def _shard_captures(model: Path, shard_size: int, layers: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """X, Y [N, len(layers), d]: the same shards captured one after another in this process.

    Capture of a shard must batch the same sentences together as the reference: llama.cpp's
    results depend on the batch (on the tiny random model, capturing 20 sentences at once or in
    shards of 6 differs by up to 2.5e-4 relative), so the reference captures the same shards."""
    from lingalign.capturing import capture
    from lingalign.hook import open_model

    llm = open_model(str(model), n_ctx=1024, n_threads=1, n_threads_batch=1)
    parts = range(0, len(SRC), shard_size)
    X = [capture(llm, SRC[i : i + shard_size], layers=layers, progress=False).activations for i in parts]
    Y = [capture(llm, TGT[i : i + shard_size], layers=layers, progress=False).activations for i in parts]
    return np.concatenate(X), np.concatenate(Y)


def _one_process(model: Path, method: str, shard_size: int, **options):
    """The plain one-process fit (Transform.fit on captures) of the same shards' captures."""
    from lingalign import Captures, Transform
    from lingalign.model import fingerprint

    X, Y = _shard_captures(model, shard_size, [1, 3])
    fp = fingerprint(model)
    return Transform.fit(Captures(X, [1, 3], fp), Captures(Y, [1, 3], fp), method=method, layers=[1, 3], **options)


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


@pytest.mark.parametrize("method", ["ridge", "lda"])
def test_lambda_and_shrinkage_are_chosen_on_heldout_shards(tiny_model, method):
    """Without --lambda, ridge (and LDA, always) chooses on the held-out shards (the last of 4
    here) against the statistics of the others, then fits on every shard; the result equals that
    computation done by hand on the same shards' captures, and the chosen ridge map lowers the
    held-out error it minimizes."""
    from lingalign.cluster import fit_sharded
    from lingalign.stats import LayerStats, choose_lambda, choose_shrinkage, lda_from_stats, ridge_from_stats

    got, summary = fit_sharded(str(tiny_model), SRC, TGT, method=method, layers=[1, 3], shard_size=6, progress=False)
    assert summary["heldout_shards"] == [3] and got.fit_info["sharded"]["heldout_shards"] == [3]
    X, Y = _shard_captures(tiny_model, 6, [1, 3])
    moments = ("xx", "xy") if method == "ridge" else ("xx", "yy")
    for k, il in enumerate((1, 3)):
        train = LayerStats.of(X[:18, k], Y[:18, k], moments=moments)
        every = LayerStats.of(X[:, k], Y[:, k], moments=moments)
        if method == "ridge":
            lam, report = choose_lambda(train, X[18:, k], Y[18:, k])
            assert got.fit_info["ridge_lambda"][str(il)] == lam
            assert report["heldout_mse_fitted"] < report["heldout_mse_identity"]
            W, b = ridge_from_stats(every, lam)
            want = {"matrix": W, "bias": b}
        else:
            g = choose_shrinkage(train, X[18:, k], Y[18:, k])
            assert got.fit_info["lda_shrinkage"][str(il)] == g
            want = {"vector": lda_from_stats(every, g)}
        for name, ref in want.items():
            a = getattr(got.layers[il], name).astype(np.float64)
            assert np.abs(a - ref).max() <= 1e-5 * np.abs(ref).max(), (name, il)


def test_heldout_needs_two_shards_and_ray_missing_says_how_to_install(tiny_model, monkeypatch):
    from lingalign.cluster import fit_sharded, import_ray

    with pytest.raises(LingalignError, match="at least 2 shards.*--lambda"):
        fit_sharded(str(tiny_model), SRC, TGT, method="ridge", layers=[1], shard_size=100)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(LingalignError, match=r'pip install "lingalign\[ray\]"'):
        import_ray()


def test_workers_reserve_gpus_when_layers_are_offloaded():
    """-ngl with --ray asks Ray for a GPU per actor, so actors are placed by GPUs; a cluster
    without enough GPUs is refused with a message rather than left waiting."""
    import argparse

    from lingalign.cluster import actor_options, default_workers
    from lingalign.commands.options import shard_run_options

    assert "num_gpus" not in actor_options(2)
    assert actor_options(2, 1.0)["num_gpus"] == 1.0 and actor_options(2, 1.0)["num_cpus"] == 2
    assert default_workers({"CPU": 16.0}, 2) == 8
    assert default_workers({"CPU": 16.0, "GPU": 2.0}, 2, 1.0) == 2
    assert default_workers({"CPU": 16.0, "GPU": 2.0}, 2, 0.5) == 4
    with pytest.raises(LingalignError, match="0 GPUs.*--gpus-per-worker 0"):
        default_workers({"CPU": 16.0}, 1, 1.0)
    with pytest.raises(LingalignError, match="--gpus-per-worker"):
        actor_options(1, -1.0)
    args = argparse.Namespace(gpus_per_worker=None, n_gpu_layers=-1, ray="local", shard_size=10, workers=None,
                              threads=None, resume=None)
    assert shard_run_options(args)["gpus_per_worker"] == 1.0
    assert shard_run_options(argparse.Namespace(**{**vars(args), "n_gpu_layers": 0}))["gpus_per_worker"] == 0.0
    assert shard_run_options(argparse.Namespace(**{**vars(args), "ray": None}))["gpus_per_worker"] == 0.0


def _netns_ok() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None or shutil.which("ss") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def test_ray_in_loopback_namespace(tmp_path):
    """--ray equals the one-process sharded fit bit for bit (ridge, meanshift, contrastive); a worker
    killed mid-shard is retried with the same result; resume continues and refuses another
    model; every Ray socket listens on loopback. One Ray start, in its own network namespace."""
    report = _in_loopback_namespace(tmp_path)
    assert report["ok"], report
    assert not report["non_loopback"] and report["listening"]


def _in_loopback_namespace(*args: object) -> dict:
    """tests/cluster_in_netns.py ARGS run in a new network namespace with only loopback up."""
    if importlib.util.find_spec("ray") is None:  # not imported here: Ray runs only in the namespace
        pytest.skip('needs Ray: pip install "lingalign[ray]"')
    if not _netns_ok():
        pytest.skip("needs `unshare -n` (root) to run Ray in a loopback-only network namespace")
    # the same lingalign as this test: the interpreter's (installed, as in CI) or PYTHONPATH's
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
           sys.executable, str(HERE / "cluster_in_netns.py"), *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.integration
def test_ray_on_the_default_model_equals_one_process(tmp_path):
    """Gemma 3 270M, 24 Tatoeba pairs in 4 shards: ridge (lambda chosen on the held-out shard) and
    contrastive fitted with --ray equal the one-process sharded fits, bit for bit."""
    from lingalign.models import resolve_model

    src = SHARED_DATA / "tatoeba" / "tatoeba.spa-eng.spa"
    if not src.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing in CI: {src}")
        pytest.skip(f"shared data not found at {src}")
    report = _in_loopback_namespace(tmp_path, resolve_model(None), src, src.with_suffix(".eng"))
    assert report["ok"], report
    assert report["ridge-heldout"]["summary"]["heldout_shards"] == [3]


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
