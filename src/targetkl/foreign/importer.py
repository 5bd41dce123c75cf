"""``targetkl import``: a foreign codec (or a targetkl run) as a new run folder at step 0.

The run folder is what training writes: ``config.json`` (the source's model, the preset's training settings,
``--set`` on top) and ``checkpoints/step-00000000`` (``model`` and ``ema`` weights, the discriminator when the
config trains adversarially, a ``state.pt`` with step 0 and no optimizer state), plus ``imported.json`` (where it
came from, what was loaded and what is new). ``train --out RUN`` continues it, and at step 0 it may set any rate
(``--target-kbps``): nothing has been trained at the imported run's own. ``eval``, ``export``, ``compress`` and
``targetkl.load`` read it as any run.

The source's encoder and decoder load exactly. What the bottleneck adds:

- a deterministic latent (DAC) into a Gaussian bottleneck (``vae``, the default): the posterior mean is the
  source's latent (the encoder's last convolution, row for row) and the raw scale's rows are new, with zero
  weight (``weight_g = 0``) and a bias that makes every posterior std ``INITIAL_STD``: the decoder first hears its
  own latent with a little noise, and rate control widens the posterior to the target from there;
- a posterior (Stable Audio's VAE) into ``rvq`` or ``ae``: its mean rows are the latent;
- DAC's quantizer kept (``--bottleneck rvq``): our ``rvq`` bottleneck holds DAC's stages as they are, each code
  counted as used (no dead-code restart at the first step).

The run is written into a temporary folder beside ``RUN`` and renamed at the end: an error leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from targetkl.config import Config, apply_overrides, from_dict, nest, preset, resolve
from targetkl.fileio import fsync_dir, umask_mode, write_text_atomic
from targetkl.foreign.base import ForeignCheckpointError, ForeignCodec, read_source, whole_frames_seconds
from targetkl.bottlenecks.gaussian import inverse_softplus
from targetkl.models.codec import build_codec
from targetkl.train.state import TrainingState

INITIAL_STD = 0.1  # posterior std of a Gaussian bottleneck put on a deterministic latent
INFO_FILE = "imported.json"


def check_target(run: Path) -> None:
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise ForeignCheckpointError(f"{run}: already exists and is not an empty folder; import into a new run folder")


def import_config(foreign: ForeignCodec, bottleneck: str, preset_name: str, files: list[str],
                  assignments: list[str]) -> Config:
    """The new run's config: the source's run config (a targetkl run) or the preset, with the source's model
    settings, no free start (the decoder already works) and ``bottleneck``; then ``--config`` files and ``--set``."""
    base = from_dict(foreign.base_config, where="the source run's config.json") if foreign.base_config \
        else preset(preset_name)
    settings = {**foreign.settings, "model.bottleneck": bottleneck, "rate.free_steps": 0}
    if bottleneck == foreign.bottleneck:
        settings.update(foreign.bottleneck_settings)
        if bottleneck == "rvq":
            settings["rate.warmup_steps"] = 0  # DAC's codes are trained: quantize from the first step
    base = apply_overrides(base, nest(settings), where=f"the {foreign.kind} source")
    if "data.segment_seconds" not in settings:  # the preset's crop, made a whole number of the source's frames
        base.data.segment_seconds = whole_frames_seconds(base.data.segment_seconds, base.model.sample_rate,
                                                         base.model.hop)
    config = resolve(preset_name, files, assignments, base=base)
    config.preset = base.preset if foreign.base_config else preset_name
    return config


def codec_state(foreign: ForeignCodec, config: Config, codec: torch.nn.Module, where: str) -> tuple[dict, list[str]]:
    """The new codec's state dict from the source's weights; also what is new (human-readable)."""
    target = codec.state_dict()
    weights = dict(foreign.weights)
    kept_bottleneck = config.model.bottleneck == foreign.bottleneck
    if not kept_bottleneck:
        weights = {key: value for key, value in weights.items() if not key.startswith("bottleneck.")}
    new: list[str] = []
    latent = config.model.latent_dim
    for key in sorted(k for k in weights if k.startswith("encoder.") and k in target):
        theirs, ours = weights[key], target[key]
        if theirs.shape == ours.shape:
            continue
        if foreign.encoder_output == "latent" and ours.shape[0] == 2 * theirs.shape[0] == 2 * latent \
                and ours.shape[1:] == theirs.shape[1:]:
            grown = ours.clone()
            grown[:latent] = theirs
            module = key.rsplit(".", 1)
            if module[1] == "weight_g":
                grown[latent:] = 0.0
            elif module[1] == "bias":
                excess = torch.tensor(INITIAL_STD - config.model.vae.sigma_eps, dtype=torch.float64)
                grown[latent:] = float(inverse_softplus(excess))  # softplus(raw) + sigma_eps = INITIAL_STD
            weights[key] = grown
            if module[1] == "bias":
                new.append(f"{module[0]}: output rows {latent}..{2 * latent - 1} (the posterior's raw scale; zero "
                           f"weight, std {INITIAL_STD:g} at the start)")
        elif foreign.encoder_output == "posterior" and theirs.shape[0] == 2 * ours.shape[0] == 2 * latent \
                and ours.shape[1:] == theirs.shape[1:]:
            weights[key] = theirs[:latent].clone()  # the posterior mean is the latent
        else:
            raise ForeignCheckpointError(f"{where}: {key} has shape {tuple(theirs.shape)} where the model built from "
                                         f"its config has {tuple(ours.shape)}")
    unexpected = sorted(set(weights) - set(target))
    if unexpected:
        raise ForeignCheckpointError(f"{where}: weights {', '.join(unexpected[:3])} have no place in the "
                                     f"{config.model.architecture} codec its config describes")
    missing = [key for key in target if key not in weights]
    parameters = {name for name, _ in codec.named_parameters()}
    lacking = [key for key in missing if key in parameters and not key.startswith("bottleneck.")]
    if lacking:
        raise ForeignCheckpointError(f"{where}: lacks {', '.join(lacking[:3])} of the codec its config describes")
    for key in missing:
        if key.endswith(".usage") and kept_bottleneck:  # a kept quantizer's codes all count as used
            weights[key] = torch.full_like(target[key], 1.0 / target[key].numel())
        else:
            weights[key] = target[key]
            if key in parameters:
                new.append(f"{key} (initialized fresh)")
    for key, value in weights.items():
        if value.shape != target[key].shape:
            raise ForeignCheckpointError(f"{where}: {key} has shape {tuple(value.shape)} where the model built from "
                                         f"its config has {tuple(target[key].shape)}")
    return {key: weights[key].to(target[key].dtype) for key in target}, new


def import_codec(source: str | Path, run: str | Path, bottleneck: str | None = None, preset_name: str = "tiny",
                 files: list[str] | None = None, assignments: list[str] | None = None) -> dict[str, Any]:
    """Write ``run`` from ``source`` (see the module docstring); returns what ``imported.json`` says."""
    source, run = Path(source), Path(run)
    check_target(run)
    foreign = read_source(source)
    chosen = bottleneck or (foreign.bottleneck if foreign.base_config else "vae")
    config = import_config(foreign, chosen, preset_name, files or [], assignments or [])
    torch.manual_seed(config.train.seed)
    codec = build_codec(config)
    state, new = codec_state(foreign, config, codec, str(source))
    codec.load_state_dict(state, strict=True)
    notes = list(foreign.notes)
    discriminator = None
    if config.loss.adversarial:
        from targetkl.models.discriminators import build_discriminator

        discriminator = build_discriminator(config.loss, config.model.sample_rate)
        loaded = False
        if foreign.discriminator is not None:
            try:
                discriminator.load_state_dict(foreign.discriminator, strict=True)
                loaded = True
            except RuntimeError:
                notes.append("the source's discriminator does not match this config's: the discriminator starts "
                             "fresh")
        if loaded:
            notes.append("the source's discriminator is loaded")
    # the checkpoint training writes, at step 0 with no optimizer state; the EMA starts as the model
    checkpoint = TrainingState({"model": codec, "ema": codec, "discriminator": discriminator},
                               {"optimizer": None, "disc_optimizer": None})
    info = {"source": str(source.resolve()), "format": foreign.kind, "bottleneck": chosen,
            "source_bottleneck": foreign.bottleneck, "sample_rate": config.model.sample_rate,
            "frame_rate": config.model.frame_rate, "latent_dim": config.model.latent_dim,
            "parameters": sum(p.numel() for p in codec.parameters()),
            "loaded_tensors": sum(1 for key in foreign.weights if key in state
                                  and (chosen == foreign.bottleneck or not key.startswith("bottleneck."))),
            "new": new,
            "notes": notes}
    run.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=run.parent, prefix=f".{run.name}.import-"))
    try:
        write_text_atomic(temporary / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        checkpoint.save(temporary, 0, {"bad_steps": 0, "imported": True})
        write_text_atomic(temporary / INFO_FILE, json.dumps(info, indent=2) + "\n")
        os.chmod(temporary, umask_mode(folder=True))
        if run.is_dir():
            run.rmdir()  # empty, checked above
        os.rename(temporary, run)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    fsync_dir(run.parent)
    return info
