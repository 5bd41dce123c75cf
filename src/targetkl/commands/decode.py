"""``targetkl decode``: a latent file back to audio."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_file_arguments, load_run_for

NAME = "decode"
HELP = "latent file back to a wav file"
DESCRIPTION = "Decode a latent file written by `targetkl encode` with the same RUN. Writes output, a 16-bit wav file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser, "latent file (.safetensors)", "wav file to write")


def run(args: argparse.Namespace) -> int:
    from targetkl.latents import decode_file

    info = decode_file(load_run_for(args).model, args.input, args.output, batch_size=args.batch_size)
    print(f"wrote {args.output}: {info['samples']} samples at {info['sample_rate']} Hz")
    return 0
