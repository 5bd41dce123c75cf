"""Layers of the DAC-style codec.

Shapes: every module here maps ``(batch, channels, samples)`` to ``(batch, channels', samples')``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _WeightNorm:
    """Weight normalization for a conv's ``weight``: ``weight = g * v / ||v||``, the norm over all but dim 0.

    The same maths as ``torch.nn.utils.parametrizations.weight_norm``, computed in ``forward`` with the
    fused ``torch._weight_norm``: the parametrization machinery costs a few percent on small CPU models.
    """

    def _split_weight(self) -> None:
        direction = self.weight.detach().clone()
        del self.weight
        self.weight_v = nn.Parameter(direction)
        self.weight_g = nn.Parameter(direction.flatten(1).norm(dim=1).reshape(-1, 1, 1))

    def normalized_weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)


class WeightNormConv1d(_WeightNorm, nn.Conv1d):
    """``Conv1d`` with weight normalization (see ``_WeightNorm``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class WeightNormConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    """``ConvTranspose1d`` with weight normalization over all but dim 0 (input channels)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.normalized_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def wn_conv1d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
              padding: int | None = None) -> nn.Module:
    """Weight-normed ``Conv1d``; ``padding`` defaults to 'same' for stride 1."""
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    return WeightNormConv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, padding=padding)


def wn_conv_transpose1d(in_channels: int, out_channels: int, stride: int, exact_length: bool = True) -> nn.Module:
    """Weight-normed transposed conv that upsamples a length ``L`` input to exactly ``L * stride`` (or, with
    ``exact_length`` false, DAC's layout: ``L * stride - 1`` for an odd stride)."""
    return WeightNormConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                     padding=(stride + 1) // 2, output_padding=stride % 2 if exact_length else 0)


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
