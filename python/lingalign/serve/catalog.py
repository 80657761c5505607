"""The transforms a server offers, by name.

Each is read and checked against the served model's file before the model loads (so a wrong
transform stops the server at once), prepared (packed for the hook) once when it has loaded,
and then only looked up: a request names a transform by its listed name, never by a path.
A request's own alpha or position policy is a variant of the prepared transform that shares
its packed maps (Prepared.with_settings), so it costs no packing either.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import normalize_lang
from ..errors import LingalignError, RequestError
from ..model import ModelFingerprint
from ..prepared import Prepared
from ..transform import Transform

# A name travels in a response header and in request bodies: keep it to characters both take
# as they are.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# What a request or --default may say besides a name (lingalign.serve.selection): no transform
# may be called so.
RESERVED = ("auto", "none")
# Variants (name, alpha, positions) kept alive: llama-cpp-python reuses a cached prompt prefix
# only while the same Prepared object stays selected, so a client repeating its settings keeps
# that reuse; the bound keeps memory flat whatever settings clients send.
VARIANTS = 64


@dataclass(frozen=True)
class TransformFile:
    """A transform read for serving: its name (the file name without .gguf), its file, and the
    warnings the check against the served model gave."""

    name: str
    path: Path
    transform: Transform
    warnings: tuple[str, ...]


def read_transforms(dirs: Sequence[Path], model: ModelFingerprint, *, force: bool = False) -> list[TransformFile]:
    """Every *.gguf file in `dirs` (not their subfolders), checked against `model`, in folder
    order then name order. Raises LingalignError naming the file for one that cannot serve the
    model, an unusable name, or a name two files share."""
    files: list[TransformFile] = []
    seen: dict[str, Path] = {}
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise LingalignError(f"{folder}: not a folder of transforms")
        paths = sorted(folder.glob("*.gguf"))
        if not paths:
            raise LingalignError(f"{folder}: no .gguf transform in this folder")
        for path in paths:
            name = path.stem
            if not NAME.fullmatch(name):
                raise LingalignError(f"{path}: a served transform is named by its file name, which must be up to 64 "
                                     f"letters, digits and ._+- (starting with a letter or digit): rename it")
            if name in RESERVED:
                raise LingalignError(f"{path}: {name!r} means something else to the server; rename the file")
            if name in seen:
                raise LingalignError(f"{seen[name]} and {path} would both be served as {name!r}: rename one")
            transform = Transform.load(path)
            try:
                warnings = transform.model.check(model, force=force)
            except LingalignError as e:
                raise type(e)(f"{path}: {e}") from None
            seen[name] = path
            files.append(TransformFile(name, path, transform, tuple(warnings)))
    return files


@dataclass(frozen=True)
class Entry:
    """A served transform: its file and its prepared form at the file's own alpha and positions."""

    file: TransformFile
    prepared: Prepared

    @property
    def name(self) -> str:
        return self.file.name

    def describe(self, *, auto: bool) -> dict[str, Any]:
        """Its line in GET /v1/lingalign/transforms; `auto`: routing picks it for its language."""
        t = self.file.transform
        return {"name": self.name, "method": t.method, "source_lang": t.source_lang or None,
                "target_lang": t.target_lang or None, "alpha": self.prepared.alpha,
                "positions": self.prepared.positions, "layers": list(self.prepared.layers), "auto": auto,
                "file": self.file.path.name, "warnings": list(self.file.warnings)}


class Catalog:
    """The served transforms by name, the one routing picks per language, and per-request
    variants. Lookups are thread-safe."""

    def __init__(self, entries: Iterable[Entry], *, variants: int = VARIANTS) -> None:
        self.entries: dict[str, Entry] = {}
        self.by_language: dict[str, Entry] = {}
        for e in entries:
            self.entries[e.name] = e
            if e.file.transform.source_lang:
                # the first listed transform of a language is the one `auto` picks (listed as such)
                self.by_language.setdefault(normalize_lang(e.file.transform.source_lang), e)
        self._variants: OrderedDict[tuple[str, float, str], Prepared] = OrderedDict()
        self._max_variants = variants
        self._lock = threading.Lock()

    @classmethod
    def prepare(cls, files: Sequence[TransformFile], steering: Any, *, force: bool = False) -> Catalog:
        """Pack every file's transform for `steering`'s hook (a lingalign Steering)."""
        entries = []
        for f in files:
            try:
                entries.append(Entry(f, steering.prepare(f.transform, force=force)))
            except LingalignError as e:
                raise type(e)(f"{f.path}: {e}") from None
        return cls(entries)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> Entry:
        """The transform listed as `name`; RequestError if there is none."""
        e = self.entries.get(name)
        if e is None:
            have = ", ".join(self.entries) or "none"
            raise RequestError(f"unknown transform {name!r} (this server has: {have}; GET /v1/lingalign/transforms)")
        return e

    def for_language(self, lang: str | None) -> Entry | None:
        """The transform `auto` picks for text in `lang` (ISO 639-3), or None."""
        return self.by_language.get(lang) if lang else None

    def prepared(self, name: str, alpha: float | None = None, positions: str | None = None) -> Prepared:
        """The prepared transform `name` at `alpha` and `positions` (None: its own); the same
        object for the same settings while they stay among the last VARIANTS used."""
        base = self.entry(name).prepared
        a = base.alpha if alpha is None else alpha
        p = base.positions if positions is None else positions
        if a == base.alpha and p == base.positions:
            return base
        key = (name, a, p)
        with self._lock:
            variant = self._variants.get(key)
            if variant is not None:
                self._variants.move_to_end(key)
                return variant
            try:
                variant = base.with_settings(alpha=a, positions=p)
            except LingalignError as e:
                raise RequestError(str(e)) from None
            self._variants[key] = variant
            if len(self._variants) > self._max_variants:
                self._variants.popitem(last=False)
            return variant

    def describe(self) -> list[dict[str, Any]]:
        routed = {id(e) for e in self.by_language.values()}
        return [e.describe(auto=id(e) in routed) for e in self.entries.values()]
