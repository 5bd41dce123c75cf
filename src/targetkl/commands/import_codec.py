"""``targetkl import``: start a run from a codec trained elsewhere (DAC, Stable Audio's VAE, diffusers) or from
another run."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_config_arguments

NAME = "import"
HELP = "start a run from another tool's codec (DAC, stable-audio-tools, diffusers) or from a run"
DESCRIPTION = ("Write the run folder RUN at step 0 from SOURCE: a descript-audio-codec weights file (.pth), a "
               "stable-audio-tools model (folder with model_config.json and weights, or the weights file; a whole "
               "Stable Audio model's pretransform too), a diffusers AutoencoderOobleck folder, or a targetkl run. "
               "The model comes from the source's config, the training settings from --preset (default tiny) and "
               "--set. Then `targetkl train --data DATA --out RUN --target-kbps B` retargets it to any bitrate; "
               "eval, export, compress and targetkl.load read it as any run. Nothing in SOURCE is executed.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="the codec to start from (file or folder)")
    parser.add_argument("run", help="new run folder")
    parser.add_argument("--bottleneck", default=None, choices=("vae", "rvq", "ae"),
                        help="vae (default; a targetkl run keeps its own): a Gaussian posterior whose mean is the "
                             "source's latent; rvq: DAC's own quantizer kept (a baseline at DAC's bitrate); ae: the "
                             "latent with no rate")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from targetkl.foreign.importer import import_codec

    info = import_codec(args.source, args.run, args.bottleneck, args.preset or "tiny", args.config, args.set)
    print(f"imported {args.source} ({info['format']}) into {args.run}: {info['parameters'] / 1e6:.2f}M parameters, "
          f"{info['latent_dim']} latent channels at {info['frame_rate']:g} Hz, {info['sample_rate']} Hz audio, "
          f"bottleneck {info['bottleneck']}")
    for note in info["notes"]:
        print(f"  {note}")
    for item in info["new"]:
        print(f"  new: {item}")
    print(f"next: targetkl train --data DATA --out {args.run} --target-kbps B")
    return 0
