"""Capture throughput: 2 Ray workers of 1 thread each vs one process with 2 threads.

Both capture the same embedded sentence pairs (swh -> eng) at the same layers, in the same
shards (so the captures are equal), and report sentences/s and tokens/s; the ratio says what
Ray's actors, transfers and shard-order reduction cost on this machine. Ray runs inside a
network namespace with only loopback up: as root the script re-runs itself under
`unshare -n` (nothing reaches another address), and checks that every listening socket there is
on loopback.

    python bench/cluster.py [--model M] [--pairs 128] [--shard-size 16] [--rounds 3] [--out bench/results/cluster.json]

The two are run alternately, --rounds times each (Ray started once), and the ratio is the median
of the rounds' ratios: this machine is shared, so a ratio of neighbours is what can be trusted.
Ray's time is given with and without starting its actors (each loads the model once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

INNER = "LINGALIGN_BENCH_IN_NETNS"


def listening() -> list[str]:
    out = subprocess.run(["ss", "-ltunH"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[4] for line in out.splitlines() if line.strip()})


def loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
    return host.startswith("127.") or host == "::1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--note", default="", help="what else the machine was doing (recorded)")
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--layers", default="-1")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cluster.json"))
    args = ap.parse_args()
    if os.environ.get(INNER) != "1":
        env = dict(os.environ, **{INNER: "1", "RAY_USAGE_STATS_ENABLED": "0"})
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv]
        return subprocess.run(cmd, env=env).returncode

    import ray

    from lingalign import _llama
    from lingalign.capturing import parse_layer_spec, tokenize_sentences
    from lingalign.cluster import run_shards
    from lingalign.data import embedded_path, read_lines
    from lingalign.hook import open_model
    from lingalign.models import resolve_model

    model = str(resolve_model(args.model))
    src = read_lines(embedded_path("swh"), limit=args.pairs)
    tgt = read_lines(embedded_path("eng"), limit=args.pairs)
    llm = open_model(model, n_ctx=1024, n_threads=2, n_threads_batch=2)
    layers = parse_layer_spec(args.layers, _llama.n_layer(llm))
    tokens = sum(len(t) for t in tokenize_sentences(llm, src + tgt))
    del llm
    common = dict(layers=layers, kind="captures", shard_size=args.shard_size, progress=False)
    one = run_shards(model, src, tgt, use_ray=False, n_threads=2, **common)  # warm: the file in the page cache
    load_before = os.getloadavg()
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    init_s = time.perf_counter() - t
    sockets = listening()
    rounds = []
    equal = True
    for _ in range(args.rounds):
        t = time.perf_counter()
        one = run_shards(model, src, tgt, use_ray=False, n_threads=2, **common)
        one_s = time.perf_counter() - t
        started: list[float] = []
        t = time.perf_counter()
        dist = run_shards(model, src, tgt, use_ray=True, workers=2, n_threads=1,
                          on_started=lambda pids: started.append(time.perf_counter()), **common)
        end = time.perf_counter()
        equal &= bool((one.X == dist.X).all() and (one.Y == dist.Y).all())
        rounds.append({"one_process_s": round(one_s, 2), "ray_s": round(end - t, 2),
                       "ray_after_actors_started_s": round(end - started[0], 2),
                       "ratio": round(one_s / (end - t), 3), "ratio_after_start": round(one_s / (end - started[0]), 3)})
        print(rounds[-1], flush=True)
    sockets += listening()
    ray.shutdown()
    bad = [a for a in sockets if not loopback(a)]
    sentences = 2 * len(src)
    one_s = statistics.median(r["one_process_s"] for r in rounds)
    ray_s = statistics.median(r["ray_s"] for r in rounds)
    record = {
        "command": "python bench/cluster.py " + " ".join(sys.argv[1:]),
        "model": os.path.basename(model),
        "pairs": len(src),
        "tokens": tokens,
        "shards": one.summary["shards"],
        "rounds": rounds,
        "one_process_2_threads": {"seconds": one_s, "tokens_per_s": round(tokens / one_s, 1),
                                  "sentences_per_s": round(sentences / one_s, 2)},
        "ray_2_workers_1_thread": {"seconds": ray_s, "tokens_per_s": round(tokens / ray_s, 1),
                                   "sentences_per_s": round(sentences / ray_s, 2),
                                   "note": "includes starting the 2 actors and loading the model in each"},
        "ray_init_seconds": round(init_s, 2),
        "ray_over_one_process_throughput": statistics.median(r["ratio"] for r in rounds),
        "ray_over_one_process_throughput_after_actor_start": statistics.median(r["ratio_after_start"] for r in rounds),
        "captures_equal": equal,
        "ray_sockets_non_loopback": bad,
        "machine": f"{os.cpu_count()} cores" + (f"; {args.note}" if args.note else ""),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(record, indent=1))
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
