"""Classic codec baselines: payload accounting from the real tools, delay alignment, clear errors.

The tools (opus-tools, lame, codec2) are installed by `.ci/run`; a missing tool fails these tests.
"""

import struct

import numpy as np
import pytest
import soundfile as sf

from targetkl import rate
from targetkl.eval.classic import (CLASSIC_CODECS, CodecToolError, best_lag, encode_decode, ogg_packet_sizes,
                                   opus_payload_bytes, run_classic, shift)

RATE = 16000


def tone(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-2 * t) + 0.01 * rng.standard_normal(len(t))


def ogg_page(packets_lacing: list[int], payload: bytes, sequence: int) -> bytes:
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, 0, 0, 1, sequence, 0, len(packets_lacing))
    return header + bytes(packets_lacing) + payload


def test_ogg_packets_are_split_by_lacing_values_across_pages():
    first = ogg_page([19], b"h" * 19, 0)
    second = ogg_page([255, 45, 3], b"x" * 300 + b"y" * 3, 1)
    continued = ogg_page([255, 255, 10], b"z" * 520, 2) + ogg_page([7], b"w" * 7, 3)
    assert ogg_packet_sizes(first + second + continued) == [19, 300, 3, 520, 7]
    with pytest.raises(CodecToolError, match="not a valid Ogg"):
        ogg_packet_sizes(b"junk" + first)


def test_opus_rate_counts_audio_packets_only(tmp_path):
    clips = [tone(1.0, seed) for seed in range(3)]
    decoded, payload = run_classic("opus", "12", clips, RATE)
    measured = rate.payload_kbps(payload, sum(len(c) for c in clips) / RATE)
    assert 9.0 < measured < 16.0
    assert all(len(d) == len(c) for d, c in zip(decoded, clips))
    sf.write(str(tmp_path / "in.wav"), clips[0], RATE, subtype="PCM_16")
    _, single = encode_decode(CLASSIC_CODECS["opus"], "12", tmp_path / "in.wav", tmp_path)
    packets = ogg_packet_sizes((tmp_path / "coded.opus").read_bytes())
    assert single == opus_payload_bytes(tmp_path / "coded.opus") == sum(packets[2:])
    assert single < (tmp_path / "coded.opus").stat().st_size
    assert len(packets) - 2 >= 50


def test_mp3_is_constant_bitrate_without_tags():
    clips = [tone(1.0)]
    _, payload = run_classic("mp3", "16", clips, RATE)
    frames = payload // 72
    assert payload == 72 * frames
    assert 16.0 <= rate.payload_kbps(payload, 1.0) < 16.0 * 1.25


def test_codec2_1300_spends_seven_bytes_per_40_ms():
    _, payload = run_classic("codec2", "1300", [tone(1.0)], RATE)
    assert payload == 25 * 7
    assert rate.payload_kbps(payload, 1.0) == pytest.approx(1.4)
    assert CLASSIC_CODECS["codec2"].nominal_kbps("700C") == pytest.approx(0.7)


def test_delay_is_found_and_removed():
    reference = tone(0.5)
    delayed = np.concatenate([np.zeros(1105), reference, np.zeros(50)])
    lag = best_lag(reference, delayed, 1600)
    assert lag == 1105
    np.testing.assert_allclose(shift(delayed, lag, len(reference)), reference)


def test_mp3_decoded_audio_is_aligned_to_the_input():
    clip = tone(1.0)
    decoded, _ = run_classic("mp3", "32", [clip], RATE)
    assert best_lag(clip, decoded[0], 400) == 0
    assert np.corrcoef(clip, decoded[0])[0, 1] > 0.9


def test_missing_tool_names_the_package(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(CodecToolError, match="apt-get install opus-tools"):
        CLASSIC_CODECS["opus"].check_tools()
