"""``targetkl demo``: the whole job on the built-in corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from targetkl.commands.common import add_quiet_argument, float_list, positive_int, progress_wanted

NAME = "demo"
HELP = "the whole job on the built-in corpus: corpus, train, eval, print rates"
DESCRIPTION = ("Synthesize the demo corpus, train a tiny DAC-VAE at each target bitrate, and print target vs "
               "measured held-out kbps and mel distance next to an untrained model's. Writes OUT/corpus, "
               "OUT/runs/vae-<B>kbps (one run folder per target) and OUT/summary.json.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo", help="folder for the corpus and runs (default: demo)")
    parser.add_argument("--kbps", default="2", help="comma-separated target bitrates in kbps (default: 2)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="training steps per run (default: the tiny preset's)")
    parser.add_argument("--clips", type=positive_int, default=300, help="clips in the corpus (default: 300)")
    add_quiet_argument(parser, "no progress bars")


def run(args: argparse.Namespace) -> int:
    from targetkl.demo import run_demo

    kbps = float_list(args.kbps, "--kbps")
    summary = run_demo(Path(args.out), kbps, steps=args.steps, clips=args.clips, progress=progress_wanted(args))
    print(json.dumps(summary, indent=2))
    return 0
