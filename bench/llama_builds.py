"""Plain llama.cpp speed of two llama-cpp-python builds, side by side; writes bench/results/llama_builds.json.

    python bench/llama_builds.py --build avx2=SITE_A --build avx512=SITE_B [--rounds 6] [--threads 2]

SITE is a directory holding a `llama_cpp` package (for example one made with
`pip install --no-deps --target SITE llama-cpp-python==0.3.36` under other CMAKE_ARGS), or "" for
the one this Python imports by default. Two builds cannot share a process (both libraries would
load as the same ggml), so each round runs every build in a subprocess of its own, in alternating
order, and each ratio is taken within a round (these machines are shared and drift): prompt
processing of a 256-token prompt (median of 5 evaluations) and decode (median time per token
over 64 tokens), on the default model, no lingalign hook. The ratios are to the first build.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from speed import write_record  # bench/ is on sys.path when this script runs

# Run in each subprocess: prints {"pp": tokens/s, "decode": tokens/s, "system_info": ...}.
CHILD = r"""
import json, statistics, sys, time
import llama_cpp
from lingalign.data import embedded_path, read_lines
from lingalign._llama import quiet_llama_log
from lingalign.hook import open_model

threads = int(sys.argv[1])
with quiet_llama_log(False):
    llm = open_model(None, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads)
text = " ".join(read_lines(embedded_path("eng")))
prompt = llm.tokenize(text.encode())[:256]
decode = llm.tokenize(text.encode(), add_bos=False)[256:320]
llm.eval(prompt)  # warm-up: page in the weights
pp = []
for _ in range(5):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp.append(len(prompt) / (time.perf_counter() - t0))
seconds = []
for tok in decode:
    t0 = time.perf_counter()
    llm.eval([tok])
    seconds.append(time.perf_counter() - t0)
print(json.dumps({"pp": statistics.median(pp), "decode": 1.0 / statistics.median(seconds),
                  "system_info": llama_cpp.llama_print_system_info().decode().strip()}))
"""


def run_build(site: str, threads: int) -> dict:
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"build at {site or '(default)'} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="append", required=True, help="NAME=SITE (two or more)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "llama_builds.json"))
    args = ap.parse_args()
    builds = [tuple(b.split("=", 1)) for b in args.build]
    if len(builds) < 2 or any(len(b) != 2 for b in builds):
        raise SystemExit("give at least two --build NAME=SITE")
    names = [name for name, _ in builds]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = builds if r % 2 == 0 else builds[::-1]
        for name, site in order:
            runs[name].append(run_build(site, args.threads))
        print(f"round {r + 1}: " + ", ".join(f"{n} {runs[n][-1]['pp']:.0f}/{runs[n][-1]['decode']:.1f}" for n in names))
    base = names[0]
    result = {"builds": {}, "ratios_to": base}
    for name, site in builds:
        pp_ratio = statistics.median(a["pp"] / b["pp"] for a, b in zip(runs[name], runs[base]))
        dec_ratio = statistics.median(a["decode"] / b["decode"] for a, b in zip(runs[name], runs[base]))
        result["builds"][name] = {
            "site": site,
            "system_info": runs[name][0]["system_info"],
            "pp_tps": statistics.median(x["pp"] for x in runs[name]),
            "decode_tps": statistics.median(x["decode"] for x in runs[name]),
            "pp_ratio": pp_ratio,
            "decode_ratio": dec_ratio,
            "rounds": runs[name],
        }
        print(f"{name:<10} prompt {pp_ratio:.3f}x  decode {dec_ratio:.3f}x  ({runs[name][0]['system_info']})")
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/llama_builds.py " + " ".join(f"--build {n}=..." for n in names)
        + f" --rounds {args.rounds} --threads {args.threads}",
        "cpu_count": os.cpu_count(),
        "result": result,
    }
    write_record(args.out, record)


if __name__ == "__main__":
    main()
