"""The `lingalign` command: capture, fit, run, info, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LingalignError
from .experts import DEFAULT_K
from .fit import DEFAULT_METHOD, METHODS
from .transform import POSITIONS, PRECISIONS


_GGML_LOG_ERROR, _GGML_LOG_CONT = 4, 5  # ggml.h enum ggml_log_level
_log_state = {"last": 0}
_log_callback: Any = None


def _install_error_only_log() -> None:
    """Let llama.cpp print only its errors in the CLI process.

    llama-cpp-python 0.3.36 maps ggml's log levels from an older enum: it prints llama.cpp's
    warnings and info lines and hides its errors. The CLI owns its process, so it replaces that
    callback; the library leaves the host application's logging alone.
    """
    global _log_callback
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != _GGML_LOG_CONT:
            _log_state["last"] = level
        if _log_state["last"] == _GGML_LOG_ERROR:
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _log_callback = callback  # must stay referenced while llama.cpp may call it
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def _load_llm(args: argparse.Namespace, *, n_ctx: int = 1024) -> Any:
    from .hook import open_model

    # --threads sets both: llama-cpp-python would otherwise run prompts on every core.
    return open_model(args.model, n_ctx=n_ctx, n_threads=args.threads, n_threads_batch=args.threads,
                      n_gpu_layers=args.n_gpu_layers)


def _cmd_capture(args: argparse.Namespace) -> int:
    import numpy as np

    from .capture import capture, parse_layer_spec
    from .data import lines_sha256, read_lines
    from .model import fingerprint

    import llama_cpp

    lines = read_lines(args.text, skip=args.skip, limit=args.limit)
    llm = _load_llm(args)
    n_layer = int(llama_cpp.llama_model_n_layer(llm.model))
    layers = parse_layer_spec(args.layers, n_layer) or list(range(n_layer))
    acts = capture(llm, lines, layers=layers, pool=args.pool, progress=None)
    fp = fingerprint(llm.model_path)
    np.savez(
        args.out,
        activations=acts,
        layers=np.array(layers, dtype=np.int32),
        pool=args.pool,
        model=json.dumps(fp.to_dict()),
        text_sha256=lines_sha256(lines),
    )
    print(f"captured {acts.shape[0]} sentences x {acts.shape[1]} layers x {acts.shape[2]} -> {args.out}")
    return 0


def _resolve_fit_files(args: argparse.Namespace) -> tuple[str, str]:
    from .data import embedded_path

    if args.src and args.tgt:
        return args.src, args.tgt
    if args.src or args.tgt:
        raise LingalignError("give both --src and --tgt, or neither (then --src-lang picks the embedded corpus)")
    if not args.src_lang:
        raise LingalignError("give --src and --tgt files, or --src-lang to fit on the embedded corpus")
    return str(embedded_path(args.src_lang)), str(embedded_path(args.tgt_lang))


def _cmd_fit(args: argparse.Namespace) -> int:
    import llama_cpp

    from .capture import capture, parse_layer_spec
    from .data import lines_sha256, read_pairs
    from .fit import fit_transform
    from .model import fingerprint

    src_file, tgt_file = _resolve_fit_files(args)
    src, tgt = read_pairs(src_file, tgt_file, skip=args.skip, limit=args.limit)
    llm = _load_llm(args)
    n_layer = int(llama_cpp.llama_model_n_layer(llm.model))
    neurons = args.method in NEURON_METHODS
    layer_spec = args.layers if args.layers is not None else ("all" if neurons else DEFAULT_MAP_LAYERS)
    auto = layer_spec == "auto"
    if auto and not neurons and args.layers is None and len(src) < MIN_PAIRS_AUTO:
        print(f"only {len(src)} pairs: too few to choose a layer, fitting the last one", file=sys.stderr)
        auto, layer_spec = False, "-1"
    if auto and neurons:
        raise LingalignError("--layers auto chooses one layer for a map; neuron methods take a layer list or all")
    fit_layers = (None if auto else parse_layer_spec(layer_spec, n_layer)) or list(range(n_layer))
    fp = fingerprint(llm.model_path)
    info = {
        "pairs": len(src),
        "skip": args.skip,
        "limit": args.limit,
        "src_file": os.path.basename(src_file),
        "tgt_file": os.path.basename(tgt_file),
        "src_sha256": lines_sha256(src),
        "tgt_sha256": lines_sha256(tgt),
        "pool": "mean",
    }
    if neurons:
        transform = _fit_neurons(args, llm, src, tgt, fit_layers, fp, info)
        transform.save(args.out)
        n_neurons = sum(lm.clamp_index.size for lm in transform.layers.values())
        print(f"wrote {args.out}: {args.method}, {n_neurons} neurons clamped over {len(transform.layers)} layers")
        return 0
    print(f"capturing {len(src)} sentence pairs at layers {_span(fit_layers)} ...", file=sys.stderr)
    X = capture(llm, src, layers=fit_layers)
    Y = capture(llm, tgt, layers=fit_layers)
    alpha = args.alpha
    captured = fit_layers
    if auto:
        from .fit import choose_layer

        layer, chosen_alpha, record = choose_layer(X, Y, model=fp, layers=captured, method=args.method, lam=args.lam,
                                                   bias=args.bias)
        alpha = chosen_alpha if args.alpha is None else args.alpha
        info["layer_choice"] = record
        fit_layers = [layer]
        print(f"layer {layer} (alpha {chosen_alpha:g}) helps held-out retrieval most", file=sys.stderr)
    transform = fit_transform(
        X,
        Y,
        model=fp,
        layers=captured,
        fit_layers=fit_layers,
        method=args.method,
        lam=args.lam,
        bias=args.bias,
        rank=_parse_rank(args.rank),
        source_lang=args.src_lang or "",
        target_lang=args.tgt_lang,
        alpha=1.0 if alpha is None else alpha,
        positions=args.positions,
        fit_info=info,
    )
    transform = transform.to_precision(args.precision)
    transform.save(args.out)
    print(f"wrote {args.out}: {args.method} at layers {_span(sorted(transform.layers))}, {len(src)} pairs")
    return 0


NEURON_METHODS = ("experts", "random-neurons")
# Measured by bench/quality.py: one ridge map at the layer chosen on held-out pairs beats one at
# the last layer at the best and at the last layer alike (docs/results.md).
DEFAULT_MAP_LAYERS = "auto"
MIN_PAIRS_AUTO = 10
NEGATIVES_PER_LANGUAGE = 100  # embedded sentences of each other language added to the negatives


def _fit_neurons(
    args: argparse.Namespace, llm: Any, src: list[str], tgt: list[str], layers: list[int], fp: Any, info: dict[str, Any]
) -> Any:
    """Experts of the target language: its sentences are the positives; the source sentences and
    the embedded corpus of every other language are the negatives."""
    from .capture import capture
    from .data import EMBEDDED_LANGUAGES, embedded_path, normalize_lang, read_lines
    from .experts import fit_experts

    from .hook import ffn_activation

    ffn = ffn_activation(llm)
    if ffn is None:
        raise LingalignError(f"lingalign does not know the MLP neurons of {llm.metadata.get('general.architecture')} models")
    if not 1 <= args.k <= len(layers) * ffn[1]:  # checked before the slow capture
        raise LingalignError(f"--k must be in 1..{len(layers) * ffn[1]} (the neurons of the chosen layers), not {args.k}")
    tgt_lang = normalize_lang(args.tgt_lang)
    skip_langs = {tgt_lang, normalize_lang(args.src_lang) if args.src_lang else ""}
    others: list[str] = []
    used: list[str] = []
    for lang in EMBEDDED_LANGUAGES:
        if lang not in skip_langs:
            others += read_lines(embedded_path(lang), limit=NEGATIVES_PER_LANGUAGE)
            used.append(lang)
    print(
        f"capturing MLP activations: {len(tgt)} positives, {len(src)} + {len(others)} negatives "
        f"({', '.join(used)}) at layers {_span(layers)} ...",
        file=sys.stderr,
    )
    pos = capture(llm, tgt, layers=layers, site="ffn")
    neg = np.concatenate([capture(llm, src, layers=layers, site="ffn"), capture(llm, others, layers=layers, site="ffn")])
    info["negative_languages"] = used
    return fit_experts(
        pos,
        neg,
        model=fp,
        layers=layers,
        k=args.k,
        random_control=args.method == "random-neurons",
        seed=args.seed,
        source_lang=args.src_lang or "",
        target_lang=args.tgt_lang,
        alpha=1.0 if args.alpha is None else args.alpha,
        positions=args.positions,
        fit_info=info,
    )


def _parse_rank(spec: str) -> int | str | None:
    if spec == "full":
        return None
    if spec == "auto":
        return "auto"
    try:
        return int(spec)
    except ValueError:
        raise LingalignError(f"--rank must be full, auto or a number, not {spec!r}") from None


def _span(layers: Sequence[int]) -> str:
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(il) for il in layers)


def _cmd_run(args: argparse.Namespace) -> int:
    from .data import shipped_transform_path
    from .hook import attach
    from .transform import Transform

    if args.transform and args.lang:
        raise LingalignError("give --transform or --lang, not both")
    auto = args.lang == "auto"
    path = args.transform or (shipped_transform_path(args.lang) if args.lang and not auto else None)
    transform = Transform.load(path) if path else None
    llm = _load_llm(args, n_ctx=args.ctx)
    steering = attach(llm)
    if args.device_maps:
        print(f"lingalign: device maps: {steering.set_device_maps(True)}", file=sys.stderr)
    if transform is not None:
        for w in steering.set(transform, alpha=args.alpha, positions=args.positions, force=args.force):
            print(f"lingalign: warning: {w}", file=sys.stderr)
    if auto:
        from .route import Router

        steering.set_router(Router.shipped())
    out = llm(args.prompt, max_tokens=args.n_predict, temperature=args.temperature, seed=args.seed)
    if auto:
        t = steering.transform
        print(f"lingalign: detected {steering.routed_language or 'unknown'}; transform: "
              f"{(t.source_lang + '->' + t.target_lang) if t else 'none'}", file=sys.stderr)
    print(out["choices"][0]["text"])
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .transform import Transform

    t = Transform.load(args.transform)
    summary = t.summary()
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    m = t.model
    print(f"file:        {args.transform}")
    print(f"method:      {t.method} ({', '.join(summary['kinds'])})")
    print(f"languages:   {t.source_lang or '?'} -> {t.target_lang}")
    print(f"layers:      {_span(sorted(t.layers))}")
    print(f"defaults:    alpha {t.alpha:g}, positions {t.positions}")
    print(f"precision:   {t.precision}")
    print(f"model:       {m.name or m.architecture} ({m.architecture}, n_embd {m.n_embd}, n_layer {m.n_layer})")
    print(f"vocab hash:  {m.vocab_sha256}")
    print(f"weights:     {m.weights_sha256}")
    for k, v in sorted(t.fit_info.items()):
        print(f"fit.{k}: {v}")
    return 0


def _load_transform(args: argparse.Namespace) -> Any:
    from .transform import Transform

    return Transform.load(args.transform) if args.transform else None


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from .capture import parse_layer_spec
    from .data import read_pairs
    from .evaluate import eval_retrieval

    import llama_cpp

    from .model import fingerprint

    src, tgt = read_pairs(args.src, args.tgt, skip=args.skip, limit=args.limit)
    transform = _load_transform(args)
    llm = _load_llm(args)
    layers = parse_layer_spec(args.layers, int(llama_cpp.llama_model_n_layer(llm.model)))
    if transform is not None:
        for w in transform.model.check(fingerprint(llm.model_path), force=args.force):
            print(f"lingalign: warning: {w}", file=sys.stderr)
    result = eval_retrieval(
        llm, src, tgt, transform=transform, alpha=args.alpha, positions=args.positions, layers=layers,
        force=args.force,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'layer':>5} {'src->tgt':>9} {'tgt->src':>9} {'pair dist':>10}")
    for row in result["layers"]:
        print(f"{row['layer']:>5} {row['src2tgt']:>9.3f} {row['tgt2src']:>9.3f} {row['pair_distance']:>10.4f}")
    print(f"best layer {result['best_layer']}: top-1 {result['best_top1']:.3f}; "
          f"last layer {result['last_layer']}: {result['last_top1']:.3f}  (n={result['n']})")
    return 0


def _cmd_eval_choice(args: argparse.Namespace) -> int:
    from .evaluate import choice_language, eval_choice, load_choice_items

    items = load_choice_items(args.data)[: args.limit]
    transform = _load_transform(args)
    llm = _load_llm(args, n_ctx=args.ctx)
    result = eval_choice(llm, items, lang=args.lang or choice_language(args.data), transform=transform,
                         alpha=args.alpha, positions=args.positions, force=args.force)
    for w in result.pop("warnings"):
        print(f"lingalign: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accuracy {result['accuracy']:.3f} (length-normalized {result['accuracy_norm']:.3f}), "
              f"n={result['n']}, connectors: {result['lang']}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_bench, run_bench

    result = run_bench(args.model, repeats=args.repeats, threads=args.threads, n_gpu_layers=args.n_gpu_layers,
                       device_maps=args.device_maps)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .data import read_pairs
    from .evaluate import choice_language, load_choice_items
    from .model import fingerprint
    from .transform import Transform
    from .tune import refuse_test_data, tune

    refuse_test_data(args.dev)
    transform = Transform.load(args.transform)
    dev_src = dev_tgt = items = None
    if args.metric == "retrieval":
        if not args.dev_tgt:
            raise LingalignError("--metric retrieval needs --dev (source) and --dev-tgt (English)")
        refuse_test_data(args.dev_tgt)
        dev_src, dev_tgt = read_pairs(args.dev, args.dev_tgt, skip=args.skip, limit=args.limit)
    else:
        items = load_choice_items(args.dev)[: args.limit]
    llm = _load_llm(args, n_ctx=args.ctx)
    for w in transform.model.check(fingerprint(llm.model_path), force=args.force):
        print(f"lingalign: warning: {w}", file=sys.stderr)
    tuned, record = tune(llm, transform, metric=args.metric, dev_src=dev_src, dev_tgt=dev_tgt, dev_items=items,
                         lang=args.lang or choice_language(args.dev))
    out = args.out or args.transform
    tuned.save(out)
    best = record["best"]
    if best.get("off"):
        print(f"{args.metric} on {record['n_dev']} dev examples: no setting of {record['candidates']} scored above "
              f"no transform ({record['baseline_score']:.3f}): default alpha set to 0 (off) in {out}; "
              f"--alpha overrides it")
        return 0
    print(f"{args.metric} on {record['n_dev']} dev examples: no transform {record['baseline_score']:.3f}; best "
          f"{best['score']:.3f} with alpha {best['alpha']:g}, positions {best['positions']}, layers "
          f"{_span(best['layers'])} ({record['candidates']} candidates) -> defaults written to {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .controlvector import export_controlvector
    from .transform import Transform

    export_controlvector(Transform.load(args.transform), args.out, alpha=args.alpha)
    print(f"wrote {args.out} (llama.cpp: --control-vector {args.out})")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .transform import Transform

    t = Transform.load(args.transform)
    out = t.to_precision(args.precision)
    out.save(args.out)
    before, after = Path(args.transform).stat().st_size, Path(args.out).stat().st_size
    print(f"wrote {args.out}: {t.precision} -> {out.precision}, {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from .hub import pull
    from .model import fingerprint, resolve_model

    model = fingerprint(resolve_model(args.model))
    path, transform, warnings = pull(args.repo_id, filename=args.file, revision=args.revision, model=model,
                                     force=args.force)
    for w in warnings:
        print(f"lingalign: warning: {w}", file=sys.stderr)
    print(path)
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub import push

    print(push(args.transform, args.repo_id, private=args.private))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .hub import local_transforms

    from .data import shipped_dir

    dirs = ([shipped_dir()] if shipped_dir().is_dir() else []) + [Path(d) for d in args.dir]
    entries = local_transforms(dirs)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("no transforms found (lingalign pull REPO_ID downloads one)")
    for e in entries:
        if "error" in e:
            print(f"{e['path']}  [{e['origin']}]  INVALID: {e['error']}")
        else:
            print(f"{e['path']}  [{e['origin']}]  {e['source_lang'] or '?'}->{e['target_lang']} {e['method']}, "
                  f"for {e['model']} (vocab {e['vocab_sha256']})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(model=args.model, threads=args.threads, n_gpu_layers=args.n_gpu_layers)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lingalign",
        description="Cross-lingual alignment interventions for GGUF models in llama.cpp.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", help="GGUF model file (default: Gemma 3 270M Q4_K_M, from its PyPI package)")
        sp.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
        sp.add_argument("-ngl", "--n-gpu-layers", type=int, default=0,
                        help="layers to offload to the GPU, with a GPU build of llama-cpp-python (-1: all; default 0)")

    sp = sub.add_parser("capture", help="pooled residual stream of every layer for a text file -> .npz")
    sp.add_argument("--text", required=True, help="UTF-8 text, one sentence per line")
    sp.add_argument("--out", required=True, help="output .npz (activations [N, layers, n_embd])")
    sp.add_argument("--pool", choices=("mean", "last"), default="mean")
    sp.add_argument("--layers", default="all", help="all | 5 | 0,4,8 | 2-6 | -1 (default: all)")
    sp.add_argument("--skip", type=int, default=0)
    sp.add_argument("--limit", type=int, default=None)
    common(sp)
    sp.set_defaults(func=_cmd_capture)

    sp = sub.add_parser("fit", help="fit a transform from line-aligned source/English text")
    sp.add_argument("--src", help="source-language sentences, one per line")
    sp.add_argument("--tgt", help="their English translations, line-aligned")
    sp.add_argument("--out", required=True, help="output transform .gguf")
    sp.add_argument("--method", choices=METHODS + NEURON_METHODS, default=DEFAULT_METHOD,
                    help="how to fit (experts: clamp the target language's expert neurons; random-neurons: its control)")
    sp.add_argument("--src-lang", default="", help="source language code (with no --src: the embedded corpus)")
    sp.add_argument("--tgt-lang", default="eng")
    sp.add_argument("--layers", default=None,
                    help=f"layers to fit: auto (the one layer where a map helps held-out retrieval most) | -1 | all | "
                         f"0,4,8 | 2-6 (default: {DEFAULT_MAP_LAYERS} for maps and vectors, all for neuron methods)")
    sp.add_argument("--k", type=int, default=DEFAULT_K,
                    help=f"experts / random-neurons: neurons to clamp (default {DEFAULT_K})")
    sp.add_argument("--seed", type=int, default=0, help="random-neurons: seed of the draw")
    sp.add_argument("--precision", choices=PRECISIONS, default="f32",
                    help="storage of maps: f16 halves the file and the memory read per token (float32 accumulation); "
                    "q8 stores full maps as 8-bit differences from the identity (a quarter), q4 as 4-bit ones "
                    "(an eighth; the hook then quantizes the hidden states to 8 bits per block of 32 for its "
                    "integer dot products)")
    sp.add_argument("--lambda", dest="lam", type=float, default=None, help="ridge strength (default: chosen on held-out pairs)")
    sp.add_argument("--rank", default="auto",
                    help="store maps as I + U V^T of this rank: auto (smallest rank no worse on held-out "
                    "pairs, default), full, or a number")
    sp.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                    help="fit a bias with the map (default: yes for ridge, no for incline)")
    sp.add_argument("--alpha", type=float, default=None,
                    help="default strength stored in the file (default: 1, or the one --layers auto chose)")
    sp.add_argument("--positions", choices=POSITIONS, default="all", help="default position policy stored in the file")
    sp.add_argument("--skip", type=int, default=0, help="skip the first N line pairs")
    sp.add_argument("--limit", type=int, default=None, help="use at most N line pairs")
    common(sp)
    sp.set_defaults(func=_cmd_fit)

    sp = sub.add_parser("run", help="generate a completion, with a transform if given")
    sp.add_argument("-p", "--prompt", required=True)
    sp.add_argument("--transform", help="transform .gguf")
    sp.add_argument("--lang", help="use the transform shipped for this language (sw, swh, es, ...; default model), or auto: "
                    "detect the prompt's language")
    sp.add_argument("--alpha", type=float, default=None, help="strength (default: the file's)")
    sp.add_argument("--positions", choices=POSITIONS, default=None, help="position policy (default: the file's)")
    sp.add_argument("-n", "--n-predict", type=int, default=64, help="max tokens to generate")
    sp.add_argument("--temperature", type=float, default=0.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--ctx", type=int, default=1024, help="context size")
    sp.add_argument("--force", action="store_true", help="apply a transform made for another model")
    sp.add_argument("--device-maps", action="store_true", help="apply the maps of offloaded layers on the GPU (see README)")
    common(sp)
    sp.set_defaults(func=_cmd_run)

    ev = sub.add_parser("eval", help="measure alignment: bitext retrieval, multiple choice")
    evsub = ev.add_subparsers(dest="eval_command", required=True, metavar="EVAL")

    def intervention(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--transform", help="transform .gguf, applied inside llama.cpp")
        sp.add_argument("--alpha", type=float, default=None, help="strength (default: the file's)")
        sp.add_argument("--positions", choices=POSITIONS, default=None, help="position policy (default: the file's)")
        sp.add_argument("--force", action="store_true", help="apply a transform made for another model")
        sp.add_argument("--json", action="store_true", help="print one JSON object")
        common(sp)

    sp = evsub.add_parser("retrieval", help="per-layer top-1 bitext retrieval (source read with the transform)")
    sp.add_argument("--src", required=True)
    sp.add_argument("--tgt", required=True)
    sp.add_argument("--skip", type=int, default=0)
    sp.add_argument("--limit", type=int, default=None)
    sp.add_argument("--layers", default="all", help="layers to measure (default: all)")
    intervention(sp)
    sp.set_defaults(func=_cmd_eval_retrieval)

    sp = evsub.add_parser("choice", help="XCOPA-format multiple choice by log-likelihood")
    sp.add_argument("--data", required=True, help="JSONL: premise, choice1, choice2, question, label")
    sp.add_argument("--limit", type=int, default=None)
    sp.add_argument("--lang", default=None, help="connector language (default: from the file name, e.g. val.sw.jsonl)")
    sp.add_argument("--ctx", type=int, default=256, help="context size")
    intervention(sp)
    sp.set_defaults(func=_cmd_eval_choice)

    sp = sub.add_parser("tune", help="choose alpha, positions and layers on dev data; write them as the file's defaults")
    sp.add_argument("--transform", required=True)
    sp.add_argument("--dev", required=True, help="dev data: source sentences (retrieval) or XCOPA-format JSONL (choice)")
    sp.add_argument("--dev-tgt", help="English translations of --dev, line-aligned (retrieval)")
    sp.add_argument("--metric", choices=("retrieval", "choice"), default="retrieval")
    sp.add_argument("--skip", type=int, default=0)
    sp.add_argument("--limit", type=int, default=None)
    sp.add_argument("--lang", default=None, help="choice: connector language (default: from the file name)")
    sp.add_argument("--ctx", type=int, default=512)
    sp.add_argument("--out", help="write the tuned transform here (default: update --transform in place)")
    sp.add_argument("--force", action="store_true")
    common(sp)
    sp.set_defaults(func=_cmd_tune)

    sp = sub.add_parser("export", help="write an additive transform as a llama.cpp control vector")
    sp.add_argument("--format", choices=("controlvector",), default="controlvector")
    sp.add_argument("transform")
    sp.add_argument("out")
    sp.add_argument("--alpha", type=float, default=None, help="scale baked into the vectors (default: the file's)")
    sp.set_defaults(func=_cmd_export)

    sp = sub.add_parser("convert", help="store a transform's maps in another precision (f32, f16, q8, q4)")
    sp.add_argument("transform")
    sp.add_argument("out")
    sp.add_argument("--precision", choices=PRECISIONS, required=True,
                    help="f32 and f16 store maps as floats; q8 and q4 full maps as 8- or 4-bit differences from "
                    "the identity (a quarter or an eighth of float32's bytes, read per token)")
    sp.set_defaults(func=_cmd_convert)

    sp = sub.add_parser("pull", help="download a transform from the Hugging Face Hub, verified")
    sp.add_argument("repo_id")
    sp.add_argument("--file", default=None, help="file in the repository (default: its only .gguf)")
    sp.add_argument("--revision", default=None, help="branch, tag or commit to pin")
    sp.add_argument("--force", action="store_true", help="accept a transform made for another model")
    sp.add_argument("--model", help="the model it will be applied to (default: the default model)")
    sp.set_defaults(func=_cmd_pull)

    sp = sub.add_parser("push", help="upload a transform and a model card to the Hugging Face Hub")
    sp.add_argument("transform")
    sp.add_argument("repo_id")
    sp.add_argument("--private", action="store_true")
    sp.set_defaults(func=_cmd_push)

    sp = sub.add_parser("list", help="transforms available locally (Hub cache, folders) and the model each fits")
    sp.add_argument("--dir", action="append", default=[], help="also list the .gguf files of this folder")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_cmd_list)

    sp = sub.add_parser("info", help="print a transform file's metadata")
    sp.add_argument("transform")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_cmd_info)

    sp = sub.add_parser("bench", help="cost of the hook vs plain llama.cpp, side by side (ratios)")
    sp.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--device-maps", action="store_true",
                    help="also time the full-rank maps applied on the GPU (with --n-gpu-layers)")
    common(sp)
    sp.set_defaults(func=_cmd_bench)

    sp = sub.add_parser("demo", help="the whole job on the embedded corpus, with numbers (about a minute)")
    common(sp)
    sp.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _install_error_only_log()
        return int(args.func(args))
    except LingalignError as e:
        print(f"lingalign: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Whoever read the output stopped (`lingalign info T.gguf | head -3`): stop quietly, as
        # command-line tools do on SIGPIPE, with stdout on devnull so the exit flush cannot fail.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except OSError as e:
        print(f"lingalign: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
