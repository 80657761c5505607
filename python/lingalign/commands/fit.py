"""`lingalign fit`: fit a transform from line-aligned source/English text (or the embedded
corpus) and write it as a .gguf: a map or vector at the layer chosen on held-out pairs or at the
given layers, or the target language's expert neurons to clamp (experts, random-neurons)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..blas import blas_threads
from ..errors import LingalignError
from ..experts import DEFAULT_K
from ..fit import DEFAULT_METHOD, EXPERT_METHODS, FIDELITY_CHECK_PROMPTS, METHODS
from ..transform import POSITIONS, PRECISIONS
from .common import load_llm, span
from .options import Parents, shard_run_options, sharded

# Measured by bench/quality.py: one ridge map at the layer chosen on held-out pairs beats one at
# the last layer at the best and at the last layer alike (docs/results.md).
DEFAULT_MAP_LAYERS = "auto"
MIN_PAIRS_AUTO = 10
NEGATIVES_PER_LANGUAGE = 100  # embedded sentences of each other language added to the negatives


def register(subparsers: Any, parents: Parents) -> None:
    own = argparse.ArgumentParser(add_help=False)  # listed before the shared options (options.py)
    own.add_argument("--src", help="source-language sentences, one per line")
    own.add_argument("--tgt", help="their English translations, line-aligned")
    own.add_argument("--out", required=True, help="output transform .gguf")
    own.add_argument("--method", choices=METHODS + EXPERT_METHODS, default=DEFAULT_METHOD,
                     help="how to fit (experts: clamp the target language's expert neurons; random-neurons: its control)")
    own.add_argument("--src-lang", default="", help="source language code (with no --src: the embedded corpus)")
    own.add_argument("--tgt-lang", default="eng")
    own.add_argument("--layers", default=None,
                     help=f"layers to fit: auto (the one layer where a map helps held-out retrieval most) | -1 | all | "
                          f"0,4,8 | 2-6 (default: {DEFAULT_MAP_LAYERS} for maps and vectors, all for neuron methods)")
    own.add_argument("--anchor-layers", default=None,
                     help="staged: the late layers that move back toward the source language "
                          "(default: the last sixth; --layers default: a quarter to two thirds of the depth)")
    own.add_argument("--anchor-strength", type=float, default=None, metavar="S",
                     help="staged: the anchor layers' strength as a multiple of the alignment stage's (default 1)")
    own.add_argument("--control", choices=("shuffled",), default=None,
                     help="shuffled: fit on shuffled pairs (each sentence with another one's translation), "
                          "the control that shows what pairing contributes")
    own.add_argument("--fidelity-check", type=int, default=FIDELITY_CHECK_PROMPTS, metavar="N",
                     help="with --layers auto and no --alpha: lower the stored strength (to 0.25, 0.1, then off) "
                          f"until greedy answers to the first N source sentences stay in their language (default "
                          f"{FIDELITY_CHECK_PROMPTS}; 0: no check)")
    own.add_argument("--fit-threads", type=int, default=None,
                     help="BLAS threads while fitting (default: half the CPUs; see docs/speed.md)")
    own.add_argument("--k", type=int, default=DEFAULT_K,
                     help=f"experts / random-neurons: neurons to clamp (default {DEFAULT_K})")
    own.add_argument("--seed", type=int, default=0, help="random-neurons: seed of the draw")
    own.add_argument("--precision", choices=PRECISIONS, default="f32",
                     help="storage of maps: f16 halves the file and the memory read per token (float32 accumulation); "
                     "q8 stores full maps as 8-bit differences from the identity (a quarter), q4 as 4-bit ones "
                     "(an eighth; the hook then quantizes the hidden states to 8 bits per block of 32 for its "
                     "integer dot products)")
    own.add_argument("--lambda", dest="lam", type=float, default=None, help="ridge strength (default: chosen on held-out pairs)")
    own.add_argument("--rank", default="auto",
                     help="store maps as I + U V^T of this rank: auto (smallest rank no worse on held-out "
                     "pairs, default), full, or a number")
    own.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                     help="fit a bias with the map (default: yes for ridge, no for incline)")
    own.add_argument("--alpha", type=float, default=None,
                     help="default strength stored in the file (default: 1, or the one --layers auto chose)")
    own.add_argument("--positions", choices=POSITIONS, default="all", help="default position policy stored in the file")
    own.add_argument("--lexicon", default=None, metavar="LEX.tsv",
                     help="also learn a word lexicon from the same pairs (as `lingalign lexicon` does; no model) and "
                          "write it here: run/serve --lexicon read prompts through it, tune --lexicon decides its use")
    own.add_argument("--skip", type=int, default=0, help="skip the first N line pairs")
    own.add_argument("--limit", type=int, default=None, help="use at most N line pairs")
    sp = subparsers.add_parser("fit", parents=[own, parents.model, parents.cluster],
                               help="fit a transform from line-aligned source/English text")
    sp.set_defaults(func=cmd_fit)


def _resolve_fit_files(args: argparse.Namespace) -> tuple[str, str]:
    from ..data import embedded_path

    if args.src and args.tgt:
        return args.src, args.tgt
    if args.src or args.tgt:
        raise LingalignError("give both --src and --tgt, or neither (then --src-lang picks the embedded corpus)")
    if not args.src_lang:
        raise LingalignError("give --src and --tgt files, or --src-lang to fit on the embedded corpus")
    return str(embedded_path(args.src_lang)), str(embedded_path(args.tgt_lang))


def cmd_fit(args: argparse.Namespace) -> int:
    from .. import _llama
    from ..capturing import capture, parse_layer_spec
    from ..data import lines_sha256, read_pairs
    from ..transform import Transform

    src_file, tgt_file = _resolve_fit_files(args)
    src, tgt = read_pairs(src_file, tgt_file, skip=args.skip, limit=args.limit)
    if args.lexicon:  # first: it needs no model, and a language it cannot gloss fails before the capture
        _write_lexicon(args, src, tgt)
    if sharded(args):
        return _fit_sharded(args, src, tgt, src_file, tgt_file)
    llm = load_llm(args)
    n_layer = _llama.n_layer(llm)
    neurons = args.method in EXPERT_METHODS
    layer_spec = args.layers if args.layers is not None else ("all" if neurons else DEFAULT_MAP_LAYERS)
    staged = args.method == "staged"
    if (args.anchor_layers is not None or args.anchor_strength is not None) and not staged:
        raise LingalignError("--anchor-layers and --anchor-strength are for --method staged")
    if args.control and neurons:
        raise LingalignError(f"--control shuffled needs paired sentences; {args.method} has its own control (random-neurons)")
    anchor_layers: list[int] = []
    if staged:
        from ..fit import default_stages

        align, anchor = default_stages(range(n_layer), n_layer)
        if args.layers not in (None, "auto"):
            align = parse_layer_spec(args.layers, n_layer) or list(range(n_layer))
        anchor_layers = (parse_layer_spec(args.anchor_layers, n_layer) or list(range(n_layer))) \
            if args.anchor_layers is not None else [il for il in anchor if il not in align]
        layer_spec = ",".join(str(il) for il in align)
    auto = layer_spec == "auto"
    if auto and not neurons and args.layers is None and len(src) < MIN_PAIRS_AUTO:
        print(f"only {len(src)} pairs: too few to choose a layer, fitting the last one", file=sys.stderr)
        auto, layer_spec = False, "-1"
    if auto and neurons:
        raise LingalignError("--layers auto chooses one layer for a map; neuron methods take a layer list or all")
    fit_layers = (None if auto else parse_layer_spec(layer_spec, n_layer)) or list(range(n_layer))
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
        def capture_sets(pos: list[str], neg: list[str]) -> tuple[Any, Any]:
            return (capture(llm, pos, layers=fit_layers, site="ffn"), capture(llm, neg, layers=fit_layers, site="ffn"))

        transform = _fit_neurons(args, llm.metadata, capture_sets, src, tgt, fit_layers, info)
        transform.save(args.out)
        n_neurons = sum(lm.clamp_index.size for lm in transform.layers.values())
        print(f"wrote {args.out}: {args.method}, {n_neurons} neurons clamped over {len(transform.layers)} layers")
        return 0
    captured = sorted(set(fit_layers) | set(anchor_layers))
    print(f"capturing {len(src)} sentence pairs at layers {span(captured)} ...", file=sys.stderr)
    X = capture(llm, src, layers=captured)
    Y = capture(llm, tgt, layers=captured)
    if args.control == "shuffled":
        from ..fit import shuffled_pairs

        Y = Y.rows(shuffled_pairs(len(Y), seed=args.seed))
        info["control"] = f"shuffled pairs (seed {args.seed})"
    alpha = args.alpha
    with blas_threads(args.fit_threads) as threads:
        t0 = time.perf_counter()
        if auto:
            from ..fit import choose_layer, stored_alpha

            layer, chosen_alpha, record = choose_layer(X, Y, method=args.method, lam=args.lam, bias=args.bias)
            alpha = stored_alpha(args.method, chosen_alpha) if args.alpha is None else args.alpha
            info["layer_choice"] = record
            fit_layers = [layer]
            print(f"layer {layer} (alpha {chosen_alpha:g}) helps held-out retrieval most; stored alpha {alpha:g}",
                  file=sys.stderr)
        transform = Transform.fit(
            X,
            Y,
            layers=fit_layers,
            method=args.method,
            lam=args.lam,
            bias=args.bias,
            rank=_parse_rank(args.rank),
            source_lang=args.src_lang or "",
            target_lang=args.tgt_lang,
            alpha=1.0 if alpha is None else alpha,
            positions=args.positions,
            fit_info=info,
            **({"anchor_layers": anchor_layers, "anchor_strength": args.anchor_strength or 1.0} if staged else {}),
        )
        print(f"fitted in {time.perf_counter() - t0:.1f} s ({threads} BLAS thread{'s' * (threads > 1)})", file=sys.stderr)
    transform = transform.to_precision(args.precision)
    if auto and args.alpha is None and args.fidelity_check > 0:
        transform = _fidelity_guard(llm, transform, src[: args.fidelity_check], args.src_lang)
    transform.save(args.out)
    print(f"wrote {args.out}: {args.method} at layers {span(sorted(transform.layers))}, {len(src)} pairs")
    return 0


def _write_lexicon(args: argparse.Namespace, src: list[str], tgt: list[str]) -> None:
    from ..lexicon import fit_lexicon

    if not args.src_lang:
        raise LingalignError("--lexicon records the source language: give --src-lang")
    t0 = time.perf_counter()
    lex = fit_lexicon(src, tgt, source_lang=args.src_lang, target_lang=args.tgt_lang)
    lex.save(args.lexicon)
    print(f"wrote {args.lexicon}: a lexicon of {len(lex)} words from {len(src)} pairs "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)


def _fidelity_guard(llm: Any, transform: Any, prompts: list[str], src_lang: str | None) -> Any:
    """The stored strength, lowered until answers to source sentences stay in their language
    (tune.faithful_alpha)."""
    from ..data import normalize_lang
    from ..tune import guard_strength

    t0 = time.perf_counter()
    guarded = guard_strength(llm, transform, prompts, normalize_lang(src_lang) if src_lang else None)
    r = guarded.fit_info["fidelity_check"]
    head = f"fidelity check ({r['n']} source sentences, {time.perf_counter() - t0:.1f} s):"
    if guarded.alpha == transform.alpha:
        print(f"{head} answers stay in {r['lang']} at alpha {guarded.alpha:g}", file=sys.stderr)
    else:
        kept = f"stored alpha {guarded.alpha:g}" if guarded.alpha else "stored alpha 0 (off): no strength kept the language"
        print(f"{head} at alpha {transform.alpha:g} {r['tried'][0]['fidelity']:.0%} of answers stayed in {r['lang']} "
              f"({r['baseline']:.0%} without); {kept}", file=sys.stderr)
    return guarded


def _fit_neurons(
    args: argparse.Namespace,
    metadata: Any,
    capture_sets: Callable[[list[str], list[str]], tuple[Any, Any]],
    src: list[str],
    tgt: list[str],
    layers: list[int],
    info: dict[str, Any],
) -> Any:
    """Experts of the target language: its sentences are the positives; the source sentences and
    the embedded corpus of every other language are the negatives. `capture_sets(positives,
    negatives)` captures both at the MLP site (in this process, or in shards)."""
    from .. import sites
    from ..data import EMBEDDED_LANGUAGES, embedded_path, normalize_lang, read_lines
    from ..transform import Transform

    ffn = sites.ffn_site(metadata)
    if ffn is None:
        raise LingalignError(f"lingalign does not know the MLP neurons of {metadata.get('general.architecture')} models")
    if not 1 <= args.k <= len(layers) * ffn.width:  # checked before the slow capture
        raise LingalignError(f"--k must be in 1..{len(layers) * ffn.width} (the neurons of the chosen layers), not {args.k}")
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
        f"({', '.join(used)}) at layers {span(layers)} ...",
        file=sys.stderr,
    )
    pos, neg = capture_sets(list(tgt), list(src) + others)
    info["negative_languages"] = used
    return Transform.fit(
        pos,
        neg,
        method=args.method,
        k=args.k,
        seed=args.seed,
        source_lang=args.src_lang or "",
        target_lang=args.tgt_lang,
        alpha=1.0 if args.alpha is None else args.alpha,
        positions=args.positions,
        fit_info=info,
    )


def _fit_sharded(args: argparse.Namespace, src: list[str], tgt: list[str], src_file: str, tgt_file: str) -> int:
    """fit --ray / --shard-size / --resume: capture in shards (on Ray actors with --ray) and fit
    from the shard-order reduction (lingalign.cluster)."""
    from ..capturing import parse_layer_spec
    from ..cluster import capture_sharded, fit_sharded, import_ray
    from ..data import lines_sha256
    from ..model import fingerprint, model_metadata
    from ..models import resolve_model

    if args.ray is not None:
        import_ray()  # says how to install it, before anything slow
    neurons = args.method in EXPERT_METHODS
    if args.method == "staged" or args.control:
        raise LingalignError(f"{'staged' if args.method == 'staged' else '--control'} is not fitted in shards; "
                             "run it without --ray/--resume")
    if args.layers == "auto" or (args.layers is None and not neurons):
        raise LingalignError("sharded fitting needs --layers (auto compares every layer on held-out rows; choose it "
                             "on a one-process run of a few thousand pairs first)")
    model_path = str(resolve_model(args.model))
    n_layer = fingerprint(model_path).n_layer
    layers = parse_layer_spec(args.layers or "all", n_layer) or list(range(n_layer))
    rank = _parse_rank(args.rank)
    if rank == "auto":
        rank = None
        print("--rank auto needs held-out rows: storing full maps (give --rank N for low rank)", file=sys.stderr)
    info = {"pairs": len(src), "skip": args.skip, "limit": args.limit, "src_file": os.path.basename(src_file),
            "tgt_file": os.path.basename(tgt_file), "src_sha256": lines_sha256(src), "tgt_sha256": lines_sha256(tgt),
            "pool": "mean"}
    options = shard_run_options(args)
    where = " on Ray" if options["use_ray"] else ""
    summaries: list[dict[str, Any]] = []
    if neurons:
        def capture_sets(pos: list[str], neg: list[str]) -> tuple[Any, Any]:
            # one sharded run over positives then negatives, so that one --resume directory serves both
            caps, summary = capture_sharded(model_path, pos + neg, layers=layers, site="ffn", **options)
            summaries.append(summary)
            return caps.rows(slice(0, len(pos))), caps.rows(slice(len(pos), len(pos) + len(neg)))

        print(f"in shards of {args.shard_size}{where}:", file=sys.stderr)
        transform = _fit_neurons(args, model_metadata(model_path), capture_sets, src, tgt, layers, info)
        transform.fit_info["sharded"] = {"shards": summaries[0]["shards"], "shard_size": args.shard_size}
    else:
        print(f"capturing {len(src)} sentence pairs at layers {span(layers)} in shards of {args.shard_size}{where} ...",
              file=sys.stderr)
        transform, summary = fit_sharded(
            model_path, src, tgt, method=args.method, layers=layers, lam=args.lam, bias=args.bias, rank=rank,
            source_lang=args.src_lang or "", target_lang=args.tgt_lang, alpha=1.0 if args.alpha is None else args.alpha,
            positions=args.positions, fit_info=info, **options)
        summaries.append(summary)
        if "heldout_shards" in summary:
            chosen = transform.fit_info.get("ridge_lambda") or transform.fit_info.get("lda_shrinkage")
            print(f"chosen on held-out shards {summary['heldout_shards']}: {chosen}", file=sys.stderr)
    transform = transform.to_precision(args.precision)
    transform.save(args.out)
    summary = summaries[0]
    print(f"{summary['pairs']} {'sentences' if neurons else 'pairs'}, {summary['shards']} shards "
          f"({summary['shards_resumed']} resumed), {summary['workers']} workers, {summary['seconds']:.1f} s",
          file=sys.stderr)
    what = f"{sum(lm.clamp_index.size for lm in transform.layers.values())} neurons clamped" if neurons else \
        f"at layers {span(sorted(transform.layers))}"
    print(f"wrote {args.out}: {args.method} {what}, {len(src)} pairs")
    return 0


def _parse_rank(spec: str) -> int | str | None:
    if spec == "full":
        return None
    if spec == "auto":
        return "auto"
    try:
        return int(spec)
    except ValueError:
        raise LingalignError(f"--rank must be full, auto or a number, not {spec!r}") from None
