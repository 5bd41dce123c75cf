"""``targetkl index``: probe and cache a corpus's files."""

from __future__ import annotations

import argparse

from targetkl.commands.common import DATA_HELP, add_quiet_argument, positive_int, progress_wanted

NAME = "index"
HELP = "index a corpus (run by train/eval/sweep when missing or stale)"
DESCRIPTION = ("Probe every audio file of DATA in parallel worker processes (length, native rate, channels, "
               "loudness, caption, label, split) and cache the index; a re-run probes only new or changed files. "
               "Files that cannot be used are listed with their reason. Writes one cache file under "
               "$TARGETKL_CACHE (default ~/.cache/targetkl/index), never into DATA.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help=DATA_HELP)
    parser.add_argument("--workers", type=positive_int, default=None, help="probing processes (default: up to 8)")
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    from targetkl.data.index import DataError, ensure_index

    index = ensure_index(args.data, workers=args.workers, progress=progress_wanted(args))
    print(f"indexed {index.summary()}; cache {index.cache_file}")
    for path, reason in list(index.skipped.items())[:20]:
        print(f"  skipped {path}: {reason}")
    if not index.entries:
        raise DataError(f"{args.data}: no usable audio file ({len(index.skipped)} skipped); point --data at a folder, "
                        "manifest or shards that hold audio")
    return 0
