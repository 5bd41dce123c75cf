import math

import numpy as np
import pytest
import torch

from targetkl.bitstream import (BitstreamError, HEADER, code_length_bits, compress, decompress, quantization_steps,
                                rate_matched_steps, read_symbols)
from targetkl.bottlenecks.gaussian import gaussian_kl_per_value
from targetkl.models.codec import build_codec

from conftest import quick_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_codec(quick_config()).eval()


def _tone(seconds=0.5, sample_rate=16000):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.1 * np.sin(2 * np.pi * 330 * t) * np.exp(-3 * t)).astype(np.float32)


def test_high_resolution_step_costs_the_kl():
    # sigma << 1: a bin of sqrt(2 pi e) sigma under N(0, 1) costs what KL(N(mu, sigma^2) || N(0, 1)) says.
    torch.manual_seed(0)
    mean = torch.randn(4, 4000) * 0.8
    std = torch.full((4, 4000), 0.01)
    kl_bits = gaussian_kl_per_value(mean, std).double().sum(dim=-1) / math.log(2)
    bits = code_length_bits(mean, quantization_steps(std))
    assert torch.allclose(bits, kl_bits, rtol=0.01)


@pytest.mark.parametrize("sigma", [0.02, 0.3, 0.8])
def test_rate_matched_steps_meet_the_kl_budget(sigma):
    torch.manual_seed(1)
    std = torch.full((3, 500), sigma)
    mean = torch.randn(3, 500) * math.sqrt(1 - sigma ** 2)
    kl = gaussian_kl_per_value(mean, std)
    steps = torch.from_numpy(rate_matched_steps(mean, std, kl).astype(np.float64))
    bits = code_length_bits(mean, steps)
    assert torch.allclose(bits, kl.double().sum(dim=-1) / math.log(2), rtol=0.02)


def test_round_trip_is_bit_exact_and_decodes_the_quantized_latent(model):
    audio = _tone()
    data, details = compress(model, audio, loudness_dbfs=-20.0)
    header, symbols, z = read_symbols(model, data)
    assert torch.equal(symbols, details["symbols"])
    assert torch.allclose(z, details["z"])
    assert header.num_samples == len(audio) and header.frames == symbols.shape[1] == math.ceil(len(audio) / model.hop)
    assert header.frame_rate == pytest.approx(model.frame_rate) and header.sample_rate == 16000
    decoded, _ = decompress(model, data)
    assert decoded.shape == audio.shape
    with torch.no_grad():
        expected = model.decode(z[None])[0, 0, : len(audio)].numpy() / details["gain"]
    assert np.allclose(decoded, expected, atol=1e-6)
    # payload bytes are the 32-bit words of the range coder, after the header and the float16 steps
    assert len(data) == HEADER.size + 2 * model.latent_dim + 4 * header.payload_words + 4


def test_damaged_and_foreign_files_are_refused(model):
    data, _ = compress(model, _tone(), loudness_dbfs=-20.0)
    with pytest.raises(BitstreamError, match="truncated"):
        read_symbols(model, data[:10])
    with pytest.raises(BitstreamError, match="truncated or damaged"):
        read_symbols(model, data[:-3])
    flipped = bytearray(data)
    flipped[HEADER.size + 5] ^= 0x40
    with pytest.raises(BitstreamError, match="checksum"):
        read_symbols(model, bytes(flipped))
    with pytest.raises(BitstreamError, match="not a .tkl"):
        read_symbols(model, b"RIFF" + data[4:])
    torch.manual_seed(1)
    other = build_codec(quick_config()).eval()
    with pytest.raises(BitstreamError, match="another model"):
        read_symbols(other, data)
    rng = np.random.default_rng(0)
    for _ in range(50):
        with pytest.raises(BitstreamError):
            read_symbols(model, rng.bytes(int(rng.integers(0, 400))))


_HEADER_FIELDS = {"sample_rate": "I", "hop": "H", "frame_rate": "f", "num_samples": "I", "gain": "f",
                  "latent_dim": "H", "frames": "I", "max_symbol": "H", "fingerprint": "8s", "payload_words": "I"}
