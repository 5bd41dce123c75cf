"""diffusers ``AutoencoderOobleck`` folders (``config.json`` + ``diffusion_pytorch_model.safetensors``), the form
Stable Audio Open's VAE takes in diffusers and the form ``targetkl export --format diffusers`` writes.

Our ``oobleck`` architecture uses diffusers' module names, so the weights load as they are. diffusers ties the
encoder's base width to its output (``encoder_hidden_size`` is both: 2 x the latent for the posterior's mean and
raw scale) and computes ``std = softplus(raw) + 1e-4``; both carry over (``model.vae.sigma_eps = 1e-4``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from targetkl.foreign.base import (ForeignCheckpointError, ForeignCodec, ForeignFormat, load_safetensors,
                                   register_format)

CLASS = "AutoencoderOobleck"
WEIGHTS = "diffusion_pytorch_model.safetensors"
DEFAULTS = {"encoder_hidden_size": 128, "downsampling_ratios": [2, 4, 4, 8, 8], "channel_multiples": [1, 2, 4, 8, 16],
            "decoder_channels": 128, "decoder_input_channels": 64, "audio_channels": 2, "sampling_rate": 44100}


def _config(path: Path) -> dict | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def detect(path: Path) -> bool:
    return path.is_dir() and (_config(path) or {}).get("_class_name") == CLASS


def read(path: Path) -> ForeignCodec:
    config = {**DEFAULTS, **_config(path)}
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise ForeignCheckpointError(f"{path}: an {CLASS} config.json without {WEIGHTS}; save the model with "
                                     "save_pretrained(folder) (safetensors, the default)")
    strides = [int(s) for s in config["downsampling_ratios"]]
    latent = int(config["decoder_input_channels"])
    width = int(config["encoder_hidden_size"])
    if width != 2 * latent:
        raise ForeignCheckpointError(f"{path / 'config.json'}: encoder_hidden_size {width} is not twice "
                                     f"decoder_input_channels {latent}, which diffusers' own model requires")
    settings = {"model.architecture": "oobleck", "model.sample_rate": int(config["sampling_rate"]),
                "model.audio_channels": int(config["audio_channels"]), "model.encoder_dim": width,
                "model.strides": tuple(strides), "model.decoder_dim": int(config["decoder_channels"]),
                "model.latent_dim": latent, "model.oobleck.channel_multiples": tuple(config["channel_multiples"]),
                "model.oobleck.final_tanh": False, "model.vae.sigma_eps": 1e-4}
    weights = load_safetensors(weights_path)
    stray = [key for key in weights if not key.startswith(("encoder.", "decoder."))]
    if stray:
        raise ForeignCheckpointError(f"{weights_path}: weights {', '.join(stray[:3])} are not an "
                                     f"{CLASS}'s encoder or decoder")
    notes = [f"the posterior mean of the diffusers VAE is the latent: {latent} channels at "
             f"{settings['model.sample_rate'] / math.prod(strides):g} Hz",
             "a diffusers folder holds no discriminator: the discriminator starts fresh"]
    return ForeignCodec("diffusers", settings, weights, encoder_output="posterior", bottleneck="vae", notes=notes)


register_format(ForeignFormat("diffusers", f"a diffusers {CLASS} folder (config.json + {WEIGHTS})", detect, read))
