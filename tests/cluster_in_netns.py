"""Ray checks run by tests/test_cluster.py (a local 2-CPU Ray, then two simulated nodes) inside a network namespace with only loopback up
(`unshare -n`, `ip link set lo up`): Ray never sees another interface. Prints one JSON line of
results; exits non-zero on failure. Usage: python cluster_in_netns.py WORKDIR [MODEL SRC TGT]: with
a real model and line files, only that model is checked (the integration test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from tinymodel import write_tiny_llama  # noqa: E402


def listening() -> list[str]:
    """Local addresses of every listening TCP/UDP socket in this namespace (only Ray's are here)."""
    out = subprocess.run(["ss", "-ltunH"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[4] for line in out.splitlines() if line.strip()})


def loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    host = host.removeprefix("::ffff:")  # IPv4-mapped IPv6: still 127.x
    return host.startswith("127.") or host == "::1"


def same_both_ways(report: dict, model: str, src: list[str], tgt: list[str], common: dict,
                   methods: tuple[tuple[str, float | None], ...]) -> bool:
    """Each method fitted with --ray (2 workers) equals the one-process sharded fit."""
    from lingalign.cluster import fit_sharded

    ok = True
    for method, lam in methods:
        local, _ = fit_sharded(model, src, tgt, method=method, lam=lam, use_ray=False, **common)
        dist, summary = fit_sharded(model, src, tgt, method=method, lam=lam, use_ray=True, workers=2, **common)
        label = method if lam is not None or method != "ridge" else "ridge-heldout"
        report[label] = {"equal": local == dist, "summary": summary}
        ok &= local == dist and summary["workers"] == 2
    return ok


def real_model(work: Path, model: str, src_file: str, tgt_file: str) -> int:
    """The integration check: the real model's transforms with --ray equal the one-process ones."""
    import ray

    from lingalign.data import read_pairs

    src, tgt = read_pairs(src_file, tgt_file, limit=24)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    report: dict = {"listening": listening()}
    common = dict(layers=[6, 12], shard_size=6, n_threads=1, progress=False)
    ok = same_both_ways(report, model, src, tgt, common, (("ridge", None), ("contrastive", None)))
    report["non_loopback"] = [a for a in report["listening"] + listening() if not loopback(a)]
    ok &= not report["non_loopback"] and bool(report["listening"])
    ray.shutdown()
    report["ok"] = bool(ok)
    print("RESULT " + json.dumps(report, default=str))
    return 0 if ok else 1


def main() -> int:
    import ray

    from lingalign.cluster import fit_sharded
    from lingalign.errors import LingalignError

    work = Path(sys.argv[1])
    if len(sys.argv) == 5:
        return real_model(work, *sys.argv[2:5])
    model = str(write_tiny_llama(work / "tiny.gguf"))
    other = str(write_tiny_llama(work / "tiny2.gguf", seed=1))
    words = "the cat dog house river tree sun moon red blue green small big old new".split()
    rng = np.random.default_rng(0)
    src = [" ".join(rng.choice(words, size=int(rng.integers(3, 8)))) for _ in range(24)]
    tgt = [s.upper() for s in src]
    layers = [1, 3]
    common = dict(layers=layers, shard_size=5, n_threads=1, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    report: dict = {"listening": listening()}
    ok = True
    ok &= same_both_ways(report, model, src, tgt, common, (("ridge", 0.1), ("meanshift", None), ("contrastive", None),
                                                           ("ridge", None), ("lda", None)))
    # the MLP site in shards (the expert neurons' captures)
    from lingalign.cluster import capture_sharded

    ffn = [capture_sharded(model, src, layers=layers, site="ffn", shard_size=5, use_ray=r, workers=2,
                           n_threads=1, progress=False)[0] for r in (False, True)]
    same_ffn = np.array_equal(ffn[0].activations, ffn[1].activations)
    report["ffn"] = {"equal": same_ffn, "width": ffn[0].width}
    ok &= same_ffn and ffn[0].site == "ffn" == ffn[1].site
    # a worker killed in the middle of a shard: its actor restarts and the shard is retried
    killed: list[int] = []

    def kill_soon(pids: list[int]) -> None:
        def kill() -> None:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        threading.Timer(1.0, kill).start()

    ref, _ = fit_sharded(model, src, tgt, method="ridge", lam=0.1, use_ray=False, **common)
    after, summary = fit_sharded(model, src, tgt, method="ridge", lam=0.1, use_ray=True, workers=2,
                                 worker_delay_s=0.7, on_started=kill_soon, **common)
    report["killed"] = {"pid": killed, "equal": after == ref, "summary": summary}
    ok &= bool(killed) and after == ref
    # resume: an interrupted run (the first shards done) continues; another model's dir is refused
    rdir = work / "resume"
    fit_sharded(model, src, tgt, method="ridge", lam=0.1, use_ray=False, resume_dir=rdir, **common)
    files = sorted(rdir.glob("shard-*.npz"))
    for f in files[2:]:
        f.unlink()
    resumed, summary = fit_sharded(model, src, tgt, method="ridge", lam=0.1, use_ray=True, workers=2,
                                   resume_dir=rdir, **common)
    report["resume"] = {"equal": resumed == ref, "summary": summary}
    ok &= resumed == ref and summary["shards_resumed"] == 2
    try:
        fit_sharded(other, src, tgt, method="ridge", lam=0.1, use_ray=True, resume_dir=rdir, **common)
        refused = ""
    except LingalignError as e:
        refused = str(e)
    report["refused"] = refused
    ok &= "another model" in refused
    # the command line: fit --ray (the Ray started above) writes the same file as the one-process shards
    from lingalign.cli import main as cli

    (work / "src.txt").write_text("\n".join(src) + "\n", encoding="utf-8")
    (work / "tgt.txt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    base = ["fit", "--model", model, "--src", str(work / "src.txt"), "--tgt", str(work / "tgt.txt"), "--method",
            "ridge", "--lambda", "0.1", "--layers", "1,3", "--threads", "1", "--shard-size", "5"]
    rc_ray = cli(base + ["--ray", "--workers", "2", "--out", str(work / "ray.gguf")])
    rc_one = cli(base + ["--resume", str(work / "cli-resume"), "--out", str(work / "one.gguf")])
    same_file = (work / "ray.gguf").read_bytes() == (work / "one.gguf").read_bytes()
    cap = ["capture", "--model", model, "--text", str(work / "src.txt"), "--layers", "0,2", "--threads", "1",
           "--shard-size", "5"]
    rc_cap_ray = cli(cap + ["--ray", "--workers", "2", "--out", str(work / "ray.npz")])
    rc_cap_one = cli(cap + ["--resume", str(work / "cap-resume"), "--out", str(work / "one.npz")])
    with np.load(work / "ray.npz") as a, np.load(work / "one.npz") as b:
        same_capture = all(np.array_equal(a[k], b[k]) for k in a.files) and sorted(a.files) == sorted(b.files)
    experts = ["fit", "--model", model, "--src", str(work / "src.txt"), "--tgt", str(work / "tgt.txt"), "--method",
               "experts", "--k", "20", "--layers", "1,3", "--threads", "1", "--shard-size", "40"]
    rc_ex_ray = cli(experts + ["--ray", "--workers", "2", "--out", str(work / "ex-ray.gguf")])
    rc_ex_one = cli(experts + ["--resume", str(work / "ex-resume"), "--out", str(work / "ex-one.gguf")])
    same_experts = (work / "ex-ray.gguf").read_bytes() == (work / "ex-one.gguf").read_bytes()
    report["cli"] = {"rc": [rc_ray, rc_one, rc_cap_ray, rc_cap_one, rc_ex_ray, rc_ex_one], "same_file": same_file,
                     "same_capture": same_capture, "same_experts": same_experts}
    ok &= rc_ray == 0 and rc_one == 0 and same_file and rc_cap_ray == 0 and rc_cap_one == 0 and same_capture
    ok &= rc_ex_ray == 0 and rc_ex_one == 0 and same_experts
    report["listening_end"] = listening()
    bad = [a for a in report["listening"] + report["listening_end"] if not loopback(a)]
    report["non_loopback"] = bad
    ok &= not bad and bool(report["listening"])
    ray.shutdown()
    # two simulated nodes of one CPU each (ray.cluster_utils.Cluster): the two 1-CPU actors must
    # land on different nodes, and the transform is the same
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address)
    report["listening_two_nodes"] = listening()
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    two, summary = fit_sharded(model, src, tgt, method="ridge", lam=0.1, use_ray=True, workers=2, **common)
    report["two_nodes"] = {"nodes": nodes, "equal": two == ref, "summary": summary}
    ok &= nodes == 2 and two == ref and summary["workers"] == 2
    bad2 = [a for a in report["listening_two_nodes"] if not loopback(a)]
    report["non_loopback"] += bad2
    ok &= not bad2
    ray.shutdown()
    cluster.shutdown()
    report["ok"] = bool(ok)
    print("RESULT " + json.dumps(report, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
