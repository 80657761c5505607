"""The `lingalign` command: capture, fit, run, serve, eval, tune, export, convert, pull, push, list,
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

from .commands import COMMANDS
from .commands.options import Parents
from .errors import LingalignError


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
        from ._llama import install_error_only_log

        install_error_only_log()
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
