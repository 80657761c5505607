"""The `lingalign` command: capture, fit, run, eval, tune, export, convert, pull, push, list,
info, bench, demo.

Each command lives in its own module of lingalign.commands, which registers its subparser;
this module builds the top-level parser, dispatches, and turns errors into one line and an
exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .commands import COMMANDS
from .commands.options import Parents
from .errors import LingalignError


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lingalign",
        description="Cross-lingual alignment interventions for GGUF models in llama.cpp.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = Parents()
    for command in COMMANDS:
        command.register(sub, parents)
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
