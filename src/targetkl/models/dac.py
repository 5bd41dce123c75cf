"""The DAC-style encoder and decoder (``model.architecture = dac``, the default): residual units with
dilations 1, 3, 9 and Snake activations; encoder channels double at each stride, the decoder mirrors the
strides and ends in tanh. Waveforms ``(batch, audio_channels, samples)``, latents ``(batch, latent_dim,
samples / hop)``.

Layer for layer descript-audio-codec's ``Encoder`` and ``Decoder`` (:mod:`targetkl.foreign.dac` maps the
weights). ``model.dac.exact_length`` (default true) makes each odd-stride transposed convolution give exactly
``stride`` samples per input sample; false is DAC's own layout (one sample fewer at each odd stride), whose
output is then padded with zeros at the end to ``frames * hop``: an imported DAC 16/24 kHz model decodes as
DAC does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from targetkl.config import ModelConfig
from targetkl.models.architectures import Architecture, register_architecture
from targetkl.nn import ResidualUnit, Snake, wn_conv1d, wn_conv_transpose1d

DILATIONS = (1, 3, 9)


@dataclass
class DacSettings:
    """``model.dac``: ``exact_length`` false builds DAC's transposed convolutions (see the module docstring)."""

    exact_length: bool = True


class EncoderBlock(nn.Module):
    """Residual units at ``channels // 2``, then a strided conv to ``channels``: ``(B, C/2, T) -> (B, C, T/s)``."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        half = channels // 2
        self.block = nn.Sequential(
            *[ResidualUnit(half, d) for d in DILATIONS],
            Snake(half),
            wn_conv1d(half, channels, kernel_size=2 * stride, stride=stride, padding=(stride + 1) // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Transposed conv then residual units: ``(B, C_in, T) -> (B, C_out, T*s)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, exact_length: bool = True):
        super().__init__()
        self.block = nn.Sequential(
            Snake(in_channels),
            wn_conv_transpose1d(in_channels, out_channels, stride, exact_length),
            *[ResidualUnit(out_channels, d) for d in DILATIONS],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """``(B, audio_channels, T) -> (B, out_channels, T / hop)``; channels double at every stride."""

    def __init__(self, dim: int, strides: tuple[int, ...], out_channels: int, audio_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [wn_conv1d(audio_channels, dim, kernel_size=7)]
        channels = dim
        for stride in strides:
            channels *= 2
            layers.append(EncoderBlock(channels, stride))
        layers += [Snake(channels), wn_conv1d(channels, out_channels, kernel_size=3)]
        self.layers = nn.Sequential(*layers)
        self.channels = channels

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.layers(audio)


class Decoder(nn.Module):
    """``(B, latent_dim, F) -> (B, audio_channels, F * hop)``; channels halve at every stride; output in [-1, 1]."""

    def __init__(self, latent_dim: int, dim: int, strides: tuple[int, ...], audio_channels: int = 1,
                 exact_length: bool = True):
        super().__init__()
        layers: list[nn.Module] = [wn_conv1d(latent_dim, dim, kernel_size=7)]
        channels = dim
        for stride in strides:
            out_channels = max(channels // 2, 1)
            layers.append(DecoderBlock(channels, out_channels, stride, exact_length))
            channels = out_channels
        layers += [Snake(channels), wn_conv1d(channels, audio_channels, kernel_size=7), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        self.hop = math.prod(strides)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        audio = self.layers(latent)
        missing = latent.shape[-1] * self.hop - audio.shape[-1]
        return F.pad(audio, (0, missing)) if missing > 0 else audio


def build(model: ModelConfig, out_channels: int) -> tuple[nn.Module, nn.Module]:
    """``(encoder, decoder)`` of ``model`` for a bottleneck taking ``out_channels`` inputs."""
    return (Encoder(model.encoder_dim, model.strides, out_channels, model.audio_channels),
            Decoder(model.latent_dim, model.decoder_dim, tuple(reversed(model.strides)), model.audio_channels,
                    model.dac.exact_length))


register_architecture(Architecture("dac", build, "DAC-style: channels double at each encoder stride, the decoder "
                                                "mirrors the strides, tanh output"), DacSettings)
