"""Unit conversions between nats per frame, bits per frame, bits per second and kbps.

Every rate conversion in the package goes through this module, so the factors live in one place.

Conventions:
    frame_rate      latent frames per second = sample_rate / hop (Hz)
    KL_t            nats per latent frame, *including* the 1/2 factor of the Gaussian KL
    bits/s          frame_rate * mean_t(KL_t) / ln 2
"""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def frame_rate(sample_rate: int, hop: int) -> float:
    """Latent frames per second for a codec with total stride ``hop`` samples."""
    if sample_rate <= 0 or hop <= 0:
        raise ValueError(f"sample_rate and hop must be positive, got {sample_rate} and {hop}")
    return sample_rate / hop


def nats_to_bits(nats: float) -> float:
    return nats / LN2


def bits_to_nats(bits: float) -> float:
    return bits * LN2


def nats_per_frame_to_bps(nats_per_frame: float, frame_rate_hz: float) -> float:
    """Mean KL per frame (nats) to a rate in bits per second."""
    return frame_rate_hz * nats_per_frame / LN2


def bits_per_frame_to_bps(bits_per_frame: float, frame_rate_hz: float) -> float:
    return frame_rate_hz * bits_per_frame


def nats_per_frame_to_kbps(nats_per_frame: float, frame_rate_hz: float) -> float:
    return nats_per_frame_to_bps(nats_per_frame, frame_rate_hz) / 1000.0


def bits_per_frame_to_kbps(bits_per_frame: float, frame_rate_hz: float) -> float:
    return bits_per_frame * frame_rate_hz / 1000.0


def kbps_to_nats_per_frame(kbps: float, frame_rate_hz: float) -> float:
    """``KL_target = B * ln 2 / frame_rate`` with ``B`` in bits per second (here given in kbps)."""
    return kbps * 1000.0 * LN2 / frame_rate_hz


def kbps_to_bits_per_frame(kbps: float, frame_rate_hz: float) -> float:
    return kbps * 1000.0 / frame_rate_hz


def rvq_bits_per_frame(n_codebooks: int, codebook_size: int) -> float:
    """Fixed-rate residual VQ: each codebook index costs log2(K) bits."""
    return n_codebooks * math.log2(codebook_size)


def payload_kbps(payload_bytes: int, duration_seconds: float) -> float:
    """Bitrate of an encoded payload: 8 * bytes / seconds / 1000."""
    if duration_seconds <= 0:
        raise ValueError("duration must be positive to measure a bitrate")
    return 8.0 * payload_bytes / duration_seconds / 1000.0


OFF_TARGET_PERCENT = 5.0  # a measured rate further than this from its target is reported as off target


def rate_error_percent(rate_kbps: float | None, target_kbps: float | None) -> float | None:
    """``100 * (measured - target) / target``, or ``None`` when either is missing (or the target is 0)."""
    if not target_kbps or rate_kbps is None or (isinstance(rate_kbps, float) and math.isnan(rate_kbps)):
        return None
    return 100.0 * (rate_kbps - target_kbps) / target_kbps


def off_target(rate_kbps: float | None, target_kbps: float | None) -> bool:
    """Whether a measured rate misses its target by more than ``OFF_TARGET_PERCENT``; ``False`` without a
    target (a fixed beta, an autoencoder)."""
    error = rate_error_percent(rate_kbps, target_kbps)
    return error is not None and abs(error) > OFF_TARGET_PERCENT


def off_target_text(rate_kbps: float, target_kbps: float) -> str:
    """One line for a warning: how far the measured rate is from its target, and what usually fixes it."""
    return (f"off target: the measured rate {rate_kbps:.4g} kbps is {rate_error_percent(rate_kbps, target_kbps):+.1f}% "
            f"from the {target_kbps:g} kbps target (more than {OFF_TARGET_PERCENT:g}%); train longer (--steps) "
            "or check the run's rate settings")


def bps_to_kbps(bits_per_second: float) -> float:
    return bits_per_second / 1000.0
