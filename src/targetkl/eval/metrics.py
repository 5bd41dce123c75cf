"""Distortion metrics on single clips: ``reference`` and ``estimate`` are ``(samples,)`` float arrays.

``mel_distance``, ``stft_distance`` and ``si_sdr`` use fixed settings (independent of any training
config) so runs and codecs are compared on the same scale. PESQ (wide-band, 16 kHz) and STOI run on
16 kHz resampled audio; ViSQOL runs in speech mode at 16 kHz or in audio mode at 48 kHz. On a clip longer than
``PERCEPTUAL_WINDOW_SECONDS`` the three perceptual metrics score at most ``PERCEPTUAL_MAX_WINDOWS`` windows of that
length, evenly spaced from its start to its end, and take their mean: their cost is bounded per clip (ViSQOL's
search over a 5-minute track took over 6 minutes), the other metrics still see the whole clip.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr
import torch

from targetkl.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, si_sdr

log = logging.getLogger("targetkl.eval")

MEL_WINDOWS = (128, 256, 512, 1024, 2048)
STFT_WINDOWS = (256, 512, 1024, 2048)
SPEECH_RATE = 16000
VISQOL_MIN_SECONDS = 1.0
MIN_SAMPLES = max(MEL_WINDOWS + STFT_WINDOWS)
PERCEPTUAL_WINDOW_SECONDS = 10.0
PERCEPTUAL_MAX_WINDOWS = 3


@functools.lru_cache(maxsize=8)
def _mel_metric(sample_rate: int) -> MultiScaleMelLoss:
    return MultiScaleMelLoss(sample_rate, MEL_WINDOWS)


_STFT_METRIC = MultiResolutionSTFTLoss(STFT_WINDOWS)


def _tensor(audio: np.ndarray) -> torch.Tensor:
    """``(samples,)`` or ``(channels, samples)`` to ``(1, channels, samples)``."""
    audio = np.asarray(audio, dtype=np.float32)
    return torch.as_tensor(audio).reshape(1, -1, audio.shape[-1])


def padded_to(audio: np.ndarray, samples: int) -> np.ndarray:
    """``audio`` followed by zeros up to ``samples`` along its last axis (unchanged when it is that long)."""
    audio = np.asarray(audio, dtype=np.float32)
    missing = samples - audio.shape[-1]
    return audio if missing <= 0 else np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, missing)])


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Multi-scale log-mel L1 (over every channel of ``(channels, samples)`` audio); a pair shorter than the
    largest window is zero-padded to it (the STFT's reflection padding needs more samples than half a window)."""
    reference, estimate = padded_to(reference, MIN_SAMPLES), padded_to(estimate, MIN_SAMPLES)
    with torch.no_grad():
        return float(_mel_metric(sample_rate)(_tensor(estimate), _tensor(reference)))


def stft_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Multi-resolution STFT distance; short pairs are zero-padded as in :func:`mel_distance`."""
    reference, estimate = padded_to(reference, MIN_SAMPLES), padded_to(estimate, MIN_SAMPLES)
    with torch.no_grad():
        return float(_STFT_METRIC(_tensor(estimate), _tensor(reference)))


def si_sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(si_sdr(_tensor(estimate), _tensor(reference))[0])


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float64)
    return soxr.resample(np.asarray(audio, dtype=np.float64), rate_in, rate_out)


def pesq_score(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO) at 16 kHz; NaN where PESQ finds no speech-like activity."""
    from pesq import pesq

    try:
        return float(pesq(SPEECH_RATE, _resample(reference, sample_rate, SPEECH_RATE),
                          _resample(estimate, sample_rate, SPEECH_RATE), "wb"))
    except Exception as error:
        log.debug("PESQ undefined for this clip: %s", error)
        return math.nan


