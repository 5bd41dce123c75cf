"""``targetkl eval``: a run's measured held-out rate against its target, and its distortion metrics."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_device_argument, add_quiet_argument, progress_wanted, write_json

NAME = "eval"
HELP = "measured held-out rate vs target, and distortion metrics"


def _description() -> str:
    from targetkl.eval.metrics import metric_names

    return ("Evaluate RUN on the held-out split of DATA in eval mode: rate_kbps (measured), target_kbps, frame_rate, "
            f"{', '.join(metric_names(reference_only=True))}, with 95% intervals and per domain. Prints them; "
            "--json FILE also writes them.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = _description()
    parser.add_argument("run", help="run folder")
    parser.add_argument("--data", required=True, help="the audio the run trained on (folder, manifest or shards)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--fast", action="store_true", help="skip PESQ, STOI and ViSQOL")
    add_quiet_argument(parser)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from targetkl.eval.evaluate import evaluate_run, format_result

    result = evaluate_run(args.run, args.data, perceptual=not args.fast, progress=progress_wanted(args),
                          device=args.device, batch_size=args.batch_size)
    print(format_result(result))
    if args.json:
        write_json(args.json, result)
    return 0
