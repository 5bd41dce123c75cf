"""Measure a codec on held-out clips: the rate it spends (from the bottleneck) and its distortion."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from targetkl import rate
from targetkl.data import AudioClip
from targetkl.eval.metrics import clip_metrics, mean_metrics, mel_distance
from targetkl.models.codec import Codec


LATENT_UNUSED_BELOW = 0.2


def latent_use(inputs: list[np.ndarray], decoded: list[np.ndarray], sample_rate: int) -> float:
    """How much the decoded audio follows the latent: over neighbouring pairs of clips ``(i, i+1)`` (cut
    to the shorter one), the mean mel distance between their decodes over the mean mel distance between
    the inputs. Near 0 when the decoder ignores its latent (every clip decodes to the same sound, whatever
    rate the bottleneck reports); 0.5-0.8 for working tiny models on the demo corpus. NaN with fewer
    than two clips.
    """
    if len(inputs) < 2:
        return math.nan
    between_decodes, between_inputs = 0.0, 0.0
    for i in range(len(inputs)):
        j = (i + 1) % len(inputs)
        length = min(len(inputs[i]), len(inputs[j]))  # each decode has its input's length
        between_decodes += mel_distance(decoded[i][:length], decoded[j][:length], sample_rate)
        between_inputs += mel_distance(inputs[i][:length], inputs[j][:length], sample_rate)
    return between_decodes / between_inputs if between_inputs > 0 else math.nan


@torch.no_grad()
def reconstruct(model: Codec, audio: np.ndarray, device: torch.device | str = "cpu") -> tuple[np.ndarray, float, int]:
    """Encode and decode one clip in eval mode: ``(decoded (samples,), total bits, frames)``."""
    model.eval()
    tensor = torch.as_tensor(audio, dtype=torch.float32, device=device)[None, None]
    padded = model.pad(tensor)
    encoded = model.encode(padded)
    decoded = model.decode(encoded.z)[0, 0, : len(audio)].float().cpu().numpy()
    bits = encoded.bits_per_frame.double()
    return decoded, float(bits.sum()), int(bits.shape[-1])


def measure_rate_and_distortion(model: Codec, clips: list[AudioClip], device: torch.device | str = "cpu",
                                perceptual: bool = False, progress: bool = False) -> dict[str, float]:
    """Held-out rate (``rate_kbps``: total bits over all frames, in eval mode), mean distortion and
    :func:`latent_use`.

    The rate is ``frame_rate * mean_t(bits_t) / 1000`` over every frame of every clip.
    """
    was_training = model.training
    total_bits, total_frames, rows, decodes = 0.0, 0, [], []
    for clip in tqdm(clips, desc="evaluating", disable=not progress, leave=False):
        decoded, bits, frames = reconstruct(model, clip.audio, device)
        total_bits += bits
        total_frames += frames
        rows.append(clip_metrics(clip.audio, decoded, model.sample_rate, perceptual))
        decodes.append(decoded)
    model.train(was_training)
    bits_per_frame = total_bits / max(total_frames, 1)
    result = {"rate_kbps": rate.bits_per_frame_to_kbps(bits_per_frame, model.frame_rate),
              "bits_per_frame": bits_per_frame, "frame_rate": model.frame_rate, "clips": len(clips),
              "latent_use": latent_use([clip.audio for clip in clips], decodes, model.sample_rate)}
    result.update(mean_metrics(rows))
    return {k: (v if not (isinstance(v, float) and math.isnan(v)) else math.nan) for k, v in result.items()}
