"""Latents on disk (safetensors): ``targetkl encode`` / ``targetkl decode``.

File contents: ``latent`` ``(latent_dim, frames)`` float32 (the posterior mean for a VAE, the quantized
latent otherwise), ``std`` for a VAE, ``codes`` ``(n_codebooks, frames)`` for RVQ; metadata records the
sample rate, hop, frame rate, original length in samples and the model fingerprint.

Both directions run in chunks (:mod:`targetkl.inference`): the audio is read from disk one chunk at a
time and the decoded audio written as it comes, so a file of any length fits in bounded memory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from targetkl.errors import UserError
from targetkl.data.audio import file_entry, read_window, write_audio_stream
from targetkl.fileio import atomic_path, output_path
from targetkl.inference import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SECONDS, CodecRunner
from targetkl.models.codec import Codec, model_fingerprint


class LatentFileError(UserError, ValueError):
    """A latent file that is damaged or belongs to another model."""


@torch.no_grad()
def encode_file(model: Codec, audio_path: str | Path, out_path: str | Path, batch_size: int = DEFAULT_BATCH_SIZE,
                chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> dict:
    out_path = output_path(out_path)
    entry = file_entry(audio_path)
    length = entry.length_at(model.sample_rate)
    runner = CodecRunner(model, batch_size=batch_size, chunk_seconds=chunk_seconds)
    encoded = runner.encode_reader([length], lambda _, start, stop: read_window(
        entry, start, stop - start, model.sample_rate, channels=model.audio_channels))[0]
    tensors = {"latent": encoded.z.contiguous()}
    if encoded.std is not None:
        tensors["std"] = encoded.std.contiguous()
    if encoded.codes is not None:
        tensors["codes"] = encoded.codes.to(torch.int32).contiguous()
    metadata = {"format": "targetkl-latents", "version": "1", "sample_rate": str(model.sample_rate),
                "hop": str(model.hop), "frame_rate": repr(model.frame_rate), "num_samples": str(length),
                "audio_channels": str(model.audio_channels),
                "fingerprint": model_fingerprint(model),
                "bits_per_frame": repr(float(encoded.bits_per_frame.mean()))}
    with atomic_path(out_path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return {"frames": encoded.frames, **metadata}


def read_latent_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise LatentFileError(f"{path}: not a readable latent file ({error}); "
                              "re-encode it with `targetkl encode`") from error
    if metadata.get("format") != "targetkl-latents" or "latent" not in tensors:
        raise LatentFileError(f"{path}: not a targetkl latent file; make one with `targetkl encode`")
    return tensors, metadata


@torch.no_grad()
def decode_file(model: Codec, latent_path: str | Path, out_path: str | Path, batch_size: int = DEFAULT_BATCH_SIZE,
                chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> dict:
    out_path = output_path(out_path)
    tensors, metadata = read_latent_file(latent_path)
    fingerprint = model_fingerprint(model)
    if metadata.get("fingerprint") != fingerprint:
        raise LatentFileError(f"{latent_path}: made by another model (fingerprint {metadata.get('fingerprint')}, "
                              f"this run is {fingerprint}); decode it with the run that encoded it")
    latent = tensors["latent"]
    if latent.ndim != 2 or latent.shape[0] != model.latent_dim:
        raise LatentFileError(f"{latent_path}: latent of shape {tuple(latent.shape)} does not fit this model")
    if not torch.isfinite(latent).all():
        raise LatentFileError(f"{latent_path}: the latent holds NaN or Inf values; re-encode it with `targetkl encode`")
    try:
        num_samples = int(metadata["num_samples"])
    except (KeyError, ValueError):
        raise LatentFileError(f"{latent_path}: damaged metadata (num_samples {metadata.get('num_samples')!r}); "
                              "re-encode it with `targetkl encode`") from None
    if not 0 < num_samples <= latent.shape[-1] * model.hop:
        raise LatentFileError(f"{latent_path}: num_samples {num_samples} does not fit its {latent.shape[-1]} frames; "
                              "re-encode it with `targetkl encode`")
    runner = CodecRunner(model, batch_size=batch_size, chunk_seconds=chunk_seconds)
    pieces = ((first, audio) for _, first, audio in runner.decode_pieces([latent.float()]))
    samples = write_audio_stream(out_path, model.sample_rate, pieces, num_samples, model.audio_channels)
    return {"samples": samples, "sample_rate": model.sample_rate, "channels": model.audio_channels}
