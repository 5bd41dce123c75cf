import math

import pytest

from targetkl import rate


def test_target_nats_per_frame_from_kbps():
    # 2 kbps at 50 Hz: 40 bits per frame = 40 ln 2 nats.
    assert rate.kbps_to_nats_per_frame(2.0, 50.0) == pytest.approx(40 * math.log(2))
    assert rate.kbps_to_nats_per_frame(2.0, 50.0) == pytest.approx(27.725887, rel=1e-7)


def test_round_trip_and_bits_per_second():
    nats = rate.kbps_to_nats_per_frame(6.0, 75.0)
    assert rate.nats_per_frame_to_kbps(nats, 75.0) == pytest.approx(6.0)
    assert rate.nats_per_frame_to_bps(math.log(2), 75.0) == pytest.approx(75.0)
    assert rate.bits_per_frame_to_kbps(80.0, 75.0) == pytest.approx(6.0)
    assert rate.kbps_to_bits_per_frame(6.0, 75.0) == pytest.approx(80.0)


def test_frame_rate_of_presets():
    from targetkl.config import preset

    assert preset("tiny").model.frame_rate == 50.0
    assert preset("base-24k").model.frame_rate == 75.0
    assert preset("dac-44k").model.frame_rate == pytest.approx(44100 / 512)
    with pytest.raises(ValueError):
        rate.frame_rate(16000, 0)


def test_rvq_bitrate_like_dac():
    # DAC 44 kHz: 9 codebooks of 1024 entries at 86.13 Hz = 7.75 kbps.
    bits = rate.rvq_bits_per_frame(9, 1024)
    assert bits == 90
    assert rate.bits_per_frame_to_kbps(bits, 44100 / 512) == pytest.approx(7.752, abs=1e-3)
    # EnCodec 24 kHz at 75 Hz with 8 codebooks of 1024: 6 kbps.
    assert rate.bits_per_frame_to_kbps(rate.rvq_bits_per_frame(8, 1024), 75.0) == pytest.approx(6.0)


def test_payload_kbps():
    assert rate.payload_kbps(1000, 1.0) == pytest.approx(8.0)
    assert rate.payload_kbps(3000, 4.0) == pytest.approx(6.0)
    with pytest.raises(ValueError):
        rate.payload_kbps(10, 0)
