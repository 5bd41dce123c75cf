"""A targetkl run folder as an import source: retarget a trained run (to another bitrate, bottleneck or data)
without touching it.

The run's config is the new run's starting config and its evaluated weights (the EMA when kept) are the new
run's model and EMA; the rate controller's state starts fresh (it belonged to the old target), the discriminator
comes along when the run kept one.
"""

from __future__ import annotations

from pathlib import Path

from targetkl.checkpoints import latest_checkpoint, load_tensors
from targetkl.config import load_run_config
from targetkl.foreign.base import ForeignCheckpointError, ForeignCodec, ForeignFormat, register_format


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def read(path: Path) -> ForeignCodec:
    config = load_run_config(path)
    folder = latest_checkpoint(path)
    if folder is None:
        raise ForeignCheckpointError(f"{path}: a run with no checkpoint yet; train it first")
    ema = folder / "ema.safetensors"
    state = load_tensors(ema if ema.is_file() else folder / "model.safetensors")
    weights = {key: value for key, value in state.items() if not key.startswith("bottleneck.controller.")}
    discriminator = folder / "discriminator.safetensors"
    bottleneck = config.model.bottleneck
    output = "posterior" if bottleneck == "vae" else "latent"
    notes = [f"{folder.name} of {path} ({'EMA' if ema.is_file() else 'live'} weights); the rate controller starts "
             "fresh"]
    return ForeignCodec("targetkl", {}, weights, encoder_output=output, bottleneck=bottleneck,
                        discriminator=load_tensors(discriminator) if discriminator.is_file() else None, notes=notes,
                        base_config=config.to_dict())


register_format(ForeignFormat("targetkl", "a targetkl run folder (config.json + checkpoints/)", detect, read))
