"""The fingerprint that ties a transform to a model, read from a GGUF header (the models known
by name are in `models`).

The fingerprint is read from the GGUF header without loading the model: architecture, width
and depth, a hash of the tokenizer's vocabulary (same vocabulary = same model family, so hidden
states are comparable) and a hash of the tensor layout plus samples of the weights (identifies the
exact file; a different quantization of the same model differs only here).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ModelFileError, ModelMismatchError
from .models import DEFAULT_MODEL_FILE, cache_dir, default_model_path, resolve_model  # noqa: F401  (their old home)


# GGUF value types (gguf.h): size in bytes of the fixed-size ones.
_FIXED_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_SCALAR_FORMAT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_WEIGHT_SAMPLES = 16
_WEIGHT_SAMPLE_BYTES = 1 << 16


@dataclass(frozen=True)
class ModelFingerprint:
    """What a transform records about the model it was fitted on."""

    architecture: str
    n_embd: int
    n_layer: int
    vocab_sha256: str
    weights_sha256: str
    name: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def check(self, model: ModelFingerprint, *, force: bool = False, what: str = "transform") -> list[str]:
        """Raise ModelMismatchError if a transform made for `self` cannot serve `model`.

        Width and depth must always match (the shapes depend on them). A different architecture or
        vocabulary means another model: refused unless `force`. Different weights with the same
        vocabulary (another quantization or a fine-tune) only give a warning. Returns the warnings.
        """
        if not self.vocab_sha256:  # a llama.cpp control vector: only an architecture and a width
            if self.n_embd != model.n_embd or self.n_layer > model.n_layer:
                raise ModelMismatchError(
                    f"{what} needs n_embd={self.n_embd} and at least {self.n_layer} layers; this model has "
                    f"n_embd={model.n_embd}, n_layer={model.n_layer}"
                )
            if self.architecture and self.architecture != model.architecture and not force:
                raise ModelMismatchError(
                    f"{what} is for {self.architecture} models; this is {model.architecture}; use --force to apply it anyway"
                )
            return [f"{what} carries no model fingerprint (a llama.cpp control vector): only the architecture and "
                    f"width were checked"]
        if (self.n_embd, self.n_layer) != (model.n_embd, model.n_layer):
            raise ModelMismatchError(
                f"{what} is for a model with n_embd={self.n_embd}, n_layer={self.n_layer}; "
                f"this model has n_embd={model.n_embd}, n_layer={model.n_layer}"
            )
        warnings: list[str] = []
        if self.architecture != model.architecture or self.vocab_sha256 != model.vocab_sha256:
            message = (
                f"{what} was made for another model ({self.name or self.architecture}, vocabulary "
                f"{self.vocab_sha256[:12]}); this is {model.name or model.architecture} (vocabulary "
                f"{model.vocab_sha256[:12]})"
            )
            if not force:
                raise ModelMismatchError(message + "; use force=True / --force to apply it anyway")
            warnings.append(message)
        elif self.weights_sha256 != model.weights_sha256:
            warnings.append(
                f"{what} was fitted on other weights of the same model family "
                f"({self.name or self.architecture}); results may differ"
            )
        return warnings


class _Cursor:
    """Bounds-checked little-endian reader over the GGUF header bytes."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise ModelFileError(f"{self.path}: truncated GGUF header")
        self.pos += n
        return start

    def scalar(self, fmt: str) -> int | float | bool:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, start)[0]

    def string(self) -> str:
        n = int(self.scalar("<Q"))
        start = self.take(n)
        return bytes(self.buf[start : start + n]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(int(self.scalar("<Q")))

    def skip_value(self, vtype: int) -> None:
        if vtype in _FIXED_SIZE:
            self.take(_FIXED_SIZE[vtype])
        elif vtype == _STRING:
            self.skip_string()
        elif vtype == _ARRAY:
            etype, count = int(self.scalar("<I")), int(self.scalar("<Q"))
            if etype in _FIXED_SIZE:
                self.take(_FIXED_SIZE[etype] * count)
            else:
                for _ in range(count):
                    self.skip_value(etype)
        else:
            raise ModelFileError(f"{self.path}: unknown GGUF value type {vtype}")


@contextlib.contextmanager
def _mapped_gguf(p: Path) -> Iterator[mmap.mmap]:
    """The model file mapped read-only, once its size and magic say it is a GGUF file."""
    with open(p, "rb") as f:
        if os.fstat(f.fileno()).st_size < 24:
            raise ModelFileError(f"{p}: not a GGUF model file (too small)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if bytes(buf[0:4]) != b"GGUF":
                raise ModelFileError(f"{p}: not a GGUF model file")
            yield buf


@lru_cache(maxsize=16)
def _fingerprint_cached(path: str, size: int, mtime_ns: int) -> ModelFingerprint:
    p = Path(path)
    with _mapped_gguf(p) as buf:
        return _parse_fingerprint(buf, p, size)


@dataclass
class GGUFHeader:
    """What the bounds-checked header walk found: scalar metadata, byte ranges and tensor infos."""

    scalars: dict[str, object]
    ranges: dict[str, tuple[int, int]]  # key -> byte range of its value
    tensors: list[tuple[str, tuple[int, ...], int, int]]  # name, dims (ggml order), type, offset
    info_range: tuple[int, int]
    data_start: int


_MAX_ENTRIES = 1 << 20  # KV pairs or tensors: more is not a real file, and would be slow to walk


def scan_gguf(buf: mmap.mmap | bytes, path: Path) -> GGUFHeader:
    """Walk a GGUF header, checking every length and count against the file size.

    Raises ModelFileError naming the problem; never allocates by a count read from the file.
    """
    cur = _Cursor(buf, path)
    if bytes(buf[0:4]) != b"GGUF":
        raise ModelFileError(f"{path}: not a GGUF file")
    cur.take(4)
    version = int(cur.scalar("<I"))
    if version not in (2, 3):
        raise ModelFileError(f"{path}: unsupported GGUF version {version}")
    n_tensors, n_kv = int(cur.scalar("<Q")), int(cur.scalar("<Q"))
    if n_tensors > _MAX_ENTRIES or n_kv > _MAX_ENTRIES:
        raise ModelFileError(f"{path}: corrupt GGUF header ({n_kv} metadata entries, {n_tensors} tensors)")
    scalars: dict[str, object] = {}
    ranges: dict[str, tuple[int, int]] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = int(cur.scalar("<I"))
        start = cur.pos
        if vtype in _SCALAR_FORMAT:
            scalars[key] = cur.scalar(_SCALAR_FORMAT[vtype])
        elif vtype == _STRING:
            scalars[key] = cur.string()
        else:
            cur.skip_value(vtype)
        ranges[key] = (start, cur.pos)
    info_start = cur.pos
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = int(cur.scalar("<I"))
        if n_dims > 4:
            raise ModelFileError(f"{path}: tensor {name!r} has {n_dims} dimensions")
        dims = tuple(int(cur.scalar("<Q")) for _ in range(n_dims))
        ttype = int(cur.scalar("<I"))
        offset = int(cur.scalar("<Q"))
        tensors.append((name, dims, ttype, offset))
    info_end = cur.pos
    alignment = int(scalars.get("general.alignment", 32))  # type: ignore[arg-type]
    if alignment <= 0 or alignment & (alignment - 1):
        raise ModelFileError(f"{path}: bad GGUF alignment {alignment}")
    data_start = (info_end + alignment - 1) // alignment * alignment
    return GGUFHeader(scalars, ranges, tensors, (info_start, info_end), data_start)


def _parse_fingerprint(buf: mmap.mmap, p: Path, size: int) -> ModelFingerprint:
    header = scan_gguf(buf, p)
    scalars = header.scalars
    arch = str(scalars.get("general.architecture", ""))
    try:
        n_embd = int(scalars[f"{arch}.embedding_length"])  # type: ignore[arg-type]
        n_layer = int(scalars[f"{arch}.block_count"])  # type: ignore[arg-type]
    except KeyError as e:
        raise ModelFileError(f"{p}: GGUF file has no {e.args[0]} (not a language model?)") from None
    vocab_range = header.ranges.get("tokenizer.ggml.tokens")
    if vocab_range is None:
        raise ModelFileError(f"{p}: GGUF file has no tokenizer.ggml.tokens")

    vocab = hashlib.sha256(buf[vocab_range[0] : vocab_range[1]]).hexdigest()
    weights = hashlib.sha256(buf[header.info_range[0] : header.info_range[1]])
    data_start = header.data_start
    span = max(size - data_start, 0)
    for k in range(_WEIGHT_SAMPLES):
        off = data_start + span * k // _WEIGHT_SAMPLES
        weights.update(buf[off : min(off + _WEIGHT_SAMPLE_BYTES, size)])
    return ModelFingerprint(
        architecture=arch,
        n_embd=n_embd,
        n_layer=n_layer,
        vocab_sha256=vocab,
        weights_sha256=weights.hexdigest(),
        name=str(scalars.get("general.name", "")),
    )


def fingerprint(path: str | os.PathLike[str]) -> ModelFingerprint:
    """Fingerprint of a GGUF model file (cached per path, size and modification time)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ModelFileError(f"model file not found: {p}") from e
    return _fingerprint_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


def model_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The scalar GGUF metadata of a model file, as strings (what llama-cpp-python's `metadata`
    holds), read without loading the model."""
    p = Path(path)
    try:
        with _mapped_gguf(p) as buf:
            scalars = scan_gguf(buf, p).scalars
    except OSError as e:
        raise ModelFileError(f"cannot read model file {p}: {e}") from None
    return {k: str(v) for k, v in scalars.items()}
