"""``targetkl encode``: an audio file to a latent file."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_file_arguments, load_run_for

NAME = "encode"
HELP = "audio file to a latent file (safetensors)"
DESCRIPTION = ("Encode input (any audio file) with RUN's encoder; the latent file holds the posterior mean (and std), "
               "sample rate, frame rate and length. Writes output (safetensors).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser, "audio file", "latent file to write (.safetensors)")


def run(args: argparse.Namespace) -> int:
    from targetkl.latents import encode_file

    info = encode_file(load_run_for(args).model, args.input, args.output, batch_size=args.batch_size)
    print(f"wrote {args.output}: {info['frames']} frames at {float(info['frame_rate']):g} Hz")
    return 0
