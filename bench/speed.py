"""Hook cost vs plain llama.cpp, side by side in one process; writes bench/results/speed.json.

    python bench/speed.py [--repeats 5] [--threads 2] [--model GGUF]

Prints the ratios (1.00 = no cost) and records them with a description of the machine, so a
number quoted in docs/speed.md can be traced to the run that measured it. Times on shared machines
drift; only the ratios, measured interleaved in the same run, are comparable.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import llama_cpp

import lingalign
from lingalign.bench import format_bench, run_bench


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "lingalign": lingalign.__version__,
    }


def write_record(path: str, record: dict) -> None:
    """Write a benchmark's record as JSON (the results files under bench/results) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed.json"))
    args = ap.parse_args()
    result = run_bench(args.model, repeats=args.repeats, threads=args.threads)
    print(format_bench(result))
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python bench/speed.py --repeats {args.repeats} --threads {args.threads}",
        "machine": machine(),
        "result": result,
    }
    write_record(args.out, record)


if __name__ == "__main__":
    main()
