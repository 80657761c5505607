"""lingalign serve against llama-cpp-python's own server, side by side in one run; writes
bench/results/serve.json.

    python bench/serve.py [--requests 12] [--rounds 5] [--max-tokens 16] [--threads 1] [--model NAME|GGUF]

The same completion requests (sentences of the embedded corpus, the language changing on every
request), from one client, one at a time, each configuration on a server of its own:
  plain      `python -m llama_cpp.server`, the same model and settings
  none       `lingalign serve --shipped`, requests without a lingalign field (no transform)
  fixed      every request naming one transform (spa-eng): applying, never switching
  transform  each request naming the shipped transform of its sentence's language, so the
             transform changes on every request
  auto       each request asking for "auto" (language detection, then routing)
All servers run at once and take turns request by request (the order rotating), so drift on a
shared machine hits every configuration alike; each throughput ratio is the median over rounds
of plain's time over the configuration's (1.00 = as fast as plain). The switch cost is measured
twice: Steering.use between prepared transforms in this process (the switch itself), and per
request in the servers, (transform - fixed) / requests, which also holds the prompt prefix (the
BOS token) llama-cpp-python no longer reuses after a switch; (fixed - none) / requests is what
applying a transform costs. The none texts must equal plain's.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from speed import machine, write_record  # bench/ is on sys.path when this script runs

import lingalign
from lingalign.data import embedded_path, read_lines, shipped_dir
from lingalign.hook import attach, open_model
from lingalign.models import resolve_model

# the embedded languages with a shipped transform (jpn is shipped but has no embedded sentences)
LANGS = ("spa", "deu", "cmn", "ind", "tur", "swh")
HOST = "127.0.0.1"


class Server:
    """A server process on 127.0.0.1, its output in a temporary folder."""

    def __init__(self, cmd: list[str], port: int | None, log_dir: Path, name: str) -> None:
        self.err = log_dir / f"{name}.err"
        with open(log_dir / f"{name}.out", "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while True:
            if port is None:
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/v1", self.err.read_text())
                port = int(m.group(1)) if m else None
            if port is not None and self._answers(port):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{name} did not start:\n{self.err.read_text()[-2000:]}")
            time.sleep(0.2)
        self.port = port

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/v1/models")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One completion on a connection of its own (about 0.1 ms on loopback, the same for every
        server; a kept-alive one would be closed by uvicorn while the other servers take turns)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=600)
        try:
            conn.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
            r = conn.getresponse()
            data = json.loads(r.read())
        finally:
            conn.close()
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}: {data}")
        return data

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _field(f: dict[str, Any] | None) -> dict[str, Any]:
    return {"lingalign": f} if f else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def switch_costs(model: str | None, threads: int) -> dict[str, Any]:
    """In this process: packing each shipped transform, making a variant (another alpha), and
    Steering.use between prepared transforms, as the server does per request."""
    llm = open_model(model, n_ctx=256, n_threads=threads, n_threads_batch=threads)
    steering = attach(llm)
    pack_ms, prepared = {}, []
    for lang in LANGS:
        t = lingalign.Transform.load(shipped_dir() / f"{lang}-eng.gguf")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            p = steering.prepare(t)
            times.append(time.perf_counter() - start)
        pack_ms[f"{lang}-eng"] = round(statistics.median(times) * 1e3, 3)
        prepared.append(p)
    n = 2000
    start = time.perf_counter()
    for k in range(n):
        prepared[0].with_settings(alpha=0.5 + k * 1e-6)
    variant_us = (time.perf_counter() - start) / n * 1e6
    switches = []
    for k in range(20000):
        start = time.perf_counter()
        steering.use(prepared[k % len(prepared)])
        switches.append(time.perf_counter() - start)
    steering.detach()
    llm.close()
    return {"pack_ms": pack_ms, "variant_us": round(variant_us, 2),
            "use_us_median": round(statistics.median(switches) * 1e6, 2),
            "use_us_p99": round(sorted(switches)[int(len(switches) * 0.99)] * 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=12, help="requests per configuration per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--model", default=None, help="a known model's name or a GGUF (default: gemma3-270m)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = ap.parse_args()

    switch = switch_costs(args.model, args.threads)
    print(f"in process: Steering.use {switch['use_us_median']} us (median), variant {switch['variant_us']} us, "
          f"packing {switch['pack_ms']} ms")

    sentences = {lang: read_lines(embedded_path(lang)) for lang in LANGS}
    requests = []  # (language, prompt): languages in turn, a new sentence each time
    for i in range(args.requests):
        lang = LANGS[i % len(LANGS)]
        requests.append((lang, sentences[lang][i // len(LANGS)]))
    base = {"max_tokens": args.max_tokens, "temperature": 0}
    fields = {"plain": lambda lang: None, "none": lambda lang: None, "fixed": lambda lang: {"transform": "spa-eng"},
              "transform": lambda lang: {"transform": f"{lang}-eng"}, "auto": lambda lang: {"transform": "auto"}}

    model_path = str(resolve_model(args.model))
    t = str(args.threads)
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in fields:
                if name == "plain":
                    port = free_port()
                    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", HOST, "--port",
                           str(port), "--n_ctx", str(args.ctx), "--n_threads", t, "--n_threads_batch", t,
                           "--verbose", "False", "--interrupt_requests", "False"]
                    servers[name] = Server(cmd, port, Path(tmp), name)
                else:
                    cmd = [sys.executable, "-m", "lingalign.cli", "serve", "--shipped", "--host", HOST, "--port", "0",
                           "--ctx", str(args.ctx), "--threads", t, *(["--model", args.model] if args.model else [])]
                    servers[name] = Server(cmd, None, Path(tmp), name)
            seconds: dict[str, list[float]] = {name: [0.0] * args.rounds for name in fields}
            texts: dict[str, list[str]] = {name: [] for name in fields}
            reports: dict[str, list[Any]] = {name: [] for name in fields}
            tokens = dict.fromkeys(fields, 0)
            names = list(fields)
            for name in names:  # warm-up, untimed: first-touch costs are not per-request costs
                for lang, prompt in requests[:2]:
                    servers[name].complete({"prompt": prompt, **base, **_field(fields[name](lang))})
            for r in range(args.rounds):
                for i, (lang, prompt) in enumerate(requests):
                    k = (i + r) % len(names)
                    for name in names[k:] + names[:k]:
                        body = {"prompt": prompt, **base, **_field(fields[name](lang))}
                        start_t = time.perf_counter()
                        out = servers[name].complete(body)
                        seconds[name][r] += time.perf_counter() - start_t
                        if r == 0:
                            texts[name].append(out["choices"][0]["text"])
                            reports[name].append((out.get("lingalign") or {}).get("transform"))
                            tokens[name] += out["usage"]["completion_tokens"]
                print(f"round {r + 1}: " + ", ".join(f"{n} {seconds[n][r]:.2f} s" for n in names))
            rss = {name: round(server.rss_mib(), 1) for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()

    ratios = {name: round(statistics.median(p / s for p, s in zip(seconds["plain"], seconds[name])), 3)
              for name in fields if name != "plain"}
    n = args.requests
    ms_per_request = {name: round(statistics.median(seconds[name]) / n * 1e3, 2) for name in fields}

    def per_request_ms(a: str, b: str) -> float:
        return round(statistics.median(x - y for x, y in zip(seconds[a], seconds[b])) / n * 1e3, 2)

    server_switch_ms, apply_ms = per_request_ms("transform", "fixed"), per_request_ms("fixed", "none")
    checks = {
        "none_texts_equal_plain": texts["none"] == texts["plain"],
        "transform_reports": reports["transform"] == [f"{lang}-eng" for lang, _ in requests],
        "auto_routed": sum(rep == f"{lang}-eng" for rep, (lang, _) in zip(reports["auto"], requests)),
        "transform_texts_differ_from_plain": sum(a != b for a, b in zip(texts["transform"], texts["plain"])),
    }
    print("throughput vs plain llama-cpp-python server: " + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()))
    print(f"per request: {ms_per_request} ms; in the server, switching {server_switch_ms} ms per request "
          f"(transform - fixed), applying {apply_ms} ms (fixed - none); checks: {checks}")
    write_record(args.out, {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/serve.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "settings": {"model": args.model or "gemma3-270m", "requests": n, "rounds": args.rounds,
                     "max_tokens": args.max_tokens, "threads": args.threads, "ctx": args.ctx,
                     "languages": list(LANGS), "client": "one, sequential, a connection per request; servers take turns request by request"},
        "result": {"throughput_ratio_vs_plain": ratios, "seconds_per_round": seconds,
                   "ms_per_request_median": ms_per_request, "completion_tokens": tokens,
                   "switch": {**switch, "server_ms_per_request": server_switch_ms},
                   "apply_ms_per_request": apply_ms, "rss_mib_at_end": rss,
                   "checks": checks},
    })
    if not checks["none_texts_equal_plain"]:
        raise SystemExit("lingalign serve without a transform did not answer as llama-cpp-python's server did")


if __name__ == "__main__":
    main()
