"""``targetkl listen``: a blind MUSHRA-style listening test of a sweep, and its results."""

from __future__ import annotations

import argparse
from pathlib import Path

from targetkl.commands.common import names, positive_int

NAME = "listen"
HELP = "a blind MUSHRA-style listening test of a sweep, and its results"
DESCRIPTION = ("With SWEEP: write OUT/index.html, a self-contained listening-test page (after ITU-R BS.1534: per "
               "trial a reference, a hidden reference, a 3.5 kHz low-pass anchor and each system's decode of a "
               "held-out clip, shuffled; 0-100 sliders; opened as a file, no server or network) and OUT/test.json. "
               "With --results: aggregate the ratings files the page saves (mean and 95% interval per system and "
               "rate, hidden-reference screening) and write listening.json and listening.png to the test folder and "
               "to the sweep, with a section in its report.html.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", nargs="?", help="sweep folder (from `targetkl sweep`)")
    parser.add_argument("--out", default=None,
                        help="the test's folder (default SWEEP/listening-test); with --results, where to write the "
                             "results (default: the test folder above the ratings files)")
    parser.add_argument("--clips", type=positive_int, default=None,
                        help="trials: the sweep's first N example clips (default: all it wrote)")
    parser.add_argument("--systems", default=None,
                        help="comma-separated systems or points, e.g. vae,rvq,opus or vae-2kbps (default: every "
                             "point with audio)")
    parser.add_argument("--results", nargs="+", default=None, metavar="RATINGS",
                        help="ratings-<name>.json files saved by the page, to aggregate")


def run(args: argparse.Namespace) -> int:
    from targetkl.eval.listen import ListeningTestError, format_results, write_results, write_test

    if args.results:
        if args.sweep or args.clips or args.systems:
            raise ListeningTestError("--results aggregates saved ratings on its own; leave out SWEEP, --clips and "
                                     "--systems")
        results, out = write_results(args.results, args.out)
        print(format_results(results))
        also = f" and {results['sweep']} (report.html)" if results.get("sweep") and \
            (Path(results["sweep"]) / "listening.json").is_file() else ""
        print(f"wrote listening.json and listening.png to {out}{also}")
        return 0
    if not args.sweep:
        raise ListeningTestError("name a sweep folder to write a test for (targetkl listen SWEEP --out TEST), or "
                                 "--results RATINGS... to aggregate saved ratings")
    out = Path(args.out) if args.out else Path(args.sweep) / "listening-test"
    test = write_test(args.sweep, out, clips=args.clips, systems=names(args.systems) if args.systems else None)
    systems = sum(1 for s in test["stimuli"] if s["kind"] == "system")
    print(f"wrote {out / 'index.html'}: {test['clips']} trials, {systems} systems with a hidden reference and a "
          f"{test['anchor_hz'] / 1000:g} kHz anchor. Open it in a browser (no server needed); each listener's "
          f"'Save ratings' gives ratings-<name>.json: `targetkl listen --results {out}/ratings/*.json`")
    return 0
