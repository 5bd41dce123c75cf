"""Stable Audio's "Oobleck" VAE encoder and decoder (the paper's Stable Audio VAE baseline), as a second
architecture for the codec (``model.architecture = oobleck``).

Parameter names follow ``diffusers.AutoencoderOobleck`` module for module (``encoder.block.0.res_unit1.
conv1.weight_g`` ...), so ``targetkl export --format diffusers`` writes the state dict as it is. The layout:

- encoder: conv (k 7) to ``encoder_dim`` channels; per stride ``s`` a block of three residual units
  (dilations 1, 3, 9) at ``encoder_dim * m_i``, Snake, and a conv of kernel ``2s``, stride ``s`` to
  ``encoder_dim * m_(i+1)`` (``m = (1, *channel_multiples)``); Snake and a conv (k 3) to the bottleneck's
  input channels (2 x latent for a Gaussian posterior, which is what diffusers expects).
- decoder: conv (k 7) from the latent to ``decoder_dim * m_last``; per stride (reversed) Snake, a transposed
  conv of kernel ``2s`` and the three residual units; Snake and a conv (k 7, no bias) to audio; tanh only with
  ``model.oobleck.final_tanh`` (stable-audio-tools' option).

Snake here has a per-channel ``alpha`` and ``beta`` on a log scale: ``x + sin(e^alpha x)^2 / (e^beta + 1e-9)``.
Strides must be even (the transposed convs' padding is ``ceil(s / 2)``, exact only for even ``s``).
Shapes: audio ``(B, 1, T)``, latent ``(B, D, T / hop)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dataclasses import dataclass

from targetkl.config import Config, ConfigError, ModelConfig
from targetkl.models.architectures import Architecture, register_architecture
from targetkl.nn.layers import WeightNormConv1d, WeightNormConvTranspose1d

DILATIONS = (1, 3, 9)


class LogSnake(nn.Module):
    """``x + sin(exp(alpha) * x)^2 / (exp(beta) + 1e-9)`` with ``alpha``, ``beta`` of shape ``(1, C, 1)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (torch.exp(self.beta) + 1e-9).reciprocal() * torch.sin(torch.exp(self.alpha) * x).pow(2)


class OobleckResidualUnit(nn.Module):
    """Snake, dilated conv (k 7), Snake, conv (k 1), plus the input: ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.snake1 = LogSnake(channels)
        self.conv1 = WeightNormConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = LogSnake(channels)
        self.conv2 = WeightNormConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))


class OobleckEncoderBlock(nn.Module):
    """``(B, C_in, T) -> (B, C_out, T / s)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.res_unit1, self.res_unit2, self.res_unit3 = (OobleckResidualUnit(in_channels, d) for d in DILATIONS)
        self.snake1 = LogSnake(in_channels)
        self.conv1 = WeightNormConv1d(in_channels, out_channels, 2 * stride, stride=stride,
                                      padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.snake1(self.res_unit3(self.res_unit2(self.res_unit1(x)))))


class OobleckDecoderBlock(nn.Module):
    """``(B, C_in, T) -> (B, C_out, T * s)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.snake1 = LogSnake(in_channels)
        self.conv_t1 = WeightNormConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride,
                                                 padding=math.ceil(stride / 2))
        self.res_unit1, self.res_unit2, self.res_unit3 = (OobleckResidualUnit(out_channels, d) for d in DILATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_unit3(self.res_unit2(self.res_unit1(self.conv_t1(self.snake1(x)))))


class OobleckEncoder(nn.Module):
    def __init__(self, dim: int, strides: tuple[int, ...], multiples: tuple[int, ...], out_channels: int,
                 audio_channels: int = 1):
        super().__init__()
        widths = [dim * m for m in (1, *multiples)]
        self.conv1 = WeightNormConv1d(audio_channels, dim, 7, padding=3)
        self.block = nn.ModuleList([OobleckEncoderBlock(widths[i], widths[i + 1], s) for i, s in enumerate(strides)])
        self.snake1 = LogSnake(widths[-1])
        self.conv2 = WeightNormConv1d(widths[-1], out_channels, 3, padding=1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.conv1(audio)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class OobleckDecoder(nn.Module):
    def __init__(self, latent_dim: int, dim: int, strides: tuple[int, ...], multiples: tuple[int, ...],
                 audio_channels: int = 1, final_tanh: bool = False):
        super().__init__()
        self.final_tanh = final_tanh
        widths = [dim * m for m in (1, *multiples)]
        count = len(strides)
        self.conv1 = WeightNormConv1d(latent_dim, widths[-1], 7, padding=3)
        self.block = nn.ModuleList([OobleckDecoderBlock(widths[count - i], widths[count - i - 1], s)
                                    for i, s in enumerate(reversed(strides))])
        self.snake1 = LogSnake(dim)
        self.conv2 = WeightNormConv1d(dim, audio_channels, 7, padding=3, bias=False)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.conv1(latent)
        for block in self.block:
            x = block(x)
        x = self.conv2(self.snake1(x))
        return torch.tanh(x) if self.final_tanh else x


@dataclass
class OobleckSettings:
    """``model.oobleck``: ``channel_multiples``, one per stride: stage ``i`` works at ``dim * m_i`` channels;
    ``final_tanh``: the decoder ends in tanh (stable-audio-tools' default; Stable Audio Open's VAE and diffusers
    have none)."""

    channel_multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    final_tanh: bool = False
    former_keys = {"channel_multiples": "channel_multiples"}  # model.channel_multiples before this section


def build(model: ModelConfig, out_channels: int) -> tuple[nn.Module, nn.Module]:
    multiples = model.oobleck.channel_multiples
    return (OobleckEncoder(model.encoder_dim, model.strides, multiples, out_channels, model.audio_channels),
            OobleckDecoder(model.latent_dim, model.decoder_dim, model.strides, multiples, model.audio_channels,
                           model.oobleck.final_tanh))


def check(config: Config) -> None:
    model = config.model
    multiples = model.oobleck.channel_multiples
    if len(multiples) != len(model.strides) or any(s % 2 for s in model.strides) or any(m <= 0 for m in multiples):
        raise ConfigError(f"model.oobleck.channel_multiples={multiples}, model.strides={model.strides}: an "
                          "oobleck codec needs one positive multiple per stride and even strides")


register_architecture(Architecture("oobleck", build, "Stable Audio's VAE layers (diffusers' AutoencoderOobleck)",
                                   check), OobleckSettings)
