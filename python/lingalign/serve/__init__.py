"""`lingalign serve`: llama-cpp-python's OpenAI-compatible server, steering each request.

A request may carry `"lingalign": {"transform": NAME | "auto" | null, "alpha": A,
"positions": P}`; the response says what was applied (header `x-lingalign-transform`, and a
`lingalign` object in the JSON and in every streamed chunk). docs/serve.md has the details.

    from lingalign.serve import ServeConfig, run
    run(ServeConfig(shipped=True, default="auto"))

Modules: config (the settings), catalog (the served transforms by name), lexicons (the word
lexicons prompts are read through, the user's before the shipped ones), selection (the
request field and what it selects; no server packages needed), app (the HTTP side, built on
llama_cpp.server; needs `pip install "lingalign[server]"`).
"""

from __future__ import annotations

from typing import Any

from ..errors import LingalignError
from .config import ServeConfig

__all__ = ["ServeConfig", "create_app", "run"]


def _app_module() -> Any:
    try:
        from . import app
    except ImportError as e:
        raise LingalignError(f'lingalign serve needs the server extra: pip install "lingalign[server]" '
                             f"({e.name or e} is missing)") from None
    return app


def create_app(config: ServeConfig) -> Any:
    """The FastAPI app for `config`, its model loaded and its transforms prepared. One per
    process: llama-cpp-python's server keeps its model and lock in module globals."""
    return _app_module().create_app(config)


def run(config: ServeConfig) -> None:
    """Serve `config` until interrupted; prints the address it listens on to stderr."""
    _app_module().run(config)
