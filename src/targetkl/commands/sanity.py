"""``targetkl sanity``: each rate controller against the Shannon limit of a Gaussian source."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_quiet_argument, float_list, names, positive_int, progress_wanted, write_json

NAME = "sanity"
HELP = "Shannon-limit check: each rate controller on a Gaussian source with known D(R)"
DESCRIPTION = ("Train a linear Gaussian VAE with each controller at each target rate on i.i.d. Gaussian vectors with "
               "unequal variances, and compare its distortion with the reverse water-filling D(R). Prints target and "
               "reached bits per vector, distortion, D(R) and the gap in dB; --json FILE also writes them.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.control import CONTROLLERS

    parser.add_argument("--controllers", default=",".join(CONTROLLERS),
                        help=f"comma-separated controllers (default: all: {', '.join(CONTROLLERS)})")
    parser.add_argument("--bits", default="2,6,12", help="target rates in bits per vector (default: 2,6,12)")
    parser.add_argument("--steps", type=positive_int, default=3000, help="training steps per model (default: 3000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write rows with controller, target_bits, reached_bits, distortion, "
                             "shannon_distortion, gap_db")
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    from targetkl.sanity import SanityConfig, format_table, run_sanity

    config = SanityConfig(steps=args.steps, seed=args.seed)
    rows = run_sanity(names(args.controllers), float_list(args.bits, "--bits"), config,
                      progress=progress_wanted(args))
    print(format_table(rows))
    if args.json:
        write_json(args.json, rows)
    return 0
