"""Take a trained run out of the toolkit: ``targetkl export RUN OUT --format diffusers|stable-audio-tools|safetensors``.

Every format writes ``OUT/targetkl.json``: the run's whole config, the measured held-out rate (``rate_kbps``,
with its target and frame rate) and ``latent_stats``, the per-channel mean and std of the posterior means
over training clips (``(latent_dim,)`` each, measured at export), which a diffusion model uses to scale
its latents (``(z - mean) / std``). Then:

- ``diffusers`` (an Oobleck VAE only): ``config.json`` and ``diffusion_pytorch_model.safetensors`` that
  ``diffusers.AutoencoderOobleck.from_pretrained(OUT)`` loads; its ``encode(x).latent_dist.mean`` and
  ``decode(z).sample`` are this toolkit's posterior mean and decoder. diffusers' posterior std is
  ``softplus + 1e-4``, so the run's ``model.vae.sigma_eps`` must be 1e-4, and its encoder width must be twice the
  latent width (diffusers ties the two).
- ``stable-audio-tools`` (an Oobleck VAE only): ``model_config.json`` and ``model.safetensors`` that
  stable-audio-tools' ``create_autoencoder_from_config`` and ``load_ckpt_state_dict`` load, and
  ``pretransform.json``, the block a diffusion model's config takes, with ``scale`` from the measured latents
  (:mod:`targetkl.foreign.stable_audio`). Same posterior std rule as diffusers (``sigma_eps`` 1e-4).
- ``safetensors`` (any run): ``model.safetensors``, the codec's state dict under this toolkit's names.

The model was trained on audio at ``data.loudness_dbfs`` RMS (``targetkl.json`` says which): feed it audio at
that level (``targetkl.load(OUT).encode`` does so by default).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from targetkl.config import Config
from targetkl.data import load_folder
from targetkl.latent_stats import latent_statistics
from targetkl.errors import UserError
from targetkl.fileio import fsync_dir, fsync_file, umask_mode
from targetkl.models.codec import Codec
from targetkl.runs import load_run

FORMATS = ("diffusers", "safetensors", "stable-audio-tools")
INFO_FILE = "targetkl.json"
STATS_CLIPS = 256


class ExportError(UserError, ValueError):
    """A run that cannot be written in the asked format; the message says what to train instead."""


def diffusers_config(config: Config) -> dict:
    model = config.model
    return {"_class_name": "AutoencoderOobleck", "_diffusers_version": "0.30.0",
            "encoder_hidden_size": model.encoder_dim, "downsampling_ratios": list(model.strides),
            "channel_multiples": list(model.oobleck.channel_multiples), "decoder_channels": model.decoder_dim,
            "decoder_input_channels": model.latent_dim, "audio_channels": model.audio_channels,
            "sampling_rate": model.sample_rate}


def check_oobleck_vae(config: Config, codec: Codec, run: Path, fmt: str) -> None:
    """What diffusers and stable-audio-tools both need: an Oobleck codec with a Gaussian posterior whose std is
    ``softplus(raw) + 1e-4``; diffusers also ties the encoder's width to twice the latent and has no final tanh."""
    model = config.model
    tool = "diffusers" if fmt == "diffusers" else "stable-audio-tools"
    if model.architecture != "oobleck":
        raise ExportError(f"{run}: a {model.architecture} codec; {tool} loads Stable Audio's Oobleck VAE only: "
                          "train one with --preset oobleck-tiny or oobleck-44k (or --set model.architecture=oobleck), "
                          "or export this run with --format safetensors")
    sigma_eps = model.vae.sigma_eps
    if not codec.bottleneck.stores_posterior or sigma_eps != 1e-4:
        raise ExportError(f"{run}: {tool}'s Oobleck VAE needs a Gaussian (vae) bottleneck with "
                          f"model.vae.sigma_eps=1e-4 (here {model.bottleneck}, {sigma_eps:g}); export with "
                          "--format safetensors")
    if fmt == "diffusers" and (model.encoder_dim != 2 * model.latent_dim or model.oobleck.final_tanh):
        raise ExportError(f"{run}: diffusers' AutoencoderOobleck needs model.encoder_dim = 2 x model.latent_dim "
                          f"and no final tanh (here {model.encoder_dim} vs {model.latent_dim}, final_tanh "
                          f"{model.oobleck.final_tanh}); export with --format stable-audio-tools or safetensors")


def training_statistics(model: Codec, config: Config, data: str | Path, clips: int = STATS_CLIPS,
                        seed: int = 0) -> dict:
    """:func:`~targetkl.latent_stats.latent_statistics` over up to ``clips`` whole training clips (``seed``)."""
    train = load_folder(data, config.model.sample_rate, "train", config.data.valid_percent,
                        config.data.loudness_dbfs, progress=False, channels=config.model.audio_channels)
    chosen = np.random.default_rng(seed).permutation(len(train.clips))[:clips]
    stats = latent_statistics(model, [train.clips[int(i)].audio for i in chosen])
    return {key: stats[key] for key in ("mean", "std", "clips", "frames")}


