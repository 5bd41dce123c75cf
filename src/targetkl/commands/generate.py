"""``targetkl generate``: text to audio with a trained generator and its VAE."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_device_argument, finite_float, positive_int

NAME = "generate"
HELP = "text to audio with a trained generator and its VAE"
DESCRIPTION = ("Sample latents for PROMPT with classifier-free guidance and decode them with the VAE the generator "
               "was trained on. Writes output, a 16-bit wav file.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("generator", help="generator folder (from `targetkl gen-train`)")
    parser.add_argument("prompt", help='text, e.g. "a low plucked string note"')
    parser.add_argument("output", help="wav file to write")
    parser.add_argument("--steps", type=positive_int, default=32, help="Euler sampling steps (default: 32)")
    parser.add_argument("--cfg", type=finite_float, default=3.0,
                        help="guidance scale; 1 = conditional model only (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    parser.add_argument("--seconds", type=finite_float, default=None,
                        help="length (default: the training clips' length)")
    add_device_argument(parser, batch=False)


def run(args: argparse.Namespace) -> int:
    from targetkl.gen.sample import generate_file

    info = generate_file(args.generator, args.prompt, args.output, steps=args.steps, cfg=args.cfg, seed=args.seed,
                         seconds=args.seconds, device=args.device)
    print(f"wrote {args.output}: {info['seconds']:.2f} s at {info['sample_rate']} Hz")
    return 0
