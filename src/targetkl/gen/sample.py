"""From prompts to audio: read the text as the generator's task does (caption embedding or transcript tokens),
sample latents with the flow model, decode with the VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from targetkl.gen.flow import sample
from targetkl.gen.train import LoadedGenerator, load_generator
from targetkl.models.codec import Codec, model_fingerprint
from targetkl.inference import CodecRunner, choose_device
from targetkl.runs import load_run
from targetkl.config import ConfigError
from targetkl.checkpoints import CheckpointError

MAX_SECONDS = 600.0  # one generated clip; longer is a typo, not a request


def decoder_for(generator: LoadedGenerator, device: torch.device | str = "cpu") -> Codec:
    """The VAE whose latents the generator learned, checked by fingerprint."""
    info = generator.description["latents_info"]
    run = Path(info["run"])
    if not run.is_dir():
        raise CheckpointError(f"{generator.folder}: its VAE run {run} is gone; restore it there (the latents "
                              "were made by it and only it can decode them)")
    model = load_run(run, device).model
    if model_fingerprint(model) != info["fingerprint"]:
        raise CheckpointError(f"{run}: has changed since {generator.description['latents']} was pre-encoded; "
                              "pre-encode again and retrain the generator")
    return model


def frames_for(generator: LoadedGenerator, seconds: float | None) -> int | None:
    """``seconds`` in latent frames; ``None`` (no ``seconds``): the generator's own length (text-to-sound: its
    training length; text-to-speech: its duration rule per prompt)."""
    if seconds is None:
        return None
    if not 0 < seconds <= MAX_SECONDS:
        raise ConfigError(f"--seconds {seconds}: generate between one latent frame and {MAX_SECONDS:g} s")
    frames = int(round(seconds * float(generator.description["latents_info"]["frame_rate"])))
    if frames < 1:
        raise ConfigError(f"--seconds {seconds}: too short for one latent frame")
    return frames


@torch.no_grad()
def generate_latents(generator: LoadedGenerator, prompts: list[str], frames: int | None = None, steps: int = 32,
                     cfg: float = 3.0, seed: int = 0) -> list[torch.Tensor]:
    """One ``(latent_dim, frames_i)`` latent in the VAE's scale per prompt; ``frames`` None: the generator's
    own length (see :func:`frames_for`)."""
    prompted = generator.conditioning.prompts(prompts, frames)
    latents = sample(generator.model, prompted.text, prompted.frames, steps, cfg, seed, prompted.mask)
    return [latent[:, :length] for latent, length in zip(latents, prompted.lengths)]


@torch.no_grad()
def decode_latents(decoder: Codec, latents) -> list[np.ndarray]:
    """Each ``(latent_dim, frames)`` latent (a ``(B, C, T)`` tensor or a list of ``(C, T_i)``) to ``(frames * hop,)``
    (or ``(channels, frames * hop)``) float32 audio clipped to [-1, 1], batched and in chunks on the decoder's
    device."""
    decoded = CodecRunner(decoder).decode([latent.float().cpu() for latent in latents])
    return [np.clip(audio, -1.0, 1.0).astype(np.float32) for audio in decoded]


def generate_file(generator_dir: str | Path, prompt: str, out: str | Path, steps: int = 32, cfg: float = 3.0,
                  seed: int = 0, seconds: float | None = None, device: str | None = None) -> dict:
    device = choose_device(device)
    generator = load_generator(generator_dir, device)
    decoder = decoder_for(generator, device)
    frames = frames_for(generator, seconds)
    audio = decode_latents(decoder, generate_latents(generator, [prompt], frames, steps, cfg, seed))[0]
    sf.write(str(out), audio.T, decoder.sample_rate, subtype="PCM_16")
    samples = audio.shape[-1]
    return {"samples": samples, "sample_rate": decoder.sample_rate, "seconds": samples / decoder.sample_rate}
