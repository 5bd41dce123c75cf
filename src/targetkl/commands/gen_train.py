"""``targetkl gen-train``: train the text-to-latent generator on pre-encoded latents."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_gen_arguments, gen_config, progress_wanted

NAME = "gen-train"
HELP = "train the text-to-latent generator (flow matching, CFG)"
DESCRIPTION = ("Train a small diffusion transformer with rectified flow matching on pre-encoded latents, conditioned "
               "on MiniLM caption embeddings (dropped 10% of the time for classifier-free guidance), or with --task "
               "tts on the transcripts' phonemes (espeak-ng) or characters (--set gen.tokens=chars), spread over "
               "whole utterances; generation then takes its length from a duration rule. Writes "
               "GEN/gen_config.json, GEN/checkpoints, GEN/metrics.jsonl and GEN/tensorboard; resumes if GEN has a "
               "checkpoint.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.gen.conditioning import TASK_HELP, TASKS

    parser.add_argument("--latents", required=True, help="folder written by `targetkl pre-encode`")
    parser.add_argument("--out", required=True, help="generator folder")
    parser.add_argument("--task", default=None, choices=list(TASKS),
                        help="; ".join(f"{name}: {text}" for name, text in TASK_HELP.items()) + " (default: sound)")
    add_gen_arguments(parser, batch=False)


def run(args: argparse.Namespace) -> int:
    from targetkl.gen.train import GenTrainer

    result = GenTrainer(gen_config(args), args.latents, args.out, progress=progress_wanted(args)).run()
    length = (f"whole utterances of up to {result['frames']} latent frames" if result["task"] == "tts"
              else f"{result['frames']} latent frames per clip")
    print(f"trained {args.out} to step {result['step']}; held-out flow-matching loss {result['val_loss']:.4f} "
          f"({length})")
    return 0
