"""Layers of the DAC-style codec.

Shapes: every module here maps ``(batch, channels, samples)`` to ``(batch, channels', samples')``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def wn_conv1d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
              padding: int | None = None) -> nn.Module:
    """Weight-normed ``Conv1d``; ``padding`` defaults to 'same' for stride 1."""
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    return weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                                 padding=padding))


def wn_conv_transpose1d(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Weight-normed transposed conv that upsamples a length ``L`` input to exactly ``L * stride``."""
    return weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                          padding=(stride + 1) // 2, output_padding=stride % 2))


class Snake(nn.Module):
    """Periodic activation ``x + sin^2(alpha x) / alpha`` with a learned ``alpha`` per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wave = torch.sin(self.alpha * x)
        return torch.addcmul(x, wave, wave * torch.reciprocal(self.alpha + 1e-9))


class ResidualUnit(nn.Module):
    """Snake, dilated k=7 conv, Snake, 1x1 conv, plus the input. Keeps shape ``(B, C, T)``."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            wn_conv1d(channels, channels, kernel_size=7, dilation=dilation),
            Snake(channels),
            wn_conv1d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)
