"""The metric registry: every output reads one list, and a metric is one entry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from targetkl.eval import evaluate, metrics, report
from targetkl.eval.metrics import METRICS, Metric, aggregate_metrics, clip_metrics, metric_names, register_metric


def test_every_output_reads_the_registry():
    assert report.METRICS == metric_names() == ("mel_distance", "stft_distance", "si_sdr", "pesq", "stoi", "visqol",
                                                "wer", "cer")
    assert report.SPEECH_REFERENCE == ("wer_original", "cer_original")
    assert report.HIGHER_IS_BETTER == {"si_sdr", "pesq", "stoi", "visqol"}
    assert set(metrics.aggregation_texts()) == set(METRICS)
    assert METRICS["si_sdr"].aggregation == "median" and METRICS["wer"].pooled == ("wer_edits", "wer_words")
    assert metric_names(perceptual=False) == ("mel_distance", "stft_distance", "si_sdr", "wer", "cer")
    from targetkl.eval import controllers

    assert controllers.DISTORTION == metric_names(perceptual=False)  # a controllers run skips the slow ones
    assert evaluate.DOMAIN_KEYS == ("rate_kbps", "mel_distance", "stft_distance", "si_sdr", "pesq", "stoi", "visqol")
    with pytest.raises(ValueError, match="pooled counts"):
        register_metric(Metric("broken", "", False, "median", "", pooled=("a", "b")))


@pytest.fixture
def peak_error():
    metric = register_metric(Metric("peak_error", "", False, "median", "median over clips (a test's metric)",
                                    lambda reference, estimate, sample_rate: float(np.abs(reference - estimate).max())))
    yield metric
    METRICS.pop("peak_error")


def test_a_registered_metric_is_scored_aggregated_and_printed(peak_error):
    rng = np.random.default_rng(0)
    reference = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    rows = [clip_metrics(reference, reference + error, 16000, perceptual=False) for error in (0.0, 0.1, 0.2, 0.9)]
    assert [row["peak_error"] for row in rows] == pytest.approx([0.0, 0.1, 0.2, 0.9], abs=1e-6)
    aggregated = aggregate_metrics(rows)
    assert aggregated["peak_error"] == pytest.approx(0.15, abs=1e-6)  # its median, not the mean 0.3
    assert aggregated["peak_error_lo"] <= 0.15 <= aggregated["peak_error_hi"]
    text = evaluate.format_result({"rate_kbps": 2.0, "clips": 4, "frame_rate": 50.0, **aggregated})
    assert "peak_error" in text and "si_sdr and peak_error are medians over clips" in text
    assert math.isfinite(aggregated["mel_distance"])
