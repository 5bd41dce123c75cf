"""``targetkl``: one command line with a subcommand per job (one module each in :mod:`targetkl.commands`).
``targetkl SUBCOMMAND --help`` explains each."""

from __future__ import annotations

import argparse
import logging
import sys

from targetkl import __version__


def _presets_text() -> str:
    from targetkl.config import PRESETS, preset

    lines = []
    for name in PRESETS:
        model = preset(name).model
        lines.append(f"{name} ({model.architecture}, {model.sample_rate / 1000:g} kHz, {model.frame_rate:g} Hz x "
                     f"{model.latent_dim})")
    return "presets (train/sweep --preset): " + ", ".join(lines) + ". Every subcommand: targetkl COMMAND --help."


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, each from its module's ``NAME``, ``HELP``, ``DESCRIPTION`` and
    ``add_arguments``; the parsed arguments carry the module's ``run`` as ``func``."""
    from targetkl.commands import command_modules

    parser = argparse.ArgumentParser(
        prog="targetkl",
        description="Train continuous audio VAEs to a chosen bitrate (target-KL) and measure them. "
                    "Rates are measured as frame_rate * mean KL per frame / ln 2 on held-out audio.",
        epilog=_presets_text())
    parser.add_argument("--version", action="version", version=f"targetkl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", None))
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from targetkl.errors import USER_ERRORS
    from targetkl.train.trainer import TrainingInterrupted

    try:
        return args.func(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the system refused (a folder for a file, no permission, a full disk)
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and not _out_of_memory(error):
            raise
        print("error: out of memory; lower --batch-size (train.batch_size), data.segment_seconds or the model's "
              f"sizes ({str(error).splitlines()[0][:120]})", file=sys.stderr)
        return 2


def _out_of_memory(error: RuntimeError) -> bool:
    """torch's CPU allocator and CUDA say 'out of memory' in a RuntimeError."""
    text = str(error)
    return "can't allocate memory" in text or "out of memory" in text.lower()


if __name__ == "__main__":
    sys.exit(main())