_FLOAT_EXTREMES = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-38, 3e38, 1e-5, 1e7]


def _fuzzed_value(rng, name, header):
    kind = _HEADER_FIELDS[name]
    if kind == "8s":
        return rng.bytes(8)
    if kind == "f":
        return float(rng.choice(_FLOAT_EXTREMES)) if rng.random() < 0.6 else float(getattr(header, name) *
                                                                                     rng.uniform(0, 3))
    top = 2 ** 16 - 1 if kind == "H" else 2 ** 32 - 1
    return int(rng.choice([0, 1, 2, top, top - 1, int(rng.integers(0, top)), getattr(header, name) + 1]))


def test_fuzzed_files_with_valid_checksums_give_one_line_errors_or_bounded_finite_decodes(model):
    # Every header field, the steps and the payload are fuzzed and the CRC recomputed, so only the
    # reader's own checks stand between a hostile file and the entropy coder, the allocator and the wav.
    import dataclasses
    import tracemalloc

    from targetkl.bitstream import BLOCK_VALUES, MAX_SECONDS, pack, unpack

    header, steps, payload = unpack(compress(model, _tone(), loudness_dbfs=-20.0)[0])
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "decoded": 0}
    for _ in range(400):
        fuzzed, new_steps, new_payload = dataclasses.replace(header), steps.copy(), payload.copy()
        for name in rng.choice(list(_HEADER_FIELDS), size=int(rng.integers(1, 4)), replace=False):
            setattr(fuzzed, name, _fuzzed_value(rng, name, header))
        if rng.random() < 0.3:  # a consistent length, so that the decoder runs on it
            fuzzed.num_samples = int(rng.integers(1, 3 * model.sample_rate))
            fuzzed.frames = -(-fuzzed.num_samples // model.hop)
        if rng.random() < 0.3:  # float16 steps from random bit patterns: NaN, inf, subnormal, negative, huge
            new_steps = rng.integers(0, 2 ** 16, size=len(steps), dtype=np.uint16).view(np.float16)
        if rng.random() < 0.3:
            new_payload = rng.integers(0, 2 ** 32, size=int(rng.integers(0, 40)), dtype=np.uint32)
        if rng.random() < 0.8:  # mostly a file whose lengths agree with its header, as a forger would write it
            fuzzed.payload_words = len(new_payload)
            new_steps = np.resize(new_steps, fuzzed.latent_dim)
        data = pack(fuzzed, new_steps, new_payload)
        tracemalloc.start()
        try:
            audio, decoded_header = decompress(model, data)
        except BitstreamError as error:
            assert "\n" not in str(error) and str(error)
            outcomes["refused"] += 1
            continue
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        outcomes["decoded"] += 1
        symbols = decoded_header.latent_dim * decoded_header.frames
        assert peak <= 64 * symbols + 16 * 8 * BLOCK_VALUES + 8 * len(audio) + (1 << 20)
        assert len(audio) == decoded_header.num_samples <= MAX_SECONDS * model.sample_rate
        assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0 / decoded_header.gain + 1e-6
    assert outcomes["refused"] > 100 and outcomes["decoded"] > 20, outcomes


def test_header_fields_that_disagree_are_refused_before_decoding(model):
    import dataclasses

    from targetkl.bitstream import pack, unpack

    header, steps, payload = unpack(compress(model, _tone(), loudness_dbfs=-20.0)[0])
    cases = {"frames": dict(frames=2 ** 32 - 1), "length": dict(num_samples=10 ** 6 * model.hop, frames=10 ** 6 + 1),
             "largest symbol": dict(max_symbol=0), "loudness gain": dict(gain=1e-38),
             "frame rate": dict(frame_rate=header.frame_rate * 2), "too long": dict(num_samples=2 ** 32 - 1)}
    for _, fields in cases.items():
        with pytest.raises(BitstreamError, match="damaged .tkl header"):
            unpack(pack(dataclasses.replace(header, **fields), steps, payload))
    with pytest.raises(BitstreamError, match="quantization steps"):
        unpack(pack(header, np.full_like(steps, 1000.0), payload))
