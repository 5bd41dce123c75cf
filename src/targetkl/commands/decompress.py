"""``targetkl decompress``: a ``.tkl`` bitstream back to audio."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_file_arguments, load_run_for

NAME = "decompress"
HELP = ".tkl bitstream back to a wav file"
DESCRIPTION = ("Decode a .tkl file written by `targetkl compress` with the same RUN; a damaged file or one from "
               "another model is refused. Writes output, a 16-bit wav file.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser, ".tkl file", "wav file to write")


def run(args: argparse.Namespace) -> int:
    from targetkl.bitstream import decompress_file

    info = decompress_file(load_run_for(args).model, args.input, args.output, args.batch_size)
    print(f"wrote {args.output}: {info['samples']} samples at {info['sample_rate']} Hz")
    return 0
