"""``targetkl pre-encode``: store a run's latents with their captions, for a generator."""

from __future__ import annotations

import argparse

from targetkl.commands.common import DATA_HELP, add_device_argument, add_quiet_argument, progress_wanted

NAME = "pre-encode"
HELP = "store a run's latents (posterior mean and std) with captions"
DESCRIPTION = ("Encode every clip of DATA (train and held-out split) with RUN's encoder in eval mode. Writes "
               "OUT/latents.safetensors, OUT/manifest.jsonl (captions, labels, split) and OUT/info.json (the run, "
               "frame rate, measured held-out rate).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (a vae run)")
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--out", required=True, help="latents folder to write")
    add_quiet_argument(parser)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from targetkl.gen.dataset import pre_encode

    info = pre_encode(args.run, args.data, args.out, progress=progress_wanted(args), device=args.device,
                      batch_size=args.batch_size)
    rate_text = f"; held-out rate {info['rate_kbps']:.4f} kbps" if info.get("rate_kbps") is not None else ""
    print(f"wrote latents of {info['clips']} clips ({info['captioned']} captioned) to {args.out}{rate_text}")
    return 0
