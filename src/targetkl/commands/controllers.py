"""``targetkl controllers``: the rate controllers compared on real audio at several rates."""

from __future__ import annotations

import argparse

from targetkl.commands.common import (DATA_HELP, add_config_arguments, add_device_argument, add_quiet_argument,
                                      float_list, names, progress_wanted)

NAME = "controllers"
HELP = "compare the rate controllers on real audio at several rates"
DESCRIPTION = ("Train (or reuse) one VAE per controller and target rate, then report the held-out rate against the "
               "target, the step from which the whole-clip training rate stays within 2% of the target, and the mel "
               "distance; writes OUT/controllers.json, .csv and a rate-vs-step plot.")
COMPARED = "target,capacity,pi,lagrange"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.control import CONTROLLERS

    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--out", required=True, help="output folder (runs are kept and reused)")
    parser.add_argument("--kbps", default="0.5,2,8", help="target bitrates in kbps (default: 0.5,2,8)")
    parser.add_argument("--controllers", default=COMPARED,
                        help=f"comma-separated controllers, any of {', '.join(CONTROLLERS)} (default: {COMPARED})")
    add_config_arguments(parser)
    add_quiet_argument(parser, "no progress bars")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from targetkl.eval.controllers import compare_controllers, format_rows

    rows = compare_controllers(args.data, args.out, float_list(args.kbps, "--kbps"), names(args.controllers),
                               preset=args.preset or "tiny", config_files=args.config, assignments=args.set,
                               progress=progress_wanted(args), device=args.device, batch_size=args.batch_size)
    print(format_rows(rows))
    print(f"wrote controllers.json, controllers.csv and controllers.png (rate vs step) in {args.out}")
    return 0
