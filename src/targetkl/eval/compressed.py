"""Distortion of a ``.tkl`` file: what ``targetkl compress`` reports beside the rates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from targetkl.bitstream import compress_file, decode_latent
from targetkl.data.audio import file_entry, read_window
from targetkl.eval.metrics import clip_metrics
from targetkl.inference import DEFAULT_BATCH_SIZE, CodecRunner
from targetkl.models.codec import Codec

REPORT_SECONDS = 60.0


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """``10 log10(sum reference^2 / sum (reference - estimate)^2)``, dB, for arrays of equal shape."""
    noise = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return 10 * math.log10((signal + 1e-12) / (noise + 1e-12))


@torch.no_grad()
def compress_and_measure(model: Codec, audio_path: str | Path, out_path: str | Path, loudness_dbfs: float,
                         batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Compress ``audio_path`` to ``out_path``; the report of :func:`~targetkl.bitstream.compress_file` plus
    distortions over the first ``distortion_seconds`` (at most ``REPORT_SECONDS``, so a long file's report
    stays in bounded memory): ``mel_distance`` of the decompressed audio against the input,
    ``mel_distance_mean_decode`` of the plain decode of the posterior mean against the input, and
    ``mel_distance_vs_mean_decode`` / ``snr_vs_mean_decode_db`` of the decompressed audio against that decode
    (what quantizing the latent costs)."""
    written = compress_file(model, audio_path, out_path, loudness_dbfs, batch_size)
    sample_rate = model.sample_rate
    entry = file_entry(audio_path)
    shown = min(entry.length_at(sample_rate), int(REPORT_SECONDS * sample_rate))
    runner = CodecRunner(model, batch_size=batch_size)
    audio = read_window(entry, 0, shown, sample_rate, channels=model.audio_channels)
    decompressed = decode_latent(model, written.latent, shown, written.gain, runner)
    mean_decoded = decode_latent(model, written.posterior_mean, shown, written.gain, runner)
    vs_input = clip_metrics(audio, decompressed, sample_rate, perceptual=False)
    vs_mean = clip_metrics(mean_decoded, decompressed, sample_rate, perceptual=False)
    mean_vs_input = clip_metrics(audio, mean_decoded, sample_rate, perceptual=False)
    return {**written.report, "distortion_seconds": shown / sample_rate, "mel_distance": vs_input["mel_distance"],
            "mel_distance_mean_decode": mean_vs_input["mel_distance"],
            "mel_distance_vs_mean_decode": vs_mean["mel_distance"],
            "snr_vs_mean_decode_db": snr_db(mean_decoded, decompressed)}
