"""The `lingalign` subcommands, one module each (lingalign.cli builds the parser from them).

Each module has `register(subparsers, parents)`, which adds its subparser(s) with `func` set to
the command function, and the command function(s). `options` holds the option groups several
commands share (argparse parents), `common` the helpers they share. Heavy modules (llama_cpp,
the hook) are imported inside the command functions, when a command runs.
"""

from __future__ import annotations

from . import bench, capture, check, convert, demo, eval, export, fit, hub, info, lexicon, models, run, serve, tune

# In the order `lingalign --help` lists them (hub: pull, push, list).
COMMANDS = (capture, fit, lexicon, run, serve, eval, tune, check, export, convert, hub, info, models, bench, demo)
