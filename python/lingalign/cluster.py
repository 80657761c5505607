"""Capture in shards, on Ray actors or in this process, reduced in shard order.

The sentence pairs are cut into shards of `shard_size` pairs, in order. A `ShardWorker` opens
the model once and turns a shard into either the sufficient statistics of the fitted layers
(float64; for ridge, incline, lda, meanshift, langvec) or the pooled captures of those layers
(float32; for contrastive, and at the MLP site for the expert neurons). The driver reduces the
shards' results in shard order, so the result does not depend on which worker finished first;
with `use_ray=False` the same worker runs the shards one after another in this process, which is
the one-process reference the Ray path equals bit for bit.

What a one-process fit chooses on a held-out fifth of the rows (ridge's lambda, LDA's
shrinkage) needs rows that statistics do not keep: with `heldout=True` every fifth shard (the
last one when there are fewer than five; at most HELDOUT_MAX_PAIRS pairs) returns its captures,
the choice is made on them against the other shards' statistics, and the final fit uses all.

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
from .stats import MOMENTS, Stats, merge, shard_stats, stats_from_arrays, stats_to_arrays

RAY_MISSING = 'Ray is not installed: pip install "lingalign[ray]"'
MANIFEST = "manifest.json"
MAX_RESTARTS = 3  # a worker process that dies is started again this often
MAX_TASK_RETRIES = 3  # and the shard it was doing is retried
# what a shard returns: captures, or statistics with these second moments
KIND_MOMENTS: dict[str, tuple[str, ...]] = {"sums": (), "stats": ("xx", "xy"), "scatter": ("xx", "yy")}
KINDS = ("captures", *KIND_MOMENTS)
HELDOUT_EVERY = 5  # every fifth shard is held out to choose lambda or shrinkage, as fit holds out a fifth
HELDOUT_MAX_PAIRS = 10_000  # enough to choose among 8 lambdas; bounds the driver's memory


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

    def run(self, src: list[str], tgt: list[str] | None, kind: str, pool: str = "mean",
            site: str = "residual") -> dict[str, np.ndarray]:
        from .capturing import capture

        X = capture(self.llm, src, layers=self.layers, pool=pool, progress=False, site=site).activations
        if tgt is None:
            return {"X": X}
        Y = capture(self.llm, tgt, layers=self.layers, pool=pool, progress=False, site=site).activations
        if self.delay_s:
            time.sleep(self.delay_s)
        if kind == "captures":
            return {"X": X, "Y": Y}
        return stats_to_arrays(shard_stats(X, Y, self.layers, moments=KIND_MOMENTS[kind]))


@dataclass
class ShardRun:
    """What `run_shards` returns: the reduction and a summary."""

    kind: str
    layers: list[int]
    stats: Stats | None = None  # every shard's statistics (held-out shards' added last)
    train_stats: Stats | None = None  # without the held-out shards (heldout=True)
    X: np.ndarray | None = None  # captures: [N, len(layers), d] in pair order
    Y: np.ndarray | None = None
    heldout_X: np.ndarray | None = None  # the held-out shards' captures (heldout=True)
    heldout_Y: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def result_kind(method: str) -> str:
    """What a shard returns for a method: statistics (stats: X^T X, X^T Y; scatter: X^T X,
    Y^T Y; sums: means only) or captures."""
    moments = MOMENTS.get(method)
    if moments is None:
        return "captures"
    return next(kind for kind, m in KIND_MOMENTS.items() if m == moments)


def heldout_shards(shards: Sequence[Shard]) -> list[int]:
    """The shards kept as rows to choose on: every HELDOUT_EVERY-th (the last one when there are
    fewer), up to HELDOUT_MAX_PAIRS pairs."""
    if len(shards) < 2:
        raise LingalignError("choosing on held-out shards needs at least 2 shards: a smaller --shard-size, "
                             "or give the value (--lambda)")
    picked = [s for s in shards if s.index % HELDOUT_EVERY == HELDOUT_EVERY - 1] or [shards[-1]]
    out, pairs = [], 0
    for s in picked:
        if out and pairs + len(s.src) > HELDOUT_MAX_PAIRS:
            break
        out.append(s.index)
        pairs += len(s.src)
    return out


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
    site: str = "residual",
    heldout: bool = False,
    shard_size: int,
    ray_address: str | None = None,
    use_ray: bool = False,
    workers: int | None = None,
    n_threads: int | None = 1,
    n_gpu_layers: int = 0,
    gpus_per_worker: float = 0.0,
    resume_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    worker_delay_s: float = 0.0,
    on_started: Callable[[list[int]], None] | None = None,
) -> ShardRun:
    """Capture the pairs shard by shard and reduce in shard order.

    use_ray=False runs one ShardWorker here; use_ray=True starts `workers` Ray actors (default:
    the cluster's CPUs / n_threads, or its GPUs / gpus_per_worker) on the Ray at `ray_address`
    (None starts a local one, "auto" joins a running cluster; an already initialized Ray is used
    as it is), each reserving n_threads CPUs and gpus_per_worker GPUs. `heldout` keeps the
    captures of the held-out shards (`heldout_shards`) besides the statistics. `on_started`
    receives the workers' process ids (tests)."""
    from .model import fingerprint

    if kind not in KINDS:
        raise LingalignError(f"unknown shard result {kind!r} (one of {', '.join(KINDS)})")
    if tgt is None and kind != "captures":
        raise LingalignError("statistics need sentence pairs")
    if heldout and kind == "captures":
        raise LingalignError("held-out shards are for statistics; captures keep every row already")
    layers = sorted({int(il) for il in layers})
    shards = make_shards(src, tgt, shard_size)
    if not shards:
        raise LingalignError("no sentence pairs")
    held = set(heldout_shards(shards)) if heldout else set()
    kind_of = {s.index: "captures" if s.index in held else kind for s in shards}
    start = time.time()
    resume = None
    if resume_dir is not None:
        model = fingerprint(model_path).to_dict()
        what = kind if pool == "mean" else f"{kind}, pool {pool}"
        what += "" if site == "residual" else f", site {site}"
        what += f", held out {sorted(held)}" if held else ""
        manifest = {"model": model, "layers": layers, "kind": what, "shard_size": shard_size,
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
    # the driver holds only the running sum, the held-out captures and the shards that finished early
    total: list[Stats] = []
    kept: dict[int, dict[str, np.ndarray]] = {}  # held-out shards' captures
    folded = [0]
    done = [len(results)]

    def fold() -> None:
        while kind != "captures" and folded[0] < len(shards) and folded[0] in results:
            k = folded[0]
            if k in held:
                kept[k] = results.pop(k)
            else:
                part = stats_from_arrays(results.pop(k), layers)
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
            finished(s, worker.run(s.src, s.tgt, kind_of[s.index], pool, site))
    elif pending:
        ray = import_ray()
        if not ray.is_initialized():
            if ray_address:
                ray.init(address=ray_address)
            else:
                ray.init(num_cpus=None if workers is None else workers * (n_threads or 1), include_dashboard=False)
        capacity = default_workers(ray.cluster_resources(), n_threads or 1, gpus_per_worker)  # refuses too few GPUs
        workers = capacity if workers is None else workers
        n_workers = max(1, min(workers, len(pending)))
        Actor = ray.remote(**actor_options(n_threads or 1, gpus_per_worker))(ShardWorker)
        actors = [Actor.remote(str(model_path), layers, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                               delay_s=worker_delay_s) for _ in range(n_workers)]
        if on_started is not None:
            on_started(ray.get([a.pid.remote() for a in actors]))
        # round robin: every actor gets its share up front; a restarted actor retries its own
        refs = {actors[k % n_workers].run.remote(s.src, s.tgt, kind_of[s.index], pool, site): s
                for k, s in enumerate(pending)}
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
        assert folded[0] == len(shards) and (total or kept)
        if not held:
            out.stats = total[0]
        else:
            out.train_stats = total[0] if total else None
            out.heldout_X = np.concatenate([kept[k]["X"] for k in sorted(kept)])
            out.heldout_Y = np.concatenate([kept[k]["Y"] for k in sorted(kept)])
            rows = shard_stats(out.heldout_X, out.heldout_Y, layers, moments=KIND_MOMENTS[kind])
            out.stats = merge([total[0], rows]) if total else rows
    out.summary = {"pairs": len(src), "shards": len(shards), "shards_resumed": reused,
                   "workers": n_workers if pending else 0, "seconds": round(time.time() - start, 2)}
    if held:
        out.summary["heldout_shards"] = sorted(held)
    return out


def actor_options(n_threads: int, gpus_per_worker: float = 0.0) -> dict[str, Any]:
    """Ray resources of one ShardWorker: its llama.cpp threads as CPUs, and GPUs when its layers
    are offloaded (-ngl), so that Ray places one worker per GPU instead of by CPUs alone."""
    if gpus_per_worker < 0:
        raise LingalignError(f"--gpus-per-worker must be >= 0, not {gpus_per_worker}")
    options: dict[str, Any] = {"num_cpus": n_threads, "max_restarts": MAX_RESTARTS,
                               "max_task_retries": MAX_TASK_RETRIES}
    if gpus_per_worker:
        options["num_gpus"] = gpus_per_worker
    return options


def default_workers(resources: dict[str, float], n_threads: int, gpus_per_worker: float = 0.0) -> int:
    """How many workers a cluster holds: by its CPUs, and by its GPUs when workers need them."""
    by_cpu = int(resources.get("CPU", 1)) // n_threads
    if not gpus_per_worker:
        return max(1, by_cpu)
    gpus = float(resources.get("GPU", 0))
    if gpus < gpus_per_worker:
        raise LingalignError(f"the Ray cluster has {gpus:g} GPUs; a worker asks for {gpus_per_worker:g} "
                             "(--gpus-per-worker 0 to run on CPUs)")
    return max(1, min(by_cpu, int(gpus // gpus_per_worker)))


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
    concatenated in shard order. Ridge without `lam` and LDA choose their lambda / shrinkage on
    held-out shards. Returns (transform, summary)."""
    from .captures import Captures
    from .model import fingerprint
    from .stats import choose_lambda, choose_shrinkage, fit_from_stats
    from .transform import Transform

    if rank == "auto":
        raise LingalignError("--rank auto needs held-out rows; give --rank full or a number with sharded fitting")
    kind = result_kind(method)
    choose = (method == "ridge" and lam is None) or method == "lda"  # on held-out shards (run_shards refuses too few first)
    run = run_shards(model_path, src, tgt, layers=layers, kind=kind, heldout=choose, **run_options)
    model = fingerprint(model_path)
    record = dict(fit_info or {})
    # what the transform depends on (not the workers, the resumed shards or the time)
    record["sharded"] = {"shards": run.summary["shards"], "shard_size": run_options.get("shard_size")}
    if run.stats is not None:
        chosen: dict[str, Any] = {}
        measured: dict[str, str] = {}
        if choose:
            assert run.train_stats is not None and run.heldout_X is not None and run.heldout_Y is not None
            record["sharded"]["heldout_shards"] = run.summary["heldout_shards"]
            use_bias = True if bias is None else bool(bias)
            for k, il in enumerate(run.layers):
                Xh, Yh = run.heldout_X[:, k], run.heldout_Y[:, k]
                if method == "ridge":
                    chosen[il], report = choose_lambda(run.train_stats[il], Xh, Yh, bias=use_bias)
                    measured[f"layer {il} held-out MSE (no transform -> map)"] = (
                        f"{report['heldout_mse_identity']:.4g} -> {report['heldout_mse_fitted']:.4g}")
                else:
                    chosen[il] = choose_shrinkage(run.train_stats[il], Xh, Yh)
        maps, info = fit_from_stats(run.stats, method=method, lam=chosen if method == "ridge" and choose else lam,
                                    bias=bias, rank=rank, shrinkage=chosen if method == "lda" else None)
        if measured:
            info["measured"] = measured
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


def capture_sharded(model_path: str, texts: Sequence[str], *, layers: Sequence[int], site: str = "residual",
                    pool: str = "mean", **run_options: Any) -> tuple[Any, dict[str, Any]]:
    """Captures of `texts` (at `site`: residual or ffn), captured in shards and concatenated in
    shard order: what `capture()` returns, for `lingalign capture --ray` and the expert neurons."""
    from .captures import Captures
    from .model import fingerprint

    run = run_shards(model_path, texts, None, layers=layers, kind="captures", pool=pool, site=site, **run_options)
    assert run.X is not None
    return Captures(run.X, run.layers, fingerprint(model_path), pool=pool, site=site), run.summary
