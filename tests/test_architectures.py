"""The architecture registry: an architecture is one file and one entry, its settings a section of its own,
and chunked inference sees the receptive field of any convolution, weight-normed or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import quick_config
from targetkl.config import ConfigError, apply_overrides, from_dict, resolve
from targetkl.inference import CodecRunner, receptive_field_frames
from targetkl.models.architectures import ARCHITECTURES, Architecture, register_architecture
from targetkl.models.codec import build_codec


def _plain(model, out_channels):
    """Plain (not weight-normed) convolutions: a strided conv per stride and wide kernels."""
    encoder, channels = [nn.Conv1d(model.audio_channels, model.encoder_dim, 9, padding=4)], model.encoder_dim
    for stride in model.strides:
        encoder += [nn.ELU(), nn.Conv1d(channels, channels * 2, 2 * stride, stride, padding=(stride + 1) // 2)]
        channels *= 2
    encoder += [nn.ELU(), nn.Conv1d(channels, out_channels, 9, padding=4)]
    decoder, channels = [nn.Conv1d(model.latent_dim, model.decoder_dim, 9, padding=4)], model.decoder_dim
    for stride in reversed(model.strides):
        decoder += [nn.ELU(), nn.ConvTranspose1d(channels, channels // 2, 2 * stride, stride,
                                                 padding=(stride + 1) // 2, output_padding=stride % 2)]
        channels //= 2
    decoder += [nn.ELU(), nn.Conv1d(channels, model.audio_channels, 9, padding=4), nn.Tanh()]
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


@pytest.fixture
def plain_architecture():
    register_architecture(Architecture("plain", _plain, "plain convolutions (a test's)"))
    yield "plain"
    ARCHITECTURES.pop("plain")


def test_a_registered_architecture_trains_the_whole_codec_and_chunks_exactly(plain_architecture):
    config = quick_config(model={"architecture": plain_architecture, "strides": (2, 4, 5, 8)})
    codec = build_codec(config).eval()
    encoder_frames, decoder_frames = receptive_field_frames(codec)
    assert encoder_frames > 1 and decoder_frames > 1  # plain convs count: a chunk gets its context
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    whole = CodecRunner(codec, chunk_seconds=100).encode([audio])[0].z
    chunked = CodecRunner(codec, chunk_seconds=0.2).encode([audio])[0].z
    assert torch.allclose(whole, chunked, atol=1e-5)
    decoded_whole = CodecRunner(codec, chunk_seconds=100).decode([whole])[0]
    decoded_chunked = CodecRunner(codec, chunk_seconds=0.2).decode([whole])[0]
    assert np.abs(decoded_whole - decoded_chunked).max() < 1e-5


def test_unknown_architectures_and_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="model.architecture='transformer': choose dac, oobleck"):
        build_codec(apply_overrides(quick_config(), {"model": {"architecture": "transformer"}}))
    with pytest.raises(ConfigError, match="model.oobleck.channel_multiples"):
        resolve("oobleck-tiny", assignments=["model.oobleck.channel_multiples=[1,2]"])


def test_the_oobleck_section_takes_settings_old_configs_and_says_where_a_key_went():
    assert resolve("oobleck-tiny").model.oobleck.channel_multiples == (1, 2, 2, 4)
    assert resolve("oobleck-tiny", assignments=["model.oobleck.channel_multiples=[1,2,4,4]"]) \
        .model.oobleck.channel_multiples == (1, 2, 4, 4)
    old = from_dict({"model": {"architecture": "oobleck", "strides": [2, 4, 4, 10],
                               "channel_multiples": [1, 2, 4, 8]}}, where="old config.json")
    assert old.model.oobleck.channel_multiples == (1, 2, 4, 8)
    with pytest.raises(ConfigError, match="model.channel_multiples is now model.oobleck.channel_multiples"):
        resolve("oobleck-tiny", assignments=["model.channel_multiples=[1,2,2,4]"])
    assert "channel_multiples" not in resolve("tiny").to_dict()["model"]
