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


class NeighbourDistances:
    """For :func:`latent_use`, fed one clip at a time: the mel distances between neighbouring clips' decodes and
    between their inputs (each pair cut to the shorter clip), the last clip paired with the first."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.decodes: list[float] = []
        self.inputs: list[float] = []
        self._first = self._previous = None

    def add(self, audio: np.ndarray, decoded: np.ndarray) -> None:
        if self._previous is not None:
            decodes, inputs = self._distances(self._previous, (audio, decoded))
            self.decodes.append(decodes)
            self.inputs.append(inputs)
        self._first = self._first or (audio, decoded)
        self._previous = (audio, decoded)

    def _distances(self, one: tuple[np.ndarray, np.ndarray],
                   other: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
        """Mel distances between two clips' decodes and between their inputs, both cut to the shorter clip."""
        length = min(one[0].shape[-1], other[0].shape[-1])
        return (mel_distance(one[1][..., :length], other[1][..., :length], self.sample_rate),
                mel_distance(one[0][..., :length], other[0][..., :length], self.sample_rate))

    def latent_use(self) -> dict[str, float]:
        """``latent_use`` with its 95% bootstrap interval over the pairs (NaN with fewer than two clips)."""
        decodes, inputs = list(self.decodes), list(self.inputs)
        if decodes:  # close the ring: the last clip against the first
            closing = self._distances(self._previous, self._first)
            decodes.append(closing[0])
            inputs.append(closing[1])
        result = ratio_with_interval("latent_use", np.array(decodes), np.array(inputs), bootstrap_draws(len(inputs)))
        if len(decodes) < 2:
            result["latent_use"] = math.nan
        return result


def latent_use(inputs: list[np.ndarray], decoded: list[np.ndarray], sample_rate: int) -> float:
    """How much the decoded audio follows the latent: over neighbouring pairs of clips ``(i, i+1)`` (cut
    to the shorter one, the last with the first), the summed mel distance between their decodes over the summed
    mel distance between the inputs. Near 0 when the decoder ignores its latent (every clip decodes to the same
    sound, whatever rate the bottleneck reports); 0.5-0.8 for working tiny models on the demo corpus. NaN with
    fewer than two clips.
    """
    pairs = NeighbourDistances(sample_rate)
    for audio, decode in zip(inputs, decoded):
        pairs.add(audio, decode)
    return pairs.latent_use()["latent_use"]


class ClipTally:
    """A codec's decodes of held-out clips, taken one clip at a time (this iterates; the metric registry scores):
    each clip's registered metrics (:func:`clip_metrics`; with a ``recognizer``, ``eval.asr.SpeechRecognizer``,
    also the word and character errors of each captioned clip's decode and original), its domain, the bits it cost
    over its span (frames or seconds, with ``to_kbps`` turning bits per unit of span into kbps), and, with
    ``neighbours``, the distances of :func:`latent_use`."""

    def __init__(self, sample_rate: int, perceptual: bool = False, recognizer=None, neighbours: bool = False):
        self.sample_rate, self.perceptual, self.recognizer = sample_rate, perceptual, recognizer
        self.rows: list[dict[str, float]] = []
        self.domains: list[str | None] = []
        self.bits: list[float] = []
        self.spans: list[float] = []
        self.neighbours = NeighbourDistances(sample_rate) if neighbours else None

    def add(self, clip: AudioClip, decoded: np.ndarray, bits: float | None = None, span: float | None = None) -> None:
        row = clip_metrics(clip.audio, decoded, self.sample_rate, self.perceptual)
        if self.recognizer is not None and clip.caption:
            row.update(self.recognizer.clip_errors(clip.caption, clip.audio, decoded, self.sample_rate, clip.path))
        self.rows.append(row)
        self.domains.append(getattr(clip, "domain", None))
        if bits is not None:
            self.bits.append(bits)
            self.spans.append(span)
        if self.neighbours is not None:
            self.neighbours.add(clip.audio, decoded)

    def _rate(self, chosen: list[int], to_kbps) -> dict[str, float]:
        """``rate_kbps`` (all bits over all spans) and its 95% bootstrap interval over the clips ``chosen``."""
        pooled = ratio_with_interval("per_unit", np.array([self.bits[i] for i in chosen], dtype=np.float64),
                                     np.array([self.spans[i] for i in chosen], dtype=np.float64),
                                     bootstrap_draws(len(chosen)))
        return {f"rate_kbps{s}": to_kbps(pooled[f"per_unit{s}"]) for s in ("", "_lo", "_hi")}

    def summary(self, to_kbps=None) -> dict:
        """Every metric aggregated over the clips as its registry entry says, with its interval; ``clips``,
        ``aggregation`` and ``unscored``; with bits, ``rate_kbps`` and its interval; with neighbours,
        ``latent_use``; where the source gives clips a domain, the rate and metrics per domain in ``by_domain``."""
        rated = bool(self.bits) and to_kbps is not None
        result: dict = {"clips": len(self.rows)}
        if rated:
            result.update(self._rate(list(range(len(self.rows))), to_kbps))
        if self.neighbours is not None:
            result.update(self.neighbours.latent_use())
        result.update(aggregate_metrics(self.rows))
        texts = aggregation_texts()
        result["aggregation"] = {key: texts[key] for key in result if key in texts}
        result["unscored"] = unscored_counts(self.rows)
        if any(domain is not None for domain in self.domains):
            result["by_domain"] = {}
            for domain in sorted({d for d in self.domains if d is not None}):
                chosen = [i for i, d in enumerate(self.domains) if d == domain]
                rates = self._rate(chosen, to_kbps) if rated else {}
                result["by_domain"][domain] = {**rates, "clips": len(chosen),
                                               **aggregate_metrics([self.rows[i] for i in chosen])}
        return result


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
    tally = ClipTally(model.sample_rate, perceptual, recognizer, neighbours=True)
    bar = tqdm(total=len(clips), desc="evaluating", disable=not progress, leave=False)
    for batch in _clip_batches(clips, batch_size, int(MAX_BATCH_SECONDS * model.sample_rate)):
        decoded, encoded = runner.reconstruct([clip.audio for clip in batch])
        for clip, decode, code in zip(batch, decoded, encoded):
            tally.add(clip, decode, float(code.bits_per_frame.sum()), code.frames)
        bar.update(len(batch))
    bar.close()
    result = tally.summary(lambda bits_per_frame: rate.bits_per_frame_to_kbps(bits_per_frame, model.frame_rate))
    bits, frames = np.array(tally.bits, dtype=np.float64), np.array(tally.spans, dtype=np.float64)
    per_frame = float(bits.sum()) / float(frames.sum()) if frames.sum() else math.nan
    return {**result, "bits_per_frame": per_frame, "frame_rate": model.frame_rate}


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
