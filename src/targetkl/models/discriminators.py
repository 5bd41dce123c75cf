"""Discriminators for adversarial training: multi-period (waveform) and multi-resolution STFT.

Each discriminator maps ``(B, 1, T)`` audio to ``(score, features)``; the ensemble returns lists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _wn2d(in_channels: int, out_channels: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
          padding: tuple[int, int] = (0, 0)) -> nn.Module:
    return weight_norm(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding))


def _conv_stack(convs: nn.ModuleList, out: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack then a score conv; returns ``(score, every activation including the score)``."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    score = out(x)
    features.append(score)
    return score, features


class PeriodDiscriminator(nn.Module):
    """Folds the waveform into ``(T/p, p)`` and applies 2-D convs along time (HiFi-GAN's MPD member)."""

    def __init__(self, period: int, width: int = 32):
        super().__init__()
        self.period = period
        channels = [1, width, width * 4, width * 16, width * 32]
        self.convs = nn.ModuleList(
            [_wn2d(channels[i], channels[i + 1], (5, 1), (3, 1), (2, 0)) for i in range(len(channels) - 1)]
            + [_wn2d(channels[-1], channels[-1], (5, 1), (1, 1), (2, 0))])
        self.out = _wn2d(channels[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        length = audio.shape[-1]
        if length % self.period:
            audio = F.pad(audio, (0, self.period - length % self.period), mode="reflect")
        x = audio.reshape(audio.shape[0], 1, -1, self.period)
        return _conv_stack(self.convs, self.out, x)


class STFTDiscriminator(nn.Module):
    """2-D convs over a complex STFT (real and imaginary as channels) at one resolution."""

    def __init__(self, n_fft: int, width: int = 32):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList([
            _wn2d(2, width, (3, 9), padding=(1, 4)),
            _wn2d(width, width, (3, 9), (1, 2), (1, 4)),
            _wn2d(width, width, (3, 9), (1, 2), (1, 4)),
            _wn2d(width, width, (3, 9), (1, 2), (1, 4)),
            _wn2d(width, width, (3, 3), padding=(1, 1)),
        ])
        self.out = _wn2d(width, 1, (3, 3), padding=(1, 1))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(audio.reshape(audio.shape[0], -1).float(), self.n_fft, self.n_fft // 4,
                          window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)
        return _conv_stack(self.convs, self.out, x)


class Discriminator(nn.Module):
    """Ensemble of period and STFT discriminators: returns ``(scores, features)`` lists, one per member."""

    def __init__(self, periods: tuple[int, ...], stft_windows: tuple[int, ...]):
        super().__init__()
        self.members = nn.ModuleList([PeriodDiscriminator(p) for p in periods]
                                     + [STFTDiscriminator(n) for n in stft_windows])

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        scores, features = [], []
        for member in self.members:
            score, feats = member(audio)
            scores.append(score)
            features.append(feats)
        return scores, features
