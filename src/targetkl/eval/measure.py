"""Measure a codec on held-out clips: the rate it spends (from the bottleneck) and its distortion."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from targetkl import rate
from targetkl.data import AudioClip
from targetkl.eval.metrics import (aggregate_metrics, aggregation_texts, bootstrap_draws, clip_metrics, mel_distance,
                                   ratio_with_interval, unscored_counts)
from targetkl.inference import DEFAULT_BATCH_SIZE, MAX_BATCH_SECONDS, CodecRunner
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
        decodes, inputs_apart = _pair_distances((inputs[i], decoded[i]), (inputs[j], decoded[j]), sample_rate)
        between_decodes, between_inputs = between_decodes + decodes, between_inputs + inputs_apart
    return between_decodes / between_inputs if between_inputs > 0 else math.nan


def reconstruct(model: Codec, audio: np.ndarray,
                device: torch.device | str | None = None) -> tuple[np.ndarray, float, int]:
    """Encode and decode one clip in eval mode: ``(decoded (samples,) or (channels, samples), total bits, frames)``."""
    decoded, encoded = CodecRunner(model, device).reconstruct([audio])
    return decoded[0], float(encoded[0].bits_per_frame.sum()), encoded[0].frames


def measure_rate_and_distortion(model: Codec, clips: Sequence[AudioClip], device: torch.device | str | None = None,
                                perceptual: bool = False, progress: bool = False,
                                batch_size: int = DEFAULT_BATCH_SIZE, recognizer=None) -> dict[str, float]:
    """Held-out rate (``rate_kbps``: total bits over all frames, in eval mode), mean distortion and
    :func:`latent_use`.

    The rate is ``frame_rate * mean_t(bits_t) / 1000`` over every frame of every clip. ``clips`` may be
    read lazily (``AudioSet.clips``): they are taken ``batch_size`` at a time, so memory holds one batch
    (and the first clip, for the last pair of :func:`latent_use`). Batches give the numbers of one clip
    at a time up to float rounding. With a ``recognizer`` (``eval.asr.SpeechRecognizer``) each captioned
    clip's decode, and its original, are transcribed and scored against the caption (``wer``, ``cer``,
    ``wer_original``, ``cer_original``, pooled over clips).
    """
    runner = CodecRunner(model, device, batch_size)
    bits, frames, domains, rows = [], [], [], []
    between_decodes, between_inputs = [], []  # per neighbouring pair of clips, for latent_use
    first = previous = None
    bar = tqdm(total=len(clips), desc="evaluating", disable=not progress, leave=False)
    for batch in _clip_batches(clips, batch_size, int(MAX_BATCH_SECONDS * model.sample_rate)):
        decoded, encoded = runner.reconstruct([clip.audio for clip in batch])
        for clip, decode, code in zip(batch, decoded, encoded):
            audio = clip.audio
            bits.append(float(code.bits_per_frame.sum()))
            frames.append(code.frames)
            domains.append(getattr(clip, "domain", None))
            rows.append(clip_metrics(audio, decode, model.sample_rate, perceptual))
            if recognizer is not None and clip.caption:
                rows[-1].update(recognizer.clip_errors(clip.caption, audio, decode, model.sample_rate, clip.path))
            if previous is not None:
                decodes, inputs = _pair_distances(previous, (audio, decode), model.sample_rate)
                between_decodes.append(decodes)
                between_inputs.append(inputs)
            first = first or (audio, decode)
            previous = (audio, decode)
        bar.update(len(batch))
    bar.close()
    if len(rows) >= 2:
        decodes, inputs = _pair_distances(previous, first, model.sample_rate)
        between_decodes.append(decodes)
        between_inputs.append(inputs)
    bits, frames = np.array(bits), np.array(frames, dtype=np.float64)
    result = {**_rate(bits, frames, model.frame_rate), "frame_rate": model.frame_rate, "clips": len(rows)}
    result.update(ratio_with_interval("latent_use", np.array(between_decodes), np.array(between_inputs),
                                      bootstrap_draws(len(between_inputs))))
    if len(rows) < 2:
        result["latent_use"] = math.nan
    result.update(aggregate_metrics(rows))
    texts = aggregation_texts()
    result["aggregation"] = {key: texts[key] for key in result if key in texts}
    result["unscored"] = unscored_counts(rows)
    if any(domain is not None for domain in domains):
        result["by_domain"] = {}
        for domain in sorted({d for d in domains if d is not None}):
            chosen = [i for i, d in enumerate(domains) if d == domain]
            result["by_domain"][domain] = {**_rate(bits[chosen], frames[chosen], model.frame_rate),
                                           "clips": len(chosen), **aggregate_metrics([rows[i] for i in chosen])}
    return result


def _rate(bits: np.ndarray, frames: np.ndarray, frame_rate: float) -> dict[str, float]:
    """``rate_kbps`` (all bits over all frames), its 95% bootstrap interval over clips, and ``bits_per_frame``."""
    pooled = ratio_with_interval("bits_per_frame", bits, frames, bootstrap_draws(len(bits)))
    return {"rate_kbps": rate.bits_per_frame_to_kbps(pooled["bits_per_frame"], frame_rate),
            "rate_kbps_lo": rate.bits_per_frame_to_kbps(pooled["bits_per_frame_lo"], frame_rate),
            "rate_kbps_hi": rate.bits_per_frame_to_kbps(pooled["bits_per_frame_hi"], frame_rate),
            "bits_per_frame": pooled["bits_per_frame"]}


def _clip_batches(clips: Sequence[AudioClip], batch_size: int, max_samples: int):
    """Lists of at most ``batch_size`` clips and at most ``max_samples`` samples (at least one clip), each
    clip read once, in order."""
    batch, samples = [], 0
    for index in range(len(clips)):
        clip = clips[index]
        if batch and (len(batch) >= batch_size or samples + clip.audio.size > max_samples):
            yield batch
            batch, samples = [], 0
        batch.append(clip)
        samples += clip.audio.size
    if batch:
        yield batch


def _pair_distances(one: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray],
                    sample_rate: int) -> tuple[float, float]:
    """Mel distances between two clips' decodes and between their inputs, both cut to the shorter clip."""
    length = min(one[0].shape[-1], other[0].shape[-1])
    return (mel_distance(one[1][..., :length], other[1][..., :length], sample_rate),
            mel_distance(one[0][..., :length], other[0][..., :length], sample_rate))