def oobleck_vae_tensors(model: Codec) -> dict[str, torch.Tensor]:
    """An Oobleck VAE's ``encoder.*`` and ``decoder.*`` tensors under our (diffusers') names, as diffusers and
    stable-audio-tools take them: both compute ``std = softplus(raw) + 1e-4``, so the final rate trim's shift goes
    into the raw scales' bias."""
    tensors = {f"{part}.{name}": tensor.detach().contiguous().clone()
               for part in ("encoder", "decoder") for name, tensor in getattr(model, part).state_dict().items()}
    tensors["encoder.conv2.bias"][model.latent_dim:] += float(model.bottleneck.scale_shift)
    return tensors


def measured_rate(run: Path, step: int) -> float | None:
    """The held-out rate the run logged at ``step`` (its last checkpoint), if it logged one."""
    rate = None
    try:
        for line in (run / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == "held_out" and row.get("step") == step:
                rate = row.get("rate_kbps")
    except (OSError, ValueError):
        return None
    return rate


def export_run(run: str | Path, out: str | Path, data: str | Path, fmt: str = "diffusers",
               stats_clips: int = STATS_CLIPS) -> dict:
    """Write ``run`` to the folder ``out`` in ``fmt`` (see the module docstring); returns ``targetkl.json``.

    Everything is written into a temporary folder beside ``out`` and renamed to ``out`` at the end, so ``out`` is
    a complete export or untouched. ``out`` must be new, empty, or an earlier export of the same run (replaced).
    """
    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
    if stats_clips < 1:
        raise ExportError(f"--stats-clips {stats_clips}: the latent statistics need at least 1 training clip "
                          f"(default {STATS_CLIPS})")
    check_target(out, run)
    loaded = load_run(run, "cpu")
    config, model = loaded.config, loaded.model
    if fmt in ("diffusers", "stable-audio-tools"):
        check_oobleck_vae(config, model, run, fmt)
    rate_kbps = measured_rate(run, loaded.step)
    if rate_kbps is None:
        from targetkl.eval.evaluate import evaluate_model

        rate_kbps = evaluate_model(model, config, data, perceptual=False, progress=False)["rate_kbps"]
    if fmt == "diffusers":
        files = {"diffusion_pytorch_model.safetensors": oobleck_vae_tensors(model),
                 "config.json": json.dumps(diffusers_config(config), indent=2) + "\n"}
    elif fmt == "safetensors":
        files = {"model.safetensors": {name: tensor.detach().contiguous().clone()
                                       for name, tensor in model.state_dict().items()}}
    stats = training_statistics(model, config, data, stats_clips)
    if fmt == "stable-audio-tools":
        from targetkl.foreign.stable_audio import export_files

        files = export_files(config, oobleck_vae_tensors(model), stats)
    info = {"format": fmt, "source_run": str(run.resolve()), "step": loaded.step, "config": config.to_dict(),
            "sample_rate": model.sample_rate, "frame_rate": model.frame_rate, "latent_dim": model.latent_dim,
            "loudness_dbfs": config.data.loudness_dbfs, "target_kbps": config.rate.target_kbps,
            "rate_kbps": rate_kbps if rate_kbps is not None and math.isfinite(rate_kbps) else None,
            "latent_stats": stats}
    files[INFO_FILE] = json.dumps(info, indent=2) + "\n"
    write_folder_atomic(out, files)
    return info


def check_target(out: Path, run: Path) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not an earlier export of ``run``."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file; name a new folder for the export")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        earlier = json.loads((out / INFO_FILE).read_text()).get("source_run")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != str(run.resolve()):
        raise ExportError(f"{out}: a folder that holds other files (not an export of {run}); export into a new or "
                          "empty folder")


def write_folder_atomic(out: Path, files: dict[str, dict | str]) -> None:
    """Write ``files`` (name -> tensors for safetensors, or text) as the folder ``out``: into a temporary folder
    beside it, synced, given the umask's permissions, then renamed over ``out`` (an earlier ``out`` is renamed
    aside first and removed after). On failure the temporary folder is removed and ``out`` is as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    aside = None
    try:
        for name, content in files.items():
            if isinstance(content, str):
                (temporary / name).write_text(content)
            else:
                save_file(content, str(temporary / name))
            os.chmod(temporary / name, umask_mode())  # safetensors writes its files private
            fsync_file(temporary / name)
        os.chmod(temporary, umask_mode(folder=True))
        if out.exists():
            aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-")) / "export"
            os.rename(out, aside)
        os.rename(temporary, out)
    except BaseException:
        if aside is not None and not out.exists():
            os.rename(aside, out)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)
    fsync_dir(out.parent)
