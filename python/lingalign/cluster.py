"""Capture in shards, on Ray actors or in this process, reduced in shard order.

The sentence pairs are cut into shards of `shard_size` pairs, in order. A `ShardWorker` opens
the model once and turns a shard into either the sufficient statistics of the fitted layers
(`stats`, float64; for ridge, incline, meanshift, langvec) or the pooled captures of those
layers (float32; for contrastive and the others). The driver keeps each shard's result under its
index and reduces them in shard order once all are in, so the result does not depend on which
worker finished first; with `ray=None` the same workers run one after another in this process,
which is the one-process reference the Ray path equals bit for bit.

Ray is optional (`pip install "lingalign[ray]"`). Actors restart (max_restarts) and their
tasks are retried (max_task_retries) when a worker process dies, so a shard killed midway is
recomputed by the restarted actor, with the same result (capture is deterministic).

`resume_dir` keeps one .npz per finished shard and a manifest (model fingerprint, layers,
what a shard returns, every shard's content hash); a run pointed at it skips the shards already
there, and a directory made for another model, other layers or other data is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LingalignError
from .stats import Stats, merge, needs_moments, shard_stats, stats_from_arrays, stats_to_arrays

RAY_MISSING = 'Ray is not installed: pip install "lingalign[ray]"'
MANIFEST = "manifest.json"
MAX_RESTARTS = 3  # a worker process that dies is started again this often
MAX_TASK_RETRIES = 3  # and the shard it was doing is retried


@dataclass(frozen=True)
class Shard:
    index: int
    src: list[str]
    tgt: list[str] | None  # None: one text captured (lingalign capture), not pairs

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for k, s in enumerate(self.src):
            t = "" if self.tgt is None else self.tgt[k]
            h.update(s.encode("utf-8") + b"\0" + t.encode("utf-8") + b"\n")
        return h.hexdigest()


def make_shards(src: Sequence[str], tgt: Sequence[str] | None, shard_size: int) -> list[Shard]:
    """Consecutive shards of `shard_size` pairs (the last may be shorter), in order; tgt None
    for one text."""
    if tgt is not None and len(src) != len(tgt):
        raise LingalignError(f"{len(src)} source but {len(tgt)} target sentences: they must be paired")
    if shard_size < 1:
        raise LingalignError(f"--shard-size must be at least 1, not {shard_size}")
    return [Shard(k, list(src[i : i + shard_size]), None if tgt is None else list(tgt[i : i + shard_size]))
            for k, i in enumerate(range(0, len(src), shard_size))]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LingalignError(RAY_MISSING) from None
    return ray


class ShardWorker:
    """Opens the model once; `run` turns one shard into statistics or captures (npz-ready arrays)."""

    def __init__(self, model_path: str, layers: Sequence[int], *, n_threads: int | None = 1,
                 n_gpu_layers: int = 0, n_ctx: int = 1024, delay_s: float = 0.0) -> None:
        from .hook import open_model

        self.layers = [int(il) for il in layers]
        self.llm = open_model(model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                              n_gpu_layers=n_gpu_layers)
        self.delay_s = delay_s  # tests: time to kill the worker in the middle of a shard

    def pid(self) -> int:
        return os.getpid()

    def run(self, src: list[str], tgt: list[str] | None, kind: str, pool: str = "mean") -> dict[str, np.ndarray]:
        from .capturing import capture

        X = capture(self.llm, src, layers=self.layers, pool=pool, progress=False).activations
        if tgt is None:
            return {"X": X}
        Y = capture(self.llm, tgt, layers=self.layers, pool=pool, progress=False).activations
        if self.delay_s:
            time.sleep(self.delay_s)
        if kind == "captures":
            return {"X": X, "Y": Y}
        return stats_to_arrays(shard_stats(X, Y, self.layers, moments=kind == "stats"))


@dataclass
class ShardRun:
    """What `run_shards` returns: the reduction and a summary."""

    kind: str
    layers: list[int]
    stats: Stats | None = None
    X: np.ndarray | None = None  # captures: [N, len(layers), d] in pair order
    Y: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def result_kind(method: str) -> str:
    """What a shard returns for a method: stats (with X^T X), sums (means only), captures."""
    from .stats import STATS_METHODS

    if method not in STATS_METHODS:
        return "captures"
    return "stats" if needs_moments(method) else "sums"


class _Resume:
    def __init__(self, directory: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / MANIFEST
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            for key, what in (("model", "another model"), ("layers", "other layers"), ("kind", "another kind of result"),
                              ("shards", "other data or another shard size")):
                if old.get(key) != manifest[key]:
                    raise LingalignError(f"{directory} holds shards of {what}; use another --resume directory")
        else:
            path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")

    def path(self, shard: Shard) -> Path:
        return self.dir / f"shard-{shard.index:06d}-{shard.sha256[:16]}.npz"

    def load(self, shard: Shard) -> dict[str, np.ndarray] | None:
        p = self.path(shard)
        if not p.exists():
            return None
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    def save(self, shard: Shard, arrays: dict[str, np.ndarray]) -> None:
        p = self.path(shard)
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, p)  # a shard file is whole or absent


def _progress(done: int, total: int, start: float, enabled: bool) -> None:
    if enabled:
        end = "\n" if done == total else ""
        print(f"\rshards {done}/{total} ({time.time() - start:.1f} s)", end=end, file=sys.stderr, flush=True)


def run_shards(
    model_path: str,
    src: Sequence[str],
    tgt: Sequence[str] | None,
    *,
    layers: Sequence[int],
    kind: str,
    pool: str = "mean",
    shard_size: int,
    ray_address: str | None = None,
    use_ray: bool = False,
    workers: int | None = None,
    n_threads: int | None = 1,
    n_gpu_layers: int = 0,
    resume_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    worker_delay_s: float = 0.0,
    on_started: Callable[[list[int]], None] | None = None,
) -> ShardRun:
    """Capture the pairs shard by shard and reduce in shard order.

    use_ray=False runs one ShardWorker here; use_ray=True starts `workers` Ray actors (default:
    the cluster's CPUs / n_threads) on the Ray at `ray_address` (None starts a local one, "auto"
    joins a running cluster; an already initialized Ray is used as it is). `on_started` receives
    the workers' process ids (tests)."""
    from .model import fingerprint

    if kind not in ("stats", "sums", "captures"):
        raise LingalignError(f"unknown shard result {kind!r}")
    if tgt is None and kind != "captures":
        raise LingalignError("statistics need sentence pairs")
    layers = sorted({int(il) for il in layers})
    shards = make_shards(src, tgt, shard_size)
    if not shards:
        raise LingalignError("no sentence pairs")
    start = time.time()
    resume = None
    if resume_dir is not None:
        model = fingerprint(model_path).to_dict()
        manifest = {"model": model, "layers": layers, "kind": kind if pool == "mean" else f"{kind}, pool {pool}",
                    "shard_size": shard_size,
                    "shards": [s.sha256 for s in shards]}
        resume = _Resume(resume_dir, manifest)
    results: dict[int, dict[str, np.ndarray]] = {}
    if resume is not None:
        for s in shards:
            got = resume.load(s)
            if got is not None:
                results[s.index] = got
    reused = len(results)
    pending = [s for s in shards if s.index not in results]
    _progress(len(results), len(shards), start, progress)
    # statistics are folded in as soon as the shards before them are in (in shard order), so
    # the driver holds only the running sum and the shards that finished early
    total: list[Stats] = []
    folded = [0]
    done = [len(results)]

    def fold() -> None:
        while kind != "captures" and folded[0] < len(shards) and folded[0] in results:
            part = stats_from_arrays(results.pop(folded[0]), layers)
            total[:] = [merge([total[0], part]) if total else part]
            folded[0] += 1

    def finished(s: Shard, arrays: dict[str, np.ndarray]) -> None:
        results[s.index] = arrays
        if resume is not None:
            resume.save(s, arrays)
        done[0] += 1
        fold()
        _progress(done[0], len(shards), start, progress)

    fold()

    n_workers = 1
    if pending and not use_ray:
        worker = ShardWorker(model_path, layers, n_threads=n_threads, n_gpu_layers=n_gpu_layers)
        if on_started is not None:
            on_started([worker.pid()])
        for s in pending:
            finished(s, worker.run(s.src, s.tgt, kind, pool))
    elif pending:
        ray = import_ray()
        if not ray.is_initialized():
            if ray_address:
                ray.init(address=ray_address)
            else:
                ray.init(num_cpus=None if workers is None else workers * (n_threads or 1), include_dashboard=False)
        if workers is None:
            workers = int(ray.cluster_resources().get("CPU", 1)) // (n_threads or 1)
        n_workers = max(1, min(workers, len(pending)))
        Actor = ray.remote(num_cpus=n_threads or 1, max_restarts=MAX_RESTARTS,
                           max_task_retries=MAX_TASK_RETRIES)(ShardWorker)
        actors = [Actor.remote(str(model_path), layers, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                               delay_s=worker_delay_s) for _ in range(n_workers)]
        if on_started is not None:
            on_started(ray.get([a.pid.remote() for a in actors]))
        # round robin: every actor gets its share up front; a restarted actor retries its own
        refs = {actors[k % n_workers].run.remote(s.src, s.tgt, kind, pool): s for k, s in enumerate(pending)}
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                finished(refs[ref], ray.get(ref))
        for a in actors:
            ray.kill(a)
    elif progress:
        print("every shard was already done", file=sys.stderr)
    out = ShardRun(kind=kind, layers=layers)
    if kind == "captures":  # the reduction is in shard order, always
        ordered = [results[s.index] for s in shards]
        out.X = np.concatenate([r["X"] for r in ordered])
        out.Y = None if tgt is None else np.concatenate([r["Y"] for r in ordered])
    else:
        assert folded[0] == len(shards) and total
        out.stats = total[0]
    out.summary = {"pairs": len(src), "shards": len(shards), "shards_resumed": reused,
                   "workers": n_workers if pending else 0, "seconds": round(time.time() - start, 2)}
    return out


