"""Latents on disk (safetensors): ``targetkl encode`` / ``targetkl decode``.

File contents: ``latent`` ``(latent_dim, frames)`` float32 (the posterior mean for a VAE, the quantized
latent otherwise), ``std`` for a VAE, ``codes`` ``(n_codebooks, frames)`` for RVQ; metadata records the
sample rate, hop, frame rate, original length in samples and the model fingerprint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from targetkl.data import load_audio
from targetkl.models.codec import Codec, model_fingerprint


class LatentFileError(ValueError):
    """A latent file that is damaged or belongs to another model."""


@torch.no_grad()
def encode_file(model: Codec, audio_path: str | Path, out_path: str | Path) -> dict:
    audio = load_audio(audio_path, model.sample_rate)
    tensor = model.pad(torch.from_numpy(audio)[None, None])
    model.eval()
    encoded = model.encode(tensor)
    tensors = {"latent": encoded.z[0].float().contiguous()}
    if encoded.std is not None:
        tensors["std"] = encoded.std[0].float().contiguous()
    if encoded.codes is not None:
        tensors["codes"] = encoded.codes[0].to(torch.int32).contiguous()
    metadata = {"format": "targetkl-latents", "version": "1", "sample_rate": str(model.sample_rate),
                "hop": str(model.hop), "frame_rate": repr(model.frame_rate), "num_samples": str(len(audio)),
                "fingerprint": model_fingerprint(model),
                "bits_per_frame": repr(float(encoded.bits_per_frame.double().mean()))}
    save_file(tensors, str(out_path), metadata=metadata)
    return {"frames": int(encoded.z.shape[-1]), **metadata}


def read_latent_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise LatentFileError(f"{path}: not a readable latent file ({error}); re-encode it with `targetkl encode`") from error
    if metadata.get("format") != "targetkl-latents" or "latent" not in tensors:
        raise LatentFileError(f"{path}: not a targetkl latent file; make one with `targetkl encode`")
    return tensors, metadata


@torch.no_grad()
def decode_file(model: Codec, latent_path: str | Path, out_path: str | Path) -> dict:
    tensors, metadata = read_latent_file(latent_path)
    fingerprint = model_fingerprint(model)
    if metadata.get("fingerprint") != fingerprint:
        raise LatentFileError(f"{latent_path}: made by another model (fingerprint {metadata.get('fingerprint')}, "
                              f"this run is {fingerprint}); decode it with the run that encoded it")
    latent = tensors["latent"]
    if latent.ndim != 2 or latent.shape[0] != model.latent_dim:
        raise LatentFileError(f"{latent_path}: latent of shape {tuple(latent.shape)} does not fit this model")
    model.eval()
    audio = model.decode(latent[None].float())[0, 0].numpy()
    audio = audio[: int(metadata["num_samples"])]
    sf.write(str(out_path), np.asarray(audio, dtype=np.float32), model.sample_rate, subtype="PCM_16")
    return {"samples": len(audio), "sample_rate": model.sample_rate}
