"""``targetkl export``: a run for other tools (diffusers, safetensors)."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "write a run for other tools: diffusers or stable-audio-tools (Oobleck VAEs), or safetensors"
DESCRIPTION = ("Write RUN to the folder OUT. --format diffusers (an oobleck run): config.json and "
               "diffusion_pytorch_model.safetensors for diffusers.AutoencoderOobleck.from_pretrained(OUT); --format "
               "stable-audio-tools (an oobleck run): model_config.json and model.safetensors for stable-audio-tools' "
               "factory and checkpoint loader, and pretransform.json, the block a diffusion config takes (its scale "
               "from the measured latents); --format safetensors (any run): model.safetensors. All write "
               "targetkl.json: the config, the measured held-out "
               "rate and per-channel latent mean and std over training clips (to scale latents for diffusion).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.export import FORMATS, STATS_CLIPS

    parser.add_argument("run", help="run folder")
    parser.add_argument("out", help="folder to write")
    parser.add_argument("--data", required=True, help="the run's training data (for the latent statistics)")
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                        help="diffusers: an AutoencoderOobleck folder (Oobleck runs); stable-audio-tools: an "
                             "autoencoder model folder (Oobleck runs); safetensors: the state dict, any run (default: "
                             f"{FORMATS[0]})")
    parser.add_argument("--stats-clips", type=int, default=STATS_CLIPS,
                        help=f"training clips for the latent statistics (default: {STATS_CLIPS})")


def run(args: argparse.Namespace) -> int:
    from targetkl.export import export_run

    info = export_run(args.run, args.out, args.data, args.format, args.stats_clips)
    rate_text = f"{info['rate_kbps']:.4f} kbps measured" if info["rate_kbps"] is not None else "no measured rate"
    print(f"wrote {args.out} ({args.format}): {rate_text}, latent statistics over {info['latent_stats']['clips']} "
          f"training clips in {args.out}/targetkl.json")
    return 0