def fit_sharded(
    model_path: str,
    src: Sequence[str],
    tgt: Sequence[str],
    *,
    method: str,
    layers: Sequence[int],
    lam: float | None = None,
    bias: bool | None = None,
    rank: int | None = None,
    source_lang: str = "",
    target_lang: str = "eng",
    alpha: float = 1.0,
    positions: str = "all",
    fit_info: dict[str, Any] | None = None,
    **run_options: Any,
) -> tuple[Any, dict[str, Any]]:
    """A Transform fitted from sharded capture (see `run_shards` for the options): statistics
    methods from the shard-order sum of the shards' statistics, the others from the captures
    concatenated in shard order. Returns (transform, summary)."""
    from .captures import Captures
    from .model import fingerprint
    from .stats import fit_from_stats
    from .transform import Transform

    if method == "ridge" and lam is None:  # checked before the slow capture
        raise LingalignError("ridge fitted from shard statistics needs --lambda (no held-out rows are kept)")
    if rank == "auto":
        raise LingalignError("--rank auto needs held-out rows; give --rank full or a number with sharded fitting")
    kind = result_kind(method)
    run = run_shards(model_path, src, tgt, layers=layers, kind=kind, **run_options)
    model = fingerprint(model_path)
    record = dict(fit_info or {})
    # what the transform depends on (not the workers, the resumed shards or the time)
    record["sharded"] = {"shards": run.summary["shards"], "shard_size": run_options.get("shard_size")}
    if run.stats is not None:
        maps, info = fit_from_stats(run.stats, method=method, lam=lam, bias=bias, rank=rank)
        for key, value in info.items():
            record.setdefault(key, value)
        transform = Transform(layers=maps, model=model, method=method, source_lang=source_lang,
                              target_lang=target_lang, alpha=alpha, positions=positions, fit_info=record)
    else:
        assert run.X is not None and run.Y is not None
        X = Captures(run.X, run.layers, model)
        Y = Captures(run.Y, run.layers, model)
        options: dict[str, Any] = {"lam": lam, "bias": bias, "rank": rank}
        transform = Transform.fit(X, Y, method=method, layers=run.layers, source_lang=source_lang,
                                  target_lang=target_lang, alpha=alpha, positions=positions, fit_info=record,
                                  **options)
    return transform, run.summary
