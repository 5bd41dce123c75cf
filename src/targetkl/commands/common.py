"""Options, argument types and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import math
import sys

from targetkl.errors import UserError

DATA_HELP = ("audio: a folder (searched recursively, captions.jsonl optional), a manifest (.jsonl/.csv with a path "
             "and optional caption per line) or WebDataset shards ('shards/train-{000000..000199}.tar'); indexed "
             "once and cached")


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress bars (with an ETA) on a terminal; none under -q/--quiet or when stderr is a file or pipe."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def add_quiet_argument(parser: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=what)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--config FILE`` and ``--set SECTION.KEY=VALUE`` (see :func:`targetkl.config.resolve`)."""
    from targetkl.config import PRESETS

    parser.add_argument("--preset", default=None, choices=list(PRESETS),
                        help=f"named configuration: {', '.join(PRESETS)} (default: tiny)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML/TOML/JSON file of overrides, e.g. {train: {steps: 500}}; repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one value, e.g. --set model.latent_dim=32; repeatable")


def add_device_argument(parser: argparse.ArgumentParser, batch: bool = True) -> None:
    parser.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda or cuda:N")
    if batch:
        parser.add_argument("--batch-size", type=positive_int, default=16,
                            help="clips (or chunks of long files) run through the model at once (default: 16)")


def add_gen_arguments(parser: argparse.ArgumentParser, batch: bool) -> None:
    """The generator's preset, ``--set KEY=VALUE``, steps and seed (``gen-train`` and ``select``)."""
    from targetkl.gen.train import GEN_PRESETS

    parser.add_argument("--gen-preset", default="tiny", choices=list(GEN_PRESETS),
                        help=f"generator preset: {', '.join(GEN_PRESETS)} (default: tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="gen.KEY=VALUE",
                        help="override one generator setting, e.g. --set gen.width=256 (or width=256); repeatable")
    parser.add_argument("--steps", type=int, default=None, help="generator training steps")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    add_quiet_argument(parser, "no progress bars")
    add_device_argument(parser, batch)


def gen_config(args: argparse.Namespace, task: str | None = None):
    """The generator's config from ``--gen-preset``, ``--set``, ``--steps``, ``--seed``, ``--device`` and ``task``
    (``--task`` of gen-train, or select's)."""
    from targetkl.gen.train import gen_config as resolve_gen_config

    return resolve_gen_config(args.gen_preset, args.set, steps=args.steps, seed=args.seed, device=args.device,
                              task=task or getattr(args, "task", None))


def add_file_arguments(parser: argparse.ArgumentParser, input_help: str, output_help: str) -> None:
    """``RUN INPUT OUTPUT`` and the device options of a file command (encode, decode, compress, decompress)."""
    parser.add_argument("run", help="run folder")
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help=output_help)
    add_device_argument(parser)


def load_run_for(args: argparse.Namespace):
    """The run of a file command on its ``--device``."""
    from targetkl.inference import choose_device
    from targetkl.runs import load_run

    return load_run(args.run, choose_device(args.device))


def names(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def float_list(text: str, option: str) -> list[float]:
    """``"0.5, 1,2"`` -> ``[0.5, 1.0, 2.0]``; a one-line ``UserError`` for anything else (or nothing)."""
    try:
        values = [float(x) for x in names(text)]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"{option} takes comma-separated positive numbers, e.g. 0.5,1,2; got {text!r}")
    return values


def finite_float(text: str) -> float:
    """An argparse type: a finite number (a guidance scale, a length in seconds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch size, a count of steps)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def write_json(path: str, data) -> None:
    """``--json FILE``: the command's results, written atomically."""
    import json

    from targetkl.fileio import output_path, without_nan, write_text_atomic

    write_text_atomic(output_path(path), json.dumps(without_nan(data), indent=2) + "\n")
