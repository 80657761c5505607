"""What `lingalign serve` runs with: the model, the transforms, the default, the address."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models import DEFAULT_MODEL, KNOWN_MODELS

if TYPE_CHECKING:
    from .lexicons import Lexicons


@dataclass(frozen=True)
class ServeConfig:
    """A server's settings (the CLI's options; tests and benchmarks build one directly).

    `default` is what a request without a `lingalign` field gets: a transform's name, "auto"
    or None (no transform). `interrupt_requests` keeps llama-cpp-python's behaviour of cutting
    a running stream short when another request arrives; lingalign's default is off, so every
    request runs to its end, in arrival order.
    """

    model: str | None = None  # a GGUF file or a known model's name (None: the default model)
    transform_dirs: tuple[Path, ...] = ()
    shipped: bool = False  # also serve lingalign.data.shipped_dir()
    default: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    api_key: str | None = None
    n_ctx: int = 2048
    n_threads: int | None = None  # None: llama-cpp-python's server default
    n_gpu_layers: int = 0
    interrupt_requests: bool = False
    force: bool = False  # serve transforms made for another model of the same shape
    lexicon: str = "none"  # "auto": read requests through their language's lexicon where measured to help
    lexicon_files: tuple[Path, ...] = ()  # the user's lexicons, before the shipped ones (serve/lexicons.py)
    verbose: bool = False

    def dirs(self) -> list[Path]:
        """The folders whose transforms are served, --transforms first, then the shipped set."""
        from ..data import shipped_dir

        return [Path(d) for d in self.transform_dirs] + ([shipped_dir()] if self.shipped else [])

    def lexicons(self) -> Lexicons:
        """The lexicons requests are read through (the user's files, then the shipped ones) and
        the languages read unless a request says (serve/lexicons.py)."""
        from .lexicons import Lexicons

        return Lexicons.load(self.lexicon_files, self.lexicon, self.model)

    def model_alias(self) -> str:
        """The model's id in /v1/models and responses: its known name, or its file name."""
        if self.model is None:
            return DEFAULT_MODEL
        return self.model if self.model in KNOWN_MODELS else Path(self.model).stem

    def model_settings(self, model_path: Path) -> dict[str, Any]:
        """Keyword arguments of llama_cpp.server.settings.ModelSettings for this server."""
        out: dict[str, Any] = {"model": str(model_path), "model_alias": self.model_alias(), "n_ctx": self.n_ctx,
                               "n_gpu_layers": self.n_gpu_layers, "verbose": self.verbose}
        if self.n_threads is not None:
            # both: llama-cpp-python would otherwise run prompts on every core
            out.update(n_threads=self.n_threads, n_threads_batch=self.n_threads)
        return out
