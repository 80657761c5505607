"""docs/pca.png: sentences of several languages before and after their shipped transforms, in the
first two principal components of one layer's states (default model, embedded corpus).

    python bench/pca_picture.py [--langs spa,deu,swh,tur] [--n 120]

Each language is read with its own shipped transform active (matrices/<lang>-eng.gguf, at the
transform's layer and defaults); the picture is of that layer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lingalign
from lingalign.data import embedded_path, read_lines, shipped_transform_path
from lingalign.plots import plot_pca

OUT = Path(__file__).resolve().parent.parent / "docs" / "pca.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--langs", default="spa,deu,swh,tur")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llm = lingalign.load(n_ctx=512, n_threads=args.threads, n_threads_batch=args.threads)
    langs = args.langs.split(",")
    transforms = {lang: lingalign.Transform.load(shipped_transform_path(lang)) for lang in langs}
    layer = max(next(iter(t.layers)) for t in transforms.values())
    english = lingalign.capture(llm, read_lines(embedded_path("eng"), limit=args.n), layers=[layer]).layer(layer)
    before, after = {}, {}
    for lang in langs:
        sentences = read_lines(embedded_path(lang), limit=args.n)
        before[lang] = lingalign.capture(llm, sentences, layers=[layer]).layer(layer)
        after[lang] = lingalign.capture(llm, sentences, layers=[layer], transform=transforms[lang]).layer(layer)
    plot_pca(before, after, english, OUT, title=f"Gemma 3 270M, layer {layer}: {args.n} embedded sentences a language "
                                               f"and their English translations (lines: the first 12 pairs)")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
