import math

import numpy as np
import pytest
import torch

from targetkl.bitstream import (BitstreamError, HEADER, code_length_bits, compress, decompress, quantization_steps,
                                rate_matched_steps, read_symbols)
from targetkl.bottlenecks.gaussian import gaussian_kl_per_value
from targetkl.models.codec import Codec

from conftest import quick_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Codec(quick_config()).eval()


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
    other = Codec(quick_config()).eval()
    with pytest.raises(BitstreamError, match="another model"):
        read_symbols(other, data)
    rng = np.random.default_rng(0)
    for _ in range(50):
        with pytest.raises(BitstreamError):
            read_symbols(model, rng.bytes(int(rng.integers(0, 400))))
