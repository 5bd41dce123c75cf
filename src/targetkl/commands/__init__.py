"""The subcommands of ``targetkl``, one module each.

A command module gives ``NAME`` (as typed), ``HELP`` (its line in ``targetkl --help``), ``DESCRIPTION`` (what it
does and what it writes), ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status). Adding a
subcommand is one module plus its name in ``COMMANDS``; :mod:`targetkl.cli` builds the parser from them and
turns ``UserError`` into a one-line message. Options shared by several commands live in
:mod:`targetkl.commands.common`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# In the order `targetkl --help` lists them: the whole job, data, training and measuring, generation, files.
COMMANDS = ("demo", "corpus", "index", "train", "eval", "sweep", "controllers", "sanity", "pre_encode", "gen_train",
            "generate", "select", "listen", "encode", "decode", "compress", "decompress", "import_codec", "export")


def command_modules() -> list[ModuleType]:
    return [importlib.import_module(f"targetkl.commands.{name}") for name in COMMANDS]
