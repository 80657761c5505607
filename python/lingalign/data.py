"""Parallel text: line-aligned files, and the corpus embedded in the package.

The embedded corpus (data/parallel/<lang>.txt) is 240 everyday sentences written for lingalign,
line-aligned across English and seven other languages, two of them low-resource (Swahili, Tamil).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import LingalignError

EMBEDDED_LANGUAGES = ("eng", "spa", "deu", "cmn", "ind", "tur", "swh", "tam")
LANGUAGE_NAMES = {
    "eng": "English",
    "spa": "Spanish",
    "deu": "German",
    "cmn": "Chinese",
    "ind": "Indonesian",
    "tur": "Turkish",
    "swh": "Swahili",
    "tam": "Tamil",
    "yor": "Yoruba",
    "hau": "Hausa",
    "rus": "Russian",
    "ara": "Arabic",
    "hin": "Hindi",
    "ita": "Italian",
    "vie": "Vietnamese",
    "jpn": "Japanese",
    "fra": "French",
    "por": "Portuguese",
    "kor": "Korean",
    "pol": "Polish",
    "nld": "Dutch",
    "tha": "Thai",
    "est": "Estonian",
}


# ISO 639-1 codes people type, to the ISO 639-3 codes the data and files use.
# ISO 639-1 -> the ISO 639-3 code lingalign keys languages by: every two-letter code the language
# detector (py3langid) reports, so that a detected language and a user's file for it (a
# transform's or a lexicon's source_lang) meet under one code. Swahili, Chinese and Malay follow
# the shared data and the shipped files (swh, cmn; Malay read as Indonesian); the others are the
# standard ISO 639-3 codes (macrolanguages where ISO 639-1 names one).
ISO_639_1 = {
    "af": "afr", "am": "amh", "an": "arg", "ar": "ara", "as": "asm", "az": "aze", "ba": "bak", "be": "bel",
    "bg": "bul", "bn": "ben", "br": "bre", "bs": "bos", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan",
    "de": "deu", "dz": "dzo", "el": "ell", "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus",
    "fa": "fas", "ff": "ful", "fi": "fin", "fo": "fao", "fr": "fra", "fy": "fry", "ga": "gle", "gd": "gla",
    "gl": "glg", "gu": "guj", "ha": "hau", "he": "heb", "hi": "hin", "hr": "hrv", "ht": "hat", "hu": "hun",
    "hy": "hye", "id": "ind", "ig": "ibo", "is": "isl", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat",
    "kk": "kaz", "km": "khm", "kn": "kan", "ko": "kor", "ku": "kur", "ky": "kir", "la": "lat", "lb": "ltz",
    "lg": "lug", "ln": "lin", "lo": "lao", "lt": "lit", "lv": "lav", "mg": "mlg", "mk": "mkd", "ml": "mal",
    "mn": "mon", "mr": "mar", "ms": "ind", "mt": "mlt", "my": "mya", "ne": "nep", "nl": "nld", "nn": "nno",
    "no": "nor", "ny": "nya", "oc": "oci", "om": "orm", "or": "ori", "pa": "pan", "pl": "pol", "ps": "pus",
    "pt": "por", "qu": "que", "ro": "ron", "ru": "rus", "rw": "kin", "sa": "san", "se": "sme", "si": "sin",
    "sk": "slk", "sl": "slv", "sn": "sna", "so": "som", "sq": "sqi", "sr": "srp", "st": "sot", "sv": "swe",
    "sw": "swh", "ta": "tam", "te": "tel", "tg": "tgk", "th": "tha", "ti": "tir", "tk": "tuk", "tl": "tgl",
    "tn": "tsn", "tr": "tur", "ts": "tso", "tt": "tat", "ug": "uig", "uk": "ukr", "ur": "urd", "uz": "uzb",
    "vi": "vie", "vo": "vol", "wa": "wln", "wo": "wol", "xh": "xho", "yo": "yor", "zh": "cmn", "zu": "zul",
}


# macrolanguage and FLORES-200 (SIB-200) codes, to the codes the detector's languages map to
# above: a transform fitted on sib200/pes_Arab/train.tsv meets a prompt detected as "fa"
ALIASES_639_3 = {"swa": "swh", "zho": "cmn", "arb": "ara", "msa": "ind", "zsm": "ind",
                 "pes": "fas", "prs": "fas", "npi": "nep", "uzn": "uzb", "lvs": "lav", "ekk": "est", "khk": "mon",
                 "pbt": "pus", "plt": "mlg", "als": "sqi", "gaz": "orm", "quy": "que", "azj": "aze", "kmr": "kur",
                 "ory": "ori", "nob": "nor"}


def normalize_lang(code: str) -> str:
    """'sw', 'swh', 'swa' or 'swh_Latn' -> 'swh'; 'zh', 'zho_Hans' -> 'cmn'."""
    c = code.strip().lower().split("_")[0]
    c = ISO_639_1.get(c, c)
    return ALIASES_639_3.get(c, c)


def shipped_model_name(model: str | os.PathLike[str] | None = None) -> str:
    """The known model a --model value names (a name, or a known model's cache file); None and
    any other file: the default model, whose set is shipped at the top of matrices/."""
    from .models import DEFAULT_MODEL, KNOWN_MODELS, known_model_of

    if model is None:
        return DEFAULT_MODEL
    if str(model) in KNOWN_MODELS:
        return str(model)
    known = known_model_of(model)
    return known.name if known is not None else DEFAULT_MODEL


def shipped_dir(model: str | os.PathLike[str] | None = None) -> Path:
    """Where the transforms shipped for a model are installed: matrices/ for the default model,
    matrices/<name>/ for another known one."""
    from .models import DEFAULT_MODEL

    root = Path(str(resources.files("lingalign").joinpath("matrices")))
    name = shipped_model_name(model)
    return root if name == DEFAULT_MODEL else root / name


def shipped_transform_path(lang: str, model: str | os.PathLike[str] | None = None) -> Path:
    """The shipped <lang>-eng transform for `model` (default: the default model)."""
    code = normalize_lang(lang)
    where = shipped_dir(model)
    path = where / f"{code}-eng.gguf"
    if not path.is_file():
        have = sorted(p.name.split("-")[0] for p in where.glob("*-eng.gguf")) if where.is_dir() else []
        raise LingalignError(f"no shipped transform for {lang!r} on {shipped_model_name(model)} "
                             f"(shipped: {', '.join(have) or 'none'}); fit one with lingalign fit")
    return path


def shipped_entry(lang: str, model: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The shipped manifest's entry for the <lang>-eng transform: its data, settings and what was
    measured of it ({} when there is none)."""
    try:
        manifest = json.loads((shipped_dir(model) / "manifest.json").read_text(encoding="utf-8"))
        entry = manifest["transforms"][normalize_lang(lang)]
    except (OSError, KeyError, ValueError, TypeError):
        return {}
    return entry if isinstance(entry, dict) else {}


def shipped_task_results(lang: str, model: str | os.PathLike[str] | None = None) -> list[str]:
    """What the shipped manifest records of the <lang>-eng transform on task test data, one line
    per task: accuracy without and with it (and answer-language fidelity), so that a user of a
    shipped transform sees what it was measured to do. [] when none is recorded."""
    measured = shipped_entry(lang, model).get("measured", {})
    out = []
    for name, m in sorted(measured.items()):
        if not isinstance(m, dict) or "accuracy" not in m or "accuracy_without" not in m:
            continue  # retrieval measurements (the default model's set) are in docs/results.md
        line = f"{name} (n={m.get('n', '?')}): accuracy {m['accuracy_without']:.3f} without, {m['accuracy']:.3f} with"
        if "fidelity" in m and "fidelity_without" in m:
            line += f"; answers in the language {m['fidelity_without']:.2f} without, {m['fidelity']:.2f} with"
        out.append(line)
    return out


def shipped_lexicon_path(lang: str) -> Path | None:
    """The word lexicon shipped for a language (lexicons/<code>.tsv, learned by `python
    bench/gloss.py --ship`; the same for every model), None when none is shipped."""
    path = Path(str(resources.files("lingalign").joinpath("lexicons", f"{normalize_lang(lang)}.tsv")))
    return path if path.is_file() else None


def shipped_lexicon_languages() -> list[str]:
    """The languages a lexicon is shipped for (ISO 639-3)."""
    folder = Path(str(resources.files("lingalign").joinpath("lexicons")))
    return sorted(p.stem for p in folder.glob("*.tsv"))


def shipped_lexicon_entry(lang: str) -> dict[str, Any]:
    """The shipped lexicons' manifest entry for a language: its data and what was measured with
    it, per model ({} when there is none)."""
    try:
        manifest = json.loads(Path(str(resources.files("lingalign").joinpath("lexicons", "manifest.json")))
                              .read_text(encoding="utf-8"))
        entry = manifest["lexicons"][normalize_lang(lang)]
    except (OSError, KeyError, ValueError, TypeError):
        return {}
    return entry if isinstance(entry, dict) else {}


def shipped_lexicon_reads(model: str | os.PathLike[str] | None = None) -> frozenset[str]:
    """The languages whose shipped lexicon the manifest's rule reads prompts through by default
    with this model (`run --lang`, `serve --lexicon auto`): measured with it, answers kept in the
    language on dev texts and SIB-200 dev accuracy not lowered (bench/gloss.py). None for a model
    file lingalign does not know."""
    from .models import KNOWN_MODELS, known_model_of

    if model is not None and str(model) not in KNOWN_MODELS and known_model_of(model) is None:
        return frozenset()
    name = shipped_model_name(model)
    return frozenset(lang for lang in shipped_lexicon_languages()
                     if (shipped_lexicon_entry(lang).get("rule", {}).get(name) or {}).get("reads"))


def embedded_path(lang: str) -> Path:
    """Path of the embedded corpus file for `lang` (ISO 639-3 code)."""
    if lang not in EMBEDDED_LANGUAGES:
        raise LingalignError(f"no embedded data for {lang!r} (have {', '.join(EMBEDDED_LANGUAGES)})")
    return Path(str(resources.files("lingalign").joinpath("data", "parallel", f"{lang}.txt")))


SIB_HEADER = "index_id\tcategory\ttext"


def _sib_texts(p: Path, lines: list[str]) -> tuple[list[str], list[str]]:
    """(index ids, texts) of a SIB-200 tsv's rows."""
    ids, texts = [], []
    for n, line in enumerate(lines[1:], 2):
        cols = line.split("\t")
        if len(cols) != 3:
            raise LingalignError(f"{p}:{n}: {len(cols)} columns, expected 3 (index_id, category, text)")
        ids.append(cols[0])
        texts.append(cols[2])
    return ids, texts


def _file_lines(path: str | os.PathLike[str]) -> tuple[list[str], list[str] | None]:
    """(sentences, SIB-200 index ids or None) of a text file (a sentence per line) or of a
    SIB-200 tsv (its text column)."""
    p = Path(path)
    if not p.is_file():
        raise LingalignError(f"text file not found: {p}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise LingalignError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if lines and lines[0] == SIB_HEADER:
        ids, texts = _sib_texts(p, lines)
        return texts, ids
    return lines, None


def read_lines(path: str | os.PathLike[str], *, skip: int = 0, limit: int | None = None) -> list[str]:
    """Sentences of a UTF-8 text file (one a line) or of a SIB-200 tsv (its `text` column), after
    `skip`, at most `limit`."""
    lines, _ = _file_lines(path)
    if skip < 0 or (limit is not None and limit < 0):
        raise LingalignError("--skip and --limit must be >= 0")
    lines = lines[skip:]
    if limit is not None:
        lines = lines[:limit]
    return lines


def read_pairs(
    src: str | os.PathLike[str], tgt: str | os.PathLike[str], *, skip: int = 0, limit: int | None = None
) -> tuple[list[str], list[str]]:
    """Line-aligned sentence pairs (text files, or SIB-200 tsv files of the same split: 701 FLORES
    pairs in train); refuses files of different lengths, SIB-200 rows that are not the same
    sentences (index_id), and empty lines."""
    (a_all, a_ids), (b_all, b_ids) = _file_lines(src), _file_lines(tgt)
    if len(a_all) != len(b_all):
        raise LingalignError(f"{src} has {len(a_all)} lines but {tgt} has {len(b_all)}: files must be line-aligned")
    if a_ids is not None and b_ids is not None and a_ids != b_ids:
        k = next(i for i, (x, y) in enumerate(zip(a_ids, b_ids)) if x != y)
        raise LingalignError(f"{src} and {tgt} differ at row {k + 2} (index_id {a_ids[k]} vs {b_ids[k]}): not the same split")
    a, b = read_lines(src, skip=skip, limit=limit), read_lines(tgt, skip=skip, limit=limit)
    for i, (x, y) in enumerate(zip(a, b)):
        if not x.strip() or not y.strip():
            raise LingalignError(f"line {skip + i + 1} is empty in {src if not x.strip() else tgt}")
    if not a:
        raise LingalignError(f"no sentence pairs selected from {src} (skip={skip}, limit={limit})")
    return a, b


def lines_sha256(lines: list[str]) -> str:
    """Hash of the selected lines, recorded in a transform's fit_info."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
