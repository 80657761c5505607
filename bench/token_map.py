"""A map fitted on aligned words, not on sentence means: does a per-token change help?

    python bench/token_map.py --langs swh_Latn,ind_Latn [--layers 8,12] [--alphas 0.5,1] [--threads 1]
    python bench/token_map.py --split test --layers 12 --alphas 1 --kinds aligned   # dev's best, on test
    python bench/token_map.py --report     # docs/token_map.md from the records

Every map and vector the product fits compares sentences' mean hidden states, and the oracle
(bench/oracle.py) showed that even a perfect mean shift does not raise accuracy: what the model
lacks is what each word means. This fits the same kind of map (ridge toward the identity, one
layer, applied to every token) on word pairs instead: each source word's hidden state (at its
last token) against the state of the English word it translates, read in their sentences.

The word pairs come from the 701 SIB-200 train pairs, aligned by IBM Model 1 (five EM
iterations each way, kept where both directions agree), its lexicon learned from every bitext
the language has here (SIB-200 train, NTREX, Tatoeba; words only, no model). Words are the
tokenizer's (a run of tokens up to the next one that starts with a space), lowercased, letters
and digits only. The word states are read with lingalign's hook, one capture slot per token, and
cached outside the repository; the first token of a sequence holds the attention sink (a state
about 100 times longer than a word's), so such words are not paired, and the sinks are rows the
map must keep as they are. `keep-english` also keeps the English words' states as they are (the
prompt's English parts); the control `shuffled` pairs each source word with another pair's
English word. Scored on all of the language's SIB-200 dev sentences (99), and with `--split
test` on its test sentences (204), against no transform on the same sentences, with the sign
test `tune` applies. One record per split, language, layer, kind and strength in
bench/results/token_map/<model>/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from downstream import CACHE, DATA, sib_train, task_file  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "token_map"
DOC = ROOT / "docs" / "token_map.md"
KINDS = ("aligned", "keep-english", "shuffled")
BITEXT = {  # SIB-200 code -> (NTREX name, Tatoeba name): bitext for the word lexicon
    "swh_Latn": ("swa", "swh"), "ind_Latn": ("ind", "ind"), "tur_Latn": ("tur", "tur"),
    "spa_Latn": ("spa", "spa"), "hin_Deva": ("hin", "hin"), "rus_Cyrl": ("rus", "rus"),
    "deu_Latn": ("deu", "deu"), "ita_Latn": ("ita", "ita"), "vie_Latn": ("vie", "vie"), "arb_Arab": ("arb", "ara"),
    "hau_Latn": ("hau", None), "yor_Latn": ("yor", None),  # no Tatoeba here
}
WORD = re.compile(r"\w+")


def token_words(pieces: list[bytes]) -> list[tuple[int, str]]:
    """(index of the word's last token that holds a letter or digit, the word) for each word of a
    tokenized sentence: a word is a run of tokens up to the next token that starts with a space."""
    out: list[tuple[int, str]] = []
    start = 1 if pieces and pieces[0] == b"" else 0  # BOS detokenizes to nothing
    runs: list[list[int]] = []
    for k in range(start, len(pieces)):
        if not runs or pieces[k].startswith(b" "):
            runs.append([k])
        else:
            runs[-1].append(k)
    for run in runs:
        word = "".join(WORD.findall(b"".join(pieces[k] for k in run).decode("utf-8", "ignore").lower()))
        if not word:
            continue
        content = [k for k in run if WORD.search(pieces[k].decode("utf-8", "ignore"))]
        out.append((content[-1] if content else run[-1], word))
    return out


def word_states(llm: Any, sentences: list[str], layers: list[int]) -> tuple[list[list[str]], Any, Any]:
    """Each sentence's words and their hidden states at `layers`: (words per sentence, states
    float16 [total words, len(layers), width], offsets [n + 1] into them). The hook pools each
    token alone (one capture slot per token), so a slot's mean is that token's state."""
    import numpy as np

    from lingalign import _llama
    from lingalign._abi import _core
    from lingalign.capturing import fill_batch, pack_sentences, tokenize_sentences
    from lingalign.hook import hook_with
    from lingalign.runner import BatchRunner

    tokens = tokenize_sentences(llm, sentences)
    words = [token_words([llm.detokenize([t]) if t != llm.token_bos() else b"" for t in toks]) for toks in tokens]
    width = _llama.n_embd(llm)
    states = np.zeros((sum(len(w) for w in words), len(layers), width), dtype=np.float16)
    offsets = np.cumsum([0] + [len(w) for w in words])
    hook, _ = hook_with(llm, None)
    n_batch = max(512, max(len(t) for t in tokens))
    n_seq = max(1, min(32, _llama.max_parallel_sequences()))
    runner = BatchRunner(llm, hook, n_batch=n_batch, n_seq=n_seq, embeddings=True)
    done = 0
    try:
        for group in pack_sentences(tokens, n_batch, n_seq):
            used = fill_batch(runner.batch, tokens, group, all_outputs=False)
            flags = np.full(used, _core.ROW_POOL, dtype=np.uint8)
            slots = np.arange(used, dtype=np.int32)
            row = 0
            for k in group:
                row += len(tokens[k])
                flags[row - 1] |= _core.ROW_LAST | _core.ROW_OUTPUT
            hook.start_capture(layers, used, stop_after_last=True, site=_core.SITE_RESIDUAL)
            runner.decode(flags, slots, task="capture", doing="capturing words")
            sums, counts, _last = hook.capture_results()
            row = 0
            for k in group:
                for pos, _w in words[k]:
                    states[done] = (sums[row + pos] / np.maximum(counts[row + pos], 1)[:, None]).astype(np.float16)
                    done += 1
                row += len(tokens[k])
            runner.clear()
            print(f"\r  words of {group[-1] + 1} / {len(sentences)} sentences", end="", flush=True)
    finally:
        print()
        hook.stop_capture()
        runner.close()
    return [[w for _p, w in ws] for ws in words], states, offsets


def cached_word_states(llm: Any, model: str, name: str, sentences: list[str], layers: list[int]) -> tuple[Any, ...]:
    import numpy as np

    path = CACHE / model / f"token_map-{name}-L{'-'.join(map(str, layers))}.npz"
    for cached in sorted(path.parent.glob(f"token_map-{name}-L*.npz")):  # any that holds these layers
        held = [int(x) for x in cached.stem.rsplit("-L", 1)[1].split("-")]
        if set(layers) <= set(held):
            z = np.load(cached)
            return json.loads(str(z["words"])), z["states"][:, [held.index(il) for il in layers]], z["offsets"]
    t0 = time.time()
    words, states, offsets = word_states(llm, sentences, layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, words=json.dumps(words), states=states, offsets=offsets)
    print(f"  {name}: {len(states)} words read in {time.time() - t0:.0f} s", flush=True)
    return words, states, offsets


def lexicon_bitext(sib: str, sib_src: list[str], sib_en: list[str]) -> tuple[list[str], list[str]]:
    """Every parallel sentence pair the language has here: its SIB-200 train pairs (given), NTREX, Tatoeba."""
    src, en = list(sib_src), list(sib_en)
    ntrex, tatoeba = BITEXT[sib]
    src += (DATA / "ntrex" / f"ntrex.{ntrex}.txt").read_text(encoding="utf-8").splitlines()
    en += (DATA / "ntrex" / "ntrex.eng.txt").read_text(encoding="utf-8").splitlines()
    tat = DATA / "tatoeba" / f"tatoeba.{tatoeba}-eng.{tatoeba}"
    if tatoeba is not None:
        src += tat.read_text(encoding="utf-8").splitlines()
        en += tat.with_suffix(".eng").read_text(encoding="utf-8").splitlines()
    if len(src) != len(en):
        raise SystemExit(f"{sib}: the bitext's two sides differ in length ({len(src)} / {len(en)})")
    return src, en


def align(src_words: list[str], en_words: list[str], fwd: dict[tuple[str, str], float],
          bwd: dict[tuple[str, str], float]) -> list[tuple[int, int]]:
    """(source index, English index) where each word is the other's most probable translation
    in the sentence pair (the empty word counts: a word it wins stays unaligned)."""
    pairs = []
    for j, s in enumerate(src_words):
        i = max(range(-1, len(en_words)), key=lambda i: fwd.get((s, en_words[i] if i >= 0 else ""), 0.0))
        if i < 0:
            continue
        back = max(range(-1, len(src_words)), key=lambda k: bwd.get((en_words[i], src_words[k] if k >= 0 else ""), 0.0))
        if back == j:
            pairs.append((j, i))
    return pairs


def word_pairs(llm: Any, model: str, sib: str, layers: list[int]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """X, Y: float32 [rows, len(layers), width], the aligned source and English words of the 701
    SIB-200 train pairs and then the sinks (kept as they are); the English words' states (not
    sinks, float16); and what the alignment found."""
    import numpy as np

    from lingalign.data import read_pairs
    from lingalign.lexicon import ibm1, words_of

    src_text, en_text = read_pairs(sib_train(sib), sib_train("eng_Latn"))
    t0 = time.time()
    lex_src, lex_en = lexicon_bitext(sib, src_text, en_text)
    s_words = [words_of(x) for x in lex_src]
    e_words = [words_of(x) for x in lex_en]
    fwd, bwd = ibm1(s_words, e_words), ibm1(e_words, s_words)
    lexicon_s = time.time() - t0
    src_w, src_states, src_off = cached_word_states(llm, model, sib, src_text, layers)
    en_w, en_states, en_off = cached_word_states(llm, model, "eng_Latn", en_text, layers)
    # The sequence's first token holds the attention sink (states 100x longer than a word's):
    # such words are not paired, and every sink is a row the map must keep as it is.
    src_sink, en_sink = sinks(src_states), sinks(en_states)
    xs, ys, examples = [], [], []
    for k, (sw, ew) in enumerate(zip(src_w, en_w)):
        for j, i in align(sw, ew, fwd, bwd):
            if src_sink[src_off[k] + j] or en_sink[en_off[k] + i]:
                continue
            xs.append(src_off[k] + j)
            ys.append(en_off[k] + i)
            if k < 3:
                examples.append(f"{sw[j]}={ew[i]}")
    keep = np.concatenate([src_states[src_sink], en_states[en_sink]])
    info = {"lexicon_pairs": len(lex_src), "lexicon_seconds": round(lexicon_s, 1), "word_pairs": len(xs),
            "sink_rows": len(keep), "source_words": int(src_off[-1]), "english_words": int(en_off[-1]),
            "examples": examples}
    X = np.concatenate([src_states[xs], keep]).astype(np.float32)
    Y = np.concatenate([en_states[ys], keep]).astype(np.float32)
    return X, Y, en_states[~en_sink], info


def sinks(states: Any) -> Any:
    """Which word states (at any layer) are attention sinks: longer than 10 times the median."""
    import numpy as np

    norms = np.linalg.norm(states.astype(np.float32), axis=2)
    return (norms > 10 * np.median(norms, axis=0)).any(axis=1)


def record_path(out: Path, split: str, sib: str, layer: int, kind: str, alpha: float) -> Path:
    return out / f"sib200-{split}-{sib}-layer{layer}-{kind}-a{alpha:g}.json"


def run(args: argparse.Namespace, llm: Any) -> None:
    import numpy as np

    import lingalign
    from lingalign.evaluate import eval_choice
    from lingalign.fit import fit_ridge
    from lingalign.layer import LayerMap
    from lingalign.metrics import changed_answers, sign_test_p
    from lingalign.model import fingerprint
    from lingalign.tasks import load_task

    out = RESULTS / args.model
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python bench/token_map.py", *sys.argv[1:]])
    model = fingerprint(llm.model_path)
    for sib in args.langs:
        pending = {(layer, kind): [a for a in args.alphas
                                   if not record_path(out, args.split, sib, layer, kind, a).is_file()]
                   for layer in args.layers for kind in args.kinds}
        if not any(pending.values()):
            continue
        items = load_task(task_file("sib200", sib, args.split))
        none_path = out / f"sib200-{args.split}-{sib}-none.json"
        if not none_path.is_file():
            none = eval_choice(llm, items, lang=sib, progress=False)
            none_path.write_text(json.dumps({"command": command, "split": args.split, "lang": sib, "n": none["n"],
                                             "accuracy": none["accuracy"], "correct": none["correct"]}, indent=1)
                                 + "\n", encoding="utf-8")
        none = json.loads(none_path.read_text(encoding="utf-8"))
        X, Y, english, info = word_pairs(llm, args.model, sib, args.layers)
        print(f"  {sib}: {info['word_pairs']} word pairs of {info['source_words']} source words; "
              f"e.g. {', '.join(info['examples'][:12])}", flush=True)
        for li, layer in enumerate(args.layers):
            for kind in args.kinds:
                if not pending[(layer, kind)]:
                    continue
                Xk, Yk = X[:, li], Y[:, li]
                if kind == "shuffled":
                    pairs = info["word_pairs"]
                    Yk = np.concatenate([Yk[np.random.default_rng(0).permutation(pairs)], Yk[pairs:]])
                if kind == "keep-english":
                    kept = english[:, li].astype(np.float32)
                    Xk, Yk = np.concatenate([Xk, kept]), np.concatenate([Yk, kept])
                report: dict[str, float] = {}
                W, b, lam = fit_ridge(Xk, Yk, report=report)
                t = lingalign.Transform(layers={layer: LayerMap(matrix=W.astype(np.float32),
                                                                bias=None if b is None else b.astype(np.float32))},
                                        model=model, method="ridge", source_lang=sib)
                for alpha in pending[(layer, kind)]:
                    path = record_path(out, args.split, sib, layer, kind, alpha)
                    t0 = time.time()
                    res = eval_choice(llm, items, lang=sib, transform=t, alpha=alpha, progress=False)
                    fixed, broken = changed_answers(res["correct"], none["correct"])
                    rec = {"command": command, "model": args.model, "split": args.split, "lang": sib, "layer": layer,
                           "kind": kind, "alpha": alpha, "lambda": lam, **report, **info, "n": res["n"],
                           "accuracy": res["accuracy"], "accuracy_without": none["accuracy"], "fixed": fixed,
                           "broken": broken, "sign_p": sign_test_p(fixed, broken), "correct": res["correct"],
                           "seconds": round(time.time() - t0, 1),
                           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
                    path.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
                    print(f"  {path.stem}: accuracy {res['accuracy']:.3f} (without {none['accuracy']:.3f}), "
                          f"fixed {fixed} / broken {broken}, p {rec['sign_p']:.3f}; held-out MSE "
                          f"{report.get('heldout_mse_identity', 0):.2f} -> {report.get('heldout_mse_fitted', 0):.2f}",
                          flush=True)


def report() -> None:
    lines = ["# A map fitted on aligned words", "",
             "Made by `python bench/token_map.py` (records in `bench/results/token_map/<model>/`); this page by "
             "`python bench/token_map.py --report`.", "",
             *(line for par in __doc__.split("\n\n")[2:4] for line in (" ".join(par.split()), "")),
             "Word pairs: aligned pairs in the 701 train sentence pairs (of the source words there). Held-out "
             "MSE: the mean squared error per coordinate, before and after the map, on a fifth of the rows it "
             "is fitted on (word pairs, sinks and, for keep-english, English words; the ridge strength is "
             "chosen there). Fixed / broken against no transform on the same sentences; p: the one-sided sign "
             "test.", ""]
    for model_dir in sorted(p for p in RESULTS.glob("*") if p.is_dir()):
        recs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(model_dir.glob("*-a*.json"))]
        lines += [f"## {model_dir.name}", "",
                  "| split | language | layer | kind | alpha | word pairs | held-out MSE | n | no transform | with "
                  "| fixed / broken | p |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(recs, key=lambda r: (r["split"] != "dev", r["lang"], r["layer"], KINDS.index(r["kind"]),
                                             r["alpha"])):
            lines.append(f"| {r['split']} | {r['lang']} | {r['layer']} | {r['kind']} | {r['alpha']:g} | "
                         f"{r['word_pairs']} of {r['source_words']} | "
                         f"{r['heldout_mse_identity']:.2f} -> {r['heldout_mse_fitted']:.2f} | "
                         f"{r['n']} | {r['accuracy_without']:.3f} | {r['accuracy']:.3f} | {r['fixed']} / "
                         f"{r['broken']} | {r['sign_p']:.3f} |")
        lines.append("")
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--langs", default="swh_Latn,ind_Latn", help=f"SIB-200 codes, of {', '.join(BITEXT)}")
    ap.add_argument("--layers", default="8,12", help="layers to fit and apply the map at (one transform each)")
    ap.add_argument("--alphas", default="0.5,1")
    ap.add_argument("--split", default="dev", choices=("dev", "test"), help="SIB-200 split scored (all its sentences)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "python"))
    if args.report:
        report()
        return
    args.langs = args.langs.split(",")
    unknown = sorted(set(args.langs) - set(BITEXT))
    if unknown:
        raise SystemExit(f"no bitext for {unknown} (of {', '.join(BITEXT)})")
    args.layers = [int(x) for x in args.layers.split(",")]
    args.alphas = [float(x) for x in args.alphas.split(",")]
    args.kinds = args.kinds.split(",")
    from lingalign.hook import open_model

    llm = open_model(args.model, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads)
    run(args, llm)


if __name__ == "__main__":
    main()