def stoi_score(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    from pystoi import stoi

    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = stoi(np.asarray(reference, dtype=np.float64), np.asarray(estimate, dtype=np.float64), sample_rate,
                         extended=False)
    except Exception as error:  # pystoi fails on clips shorter than its analysis frames
        log.debug("STOI undefined for this clip: %s", error)
        return math.nan
    # pystoi returns exactly 1e-5 when a clip has too few frames to score
    return float(value) if np.isfinite(value) and value > -1e3 and value != 1e-5 else math.nan


@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block: native libraries (TensorFlow Lite inside ViSQOL)
    print INFO lines there that Python's warnings filters cannot reach."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.lru_cache(maxsize=2)
def _visqol(mode: str):
    from visqol import VisqolApi

    with native_stderr_silenced():
        api = VisqolApi()
        api.create(mode=mode)
    return api


def visqol_score(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """ViSQOL MOS-LQO: speech mode at 16 kHz for rates up to 16 kHz, audio mode at 48 kHz above.

    ViSQOL needs about a second of signal; shorter clips are zero-padded to ``VISQOL_MIN_SECONDS``.
    """
    mode, rate = ("speech", SPEECH_RATE) if sample_rate <= SPEECH_RATE else ("audio", 48000)
    reference, estimate = _resample(reference, sample_rate, rate), _resample(estimate, sample_rate, rate)
    shortfall = int(VISQOL_MIN_SECONDS * rate) - len(reference)
    if shortfall > 0:
        reference, estimate = np.pad(reference, (0, shortfall)), np.pad(estimate, (0, shortfall))
    try:
        api = _visqol(mode)
        with native_stderr_silenced():
            result = api.measure_from_arrays(reference, estimate, rate)
        return float(result.moslqo)
    except Exception as error:
        log.debug("ViSQOL undefined for this clip: %s", error)
        return math.nan


@dataclass(frozen=True)
class Metric:
    """One metric: ``score(reference, estimate, sample_rate) -> float`` on one mono clip (NaN where it cannot
    score), or ``pooled = (numerator, denominator)``: per-clip counts summed over clips before dividing (the
    recognizer's word and character errors). ``aggregation``: ``mean`` or ``median`` over the clips it scored,
    or ``pooled``; ``explanation`` says so in outputs. ``perceptual`` metrics score at most
    ``PERCEPTUAL_MAX_WINDOWS`` windows of a long clip and are left out by ``--fast``; ``reference_only`` ones
    describe the originals (the recognizer's own error) and stay out of the rate-distortion tables."""

    name: str
    unit: str
    higher_is_better: bool
    aggregation: str
    explanation: str
    score: Callable[[np.ndarray, np.ndarray, int], float] | None = None
    perceptual: bool = False
    pooled: tuple[str, str] | None = None
    reference_only: bool = False


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric``: ``eval``, ``sweep``, ``controllers`` and the report show it from then on."""
    if metric.aggregation not in ("mean", "median", "pooled") or (metric.aggregation == "pooled") != bool(
            metric.pooled) or (metric.score is None) == (metric.pooled is None):
        raise ValueError(f"metric {metric.name}: a per-clip score aggregated by mean or median, or pooled counts")
    METRICS[metric.name] = metric
    return metric


for _metric in (
        Metric("mel_distance", "", False, "mean", "mean over clips", mel_distance),
        Metric("stft_distance", "", False, "mean", "mean over clips",
               lambda reference, estimate, sample_rate: stft_distance(reference, estimate)),
        Metric("si_sdr", "dB", True, "median", "median over clips (dB; a mean is dominated by quiet clips' very "
               "negative values)", lambda reference, estimate, sample_rate: si_sdr_db(reference, estimate)),
        Metric("pesq", "MOS", True, "mean", "mean over scored clips", pesq_score, perceptual=True),
        Metric("stoi", "", True, "mean", "mean over scored clips", stoi_score, perceptual=True),
        Metric("visqol", "MOS", True, "mean", "mean over scored clips", visqol_score, perceptual=True),
        Metric("wer", "", False, "pooled", "pooled: word edits over all clips / reference words over all clips",
               pooled=("wer_edits", "wer_words")),
        Metric("cer", "", False, "pooled", "pooled: character edits over all clips / reference characters over "
               "all clips", pooled=("cer_edits", "cer_chars")),
        Metric("wer_original", "", False, "pooled", "pooled, as wer, for the original audio (the recognizer's own "
               "error)", pooled=("wer_original_edits", "wer_words"), reference_only=True),
        Metric("cer_original", "", False, "pooled", "pooled, as cer, for the original audio",
               pooled=("cer_original_edits", "cer_chars"), reference_only=True)):
    register_metric(_metric)


def metric_names(perceptual: bool = True, reference_only: bool = False) -> tuple[str, ...]:
    """Registered metric names in registration order (the order of every table)."""
    return tuple(m.name for m in METRICS.values() if (perceptual or not m.perceptual)
                 and (reference_only or not m.reference_only))


def clip_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                 perceptual: bool = True) -> dict[str, float]:
    """Every registered per-clip metric for one clip; ``estimate`` is cut or zero-padded to the reference's
    length. For ``(channels, samples)`` audio each metric is the mean of its values on each channel (NaN if any
    channel could not be scored)."""
    reference = np.asarray(reference, dtype=np.float32)
    estimate = padded_to(np.asarray(estimate, dtype=np.float32)[..., : reference.shape[-1]], reference.shape[-1])
    if reference.ndim == 2:
        per_channel = [clip_metrics(one, other, sample_rate, perceptual) for one, other in zip(reference, estimate)]
        return {key: float(np.mean([values[key] for values in per_channel])) for key in per_channel[0]}
    values = {}
    windows = perceptual_windows(reference.shape[-1], sample_rate)
    for metric in METRICS.values():
        if metric.score is None or (metric.perceptual and not perceptual):
            continue
        if not metric.perceptual:
            values[metric.name] = float(metric.score(reference, estimate, sample_rate))
            continue
        scores = [metric.score(reference[start:stop], estimate[start:stop], sample_rate) for start, stop in windows]
        finite = [value for value in scores if math.isfinite(value)]
        values[metric.name] = float(np.mean(finite)) if finite else math.nan
    return values


def perceptual_windows(length: int, sample_rate: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` sample ranges the perceptual metrics score on a clip of ``length`` samples: the whole
    clip up to ``PERCEPTUAL_WINDOW_SECONDS``, else up to ``PERCEPTUAL_MAX_WINDOWS`` windows of that length, evenly
    spaced from the start to the end."""
    window = int(PERCEPTUAL_WINDOW_SECONDS * sample_rate)
    if length <= window:
        return [(0, length)]
    count = min(PERCEPTUAL_MAX_WINDOWS, length // window)
    return [(int(start), int(start) + window) for start in np.linspace(0, length - window, count)]


def aggregation_texts() -> dict[str, str]:
    """``{metric: how it is aggregated}``, written beside the numbers (``aggregation`` in eval's JSON)."""
    return {name: metric.explanation for name, metric in METRICS.items()}


BOOTSTRAP_DRAWS = 1000  # resamples of the clips for each 95% interval
BOOTSTRAP_SEED = 0  # the same resamples every time: an interval is a pure function of the clips' values


def aggregate_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """One value per metric over clips, each aggregated as its registry entry says (NaN, a metric a clip could
    not score, is left out; NaN if no clip could be scored); a key no metric registered is averaged. Pooled
    metrics read their per-clip counts.

    Beside each ``<metric>``: ``<metric>_lo`` and ``<metric>_hi``, the 95% percentile-bootstrap interval of the
    same aggregate over ``BOOTSTRAP_DRAWS`` resamples of the clips (NaN with fewer than two clips)."""
    keys = {k for row in rows for k in row}
    pooled = {name: metric.pooled for name, metric in METRICS.items() if metric.pooled}
    counts = {count for pair in pooled.values() for count in pair}
    draws = bootstrap_draws(len(rows))
    out = {}
    for key, (edits_key, total_key) in pooled.items():
        scored = [row for row in rows if edits_key in row]
        if scored:
            edits = np.array([row[edits_key] for row in scored], dtype=np.float64)
            totals = np.array([row[total_key] for row in scored], dtype=np.float64)
            out.update(ratio_with_interval(key, edits, totals, bootstrap_draws(len(scored))))
    for key in sorted(keys - counts):
        values = np.array([row.get(key, math.nan) for row in rows], dtype=np.float64)
        values[~np.isfinite(values)] = np.nan
        average = np.nanmedian if key in METRICS and METRICS[key].aggregation == "median" else np.nanmean
        scored = np.isfinite(values)
        out[key] = float(average(values[scored])) if scored.any() else math.nan
        out[f"{key}_lo"], out[f"{key}_hi"] = math.nan, math.nan
        if draws is not None and scored.sum() >= 2:
            resampled = values[draws]
            usable = np.isfinite(resampled).any(axis=1)
            with np.errstate(all="ignore"):
                estimates = average(resampled[usable], axis=1)
            out[f"{key}_lo"], out[f"{key}_hi"] = (float(v) for v in np.percentile(estimates, [2.5, 97.5]))
    return out


def bootstrap_draws(count: int) -> np.ndarray | None:
    """``(BOOTSTRAP_DRAWS, count)`` clip indices drawn with replacement (fixed seed); ``None`` under two clips."""
    if count < 2:
        return None
    return np.random.default_rng(BOOTSTRAP_SEED).integers(0, count, (BOOTSTRAP_DRAWS, count))


def ratio_with_interval(key: str, numerators: np.ndarray, denominators: np.ndarray,
                        draws: np.ndarray | None) -> dict[str, float]:
    """``{key: sum(numerators) / sum(denominators), key_lo, key_hi}``: a pooled ratio (a rate in bits per frame,
    a word error rate) and its 95% bootstrap interval over the clips."""
    total = float(denominators.sum())
    out = {key: float(numerators.sum()) / total if total else math.nan, f"{key}_lo": math.nan, f"{key}_hi": math.nan}
    if draws is not None:
        with np.errstate(all="ignore"):
            estimates = numerators[draws].sum(axis=1) / denominators[draws].sum(axis=1)
        estimates = estimates[np.isfinite(estimates)]
        if estimates.size:
            out[f"{key}_lo"], out[f"{key}_hi"] = (float(v) for v in np.percentile(estimates, [2.5, 97.5]))
    return out


def unscored_counts(rows: list[dict[str, float]]) -> dict[str, int]:
    """How many clips each metric could not score (NaN), for the metrics that missed any."""
    keys = {k for row in rows for k in row}
    missing = {key: sum(1 for row in rows if key in row and not math.isfinite(row[key])) for key in sorted(keys)}
    return {key: count for key, count in missing.items() if count}
