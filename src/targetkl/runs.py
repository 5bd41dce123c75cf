"""Open a finished (or in-progress) training run: its config and the newest checkpoint's weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from targetkl.config import Config, load_run_config
from targetkl.models.codec import Codec, build_codec
from targetkl.checkpoints import CheckpointError, checkpoint_step, latest_checkpoint, load_module


@dataclass
class LoadedRun:
    run_dir: Path
    config: Config
    model: Codec
    step: int


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> LoadedRun:
    """Build the run's codec and load its newest checkpoint (EMA weights when the run kept them)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise CheckpointError(f"{run_dir}: no checkpoint yet; train it first with `targetkl train --out {run_dir}`")
    model = build_codec(config)
    ema = folder / "ema.safetensors"
    weights = ema if use_ema and ema.is_file() else folder / "model.safetensors"
    load_module(model, weights)
    model.to(device).eval()
    return LoadedRun(run_dir, config, model, checkpoint_step(folder))
