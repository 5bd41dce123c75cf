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
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from targetkl.errors import UserError

CROP_SECONDS = 0.38  # DAC's training excerpts
RENAMES = (("encoder.block.", "encoder.layers."), ("decoder.model.", "decoder.layers."))


class ForeignCheckpointError(UserError, ValueError):
    """A foreign checkpoint that cannot be read or does not describe a model we can build."""


def _is_torch_package(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/.data/extern_modules" in name or name.endswith(".data/version") for name in names) and not any(
        name.endswith("/data.pkl") for name in names)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(kwargs, state_dict)`` of a DAC weights file; a one-line :class:`ForeignCheckpointError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ForeignCheckpointError(f"{path}: not found; pass a DAC weights file (.pth)")
    if _is_torch_package(path):
        raise ForeignCheckpointError(f"{path}: a torch.package (pickled code, which is never executed here); save "
                                     "the model's weights with DAC.save(path, package=False) and import that")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as error:
        detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise ForeignCheckpointError(f"{path}: not a readable weights-only torch file ({detail}); pass DAC's "
                                     "weights file (DAC.save(path, package=False))") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("state_dict"), dict) \
            or not isinstance((loaded.get("metadata") or {}).get("kwargs"), dict):
        raise ForeignCheckpointError(f"{path}: holds no state_dict with metadata.kwargs, as DAC's weights files do; "
                                     "save it with DAC.save(path, package=False)")
    state = loaded["state_dict"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ForeignCheckpointError(f"{path}: its state_dict holds something other than named tensors")
    return dict(loaded["metadata"]["kwargs"]), state


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
    sample_rate, hop = int(settings["sample_rate"]), math.prod(rates)
    frames = max(1, round(CROP_SECONDS * sample_rate / hop))
    return {"data.segment_seconds": frames * hop / sample_rate,
            "model.architecture": "dac", "model.sample_rate": sample_rate, "model.audio_channels": 1,
            "model.encoder_dim": int(settings["encoder_dim"]), "model.strides": tuple(rates),
            "model.decoder_dim": int(settings["decoder_dim"]), "model.latent_dim": int(latent),
            "model.dac.exact_length": not any(r % 2 for r in rates)}


def codec_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DAC's encoder and decoder weights under our names (the quantizer's are left out)."""
    out = {}
    for key, tensor in state.items():
        for theirs, ours in RENAMES:
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = tensor
    return out
