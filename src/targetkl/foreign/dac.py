"""descript-audio-codec (DAC) checkpoints: read them without executing code, and map their weights onto ours.

DAC's released weights files (and ``DAC.save(path, package=False)``) are a ``torch.save`` of
``{"state_dict": ..., "metadata": {"kwargs": DAC's constructor arguments}}``. They are read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only; a torch.package (what
``DAC.save`` writes by default: pickled code) is refused in one line, never loaded.

Our ``dac`` architecture (:mod:`targetkl.models.dac`) is DAC's encoder and decoder layer for layer: the same
modules in the same order, with weight norm stored as ``weight_g``/``weight_v`` in both. Only two container
names differ (``encoder.block`` is our ``encoder.layers``, ``decoder.model`` our ``decoder.layers``). One
layout differs for odd strides (DAC's 16 and 24 kHz models, strides 2, 4, 5, 8): DAC's transposed
convolution makes ``5 L - 1`` samples of ``L`` frames where ours makes exactly ``5 L``; ``model.dac.exact_length
= false`` builds DAC's layout (see :func:`config_settings`). ``tools/reference_check.py`` compares both against
descript-audio-codec itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from targetkl.foreign.base import (ForeignCheckpointError, ForeignCodec, ForeignFormat, load_weights_only,
                                   named_tensors, register_format, whole_frames_seconds)

CROP_SECONDS = 0.38  # DAC's training excerpts
RENAMES = (("encoder.block.", "encoder.layers."), ("decoder.model.", "decoder.layers."),
           ("quantizer.quantizers.", "bottleneck.quantizers."))
SAVE_HINT = "save the model's weights with DAC.save(path, package=False) and import that"

__all__ = ["ForeignCheckpointError", "read_checkpoint", "config_settings", "codec_weights", "read"]


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(kwargs, state_dict)`` of a DAC weights file; a one-line :class:`ForeignCheckpointError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ForeignCheckpointError(f"{path}: not found; pass a DAC weights file (.pth)")
    loaded = load_weights_only(path, SAVE_HINT)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("state_dict"), dict) \
            or not isinstance((loaded.get("metadata") or {}).get("kwargs"), dict):
        raise ForeignCheckpointError(f"{path}: holds no state_dict with metadata.kwargs, as DAC's weights files do; "
                                     "save it with DAC.save(path, package=False)")
    return dict(loaded["metadata"]["kwargs"]), named_tensors(loaded["state_dict"], path)


def config_settings(kwargs: dict[str, Any], where: str = "the checkpoint") -> dict[str, Any]:
    """Settings (``--set`` keys) of our ``dac`` architecture that build DAC's encoder and decoder, and a training
    crop (``data.segment_seconds``, about DAC's 0.38 s) that is a whole number of frames.

    The latent is DAC's continuous one (``latent_dim``, by default ``encoder_dim * 2 ** len(encoder_rates)``);
    the decoder's rates must mirror the encoder's, as in every released DAC."""
    defaults = {"encoder_dim": 64, "encoder_rates": [2, 4, 8, 8], "latent_dim": None, "decoder_dim": 1536,
                "decoder_rates": [8, 8, 4, 2], "sample_rate": 44100}
    unknown = set(kwargs) - set(defaults) - {"n_codebooks", "codebook_size", "codebook_dim", "quantizer_dropout"}
    if unknown:
        raise ForeignCheckpointError(f"{where}: DAC arguments {', '.join(sorted(unknown))} are not DAC's "
                                     "(descript-audio-codec 1.0); is this a DAC checkpoint?")
    settings = {**defaults, **kwargs}
    rates = [int(r) for r in settings["encoder_rates"]]
    if [int(r) for r in settings["decoder_rates"]] != rates[::-1]:
        raise ForeignCheckpointError(f"{where}: decoder_rates {settings['decoder_rates']} do not mirror encoder_rates "
                                     f"{rates}; only mirrored DAC layouts can be imported")
    latent = settings["latent_dim"] or int(settings["encoder_dim"]) * 2 ** len(rates)
    sample_rate = int(settings["sample_rate"])
    return {"data.segment_seconds": whole_frames_seconds(CROP_SECONDS, sample_rate, math.prod(rates)),
            "model.architecture": "dac", "model.sample_rate": sample_rate, "model.audio_channels": 1,
            "model.encoder_dim": int(settings["encoder_dim"]), "model.strides": tuple(rates),
            "model.decoder_dim": int(settings["decoder_dim"]), "model.latent_dim": int(latent),
            "model.dac.exact_length": not any(r % 2 for r in rates)}


def codec_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DAC's encoder, decoder and quantizer weights under our names (the quantizer's as our ``rvq``
    bottleneck's: the same factorized, L2-normalized residual stages, module for module)."""
    out = {}
    for key, tensor in state.items():
        for theirs, ours in RENAMES:
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = tensor
    return out


def quantizer_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model.rvq.*`` keys that rebuild DAC's residual quantizer as our ``rvq`` bottleneck."""
    dropout = kwargs.get("quantizer_dropout", False)
    return {"model.rvq.codebooks": int(kwargs.get("n_codebooks", 9)),
            "model.rvq.codebook_size": int(kwargs.get("codebook_size", 1024)),
            "model.rvq.codebook_dim": int(kwargs.get("codebook_dim", 8)),
            "model.rvq.dropout": float(dropout)}


def detect(path: Path) -> bool:
    """A file that is not safetensors, JSON or a stable-audio-tools checkpoint (no ``model_config.json`` beside
    it): read as DAC's, whose errors name what is wrong."""
    return path.is_file() and path.suffix not in (".safetensors", ".json", ".ckpt") \
        and not (path.parent / "model_config.json").is_file()


def read(path: Path) -> ForeignCodec:
    kwargs, state = read_checkpoint(path)
    settings = config_settings(kwargs, str(path))
    weights = codec_weights(state)
    if not any(key.startswith("encoder.") for key in weights) or not any(key.startswith("decoder.") for key in weights):
        raise ForeignCheckpointError(f"{path}: has no encoder.block.* and decoder.model.* weights, as DAC's have")
    frame_rate = settings["model.sample_rate"] / math.prod(settings["model.strides"])
    notes = ["DAC's continuous latent (the encoder's output, before the quantizer's projections) is the latent: "
             f"{settings['model.latent_dim']} channels at {frame_rate:g} Hz"]
    if (path.parent.parent / "discriminator" / "weights.pth").is_file():
        notes.append("DAC's discriminator weights beside it are not loaded (our discriminators are not checked "
                     "against DAC's yet): the discriminator starts fresh")
    return ForeignCodec("dac", settings, weights, encoder_output="latent", bottleneck="rvq",
                        bottleneck_settings=quantizer_settings(kwargs), notes=notes)


register_format(ForeignFormat("dac", "descript-audio-codec weights file (.pth: state_dict + metadata.kwargs)",
                              detect, read))
