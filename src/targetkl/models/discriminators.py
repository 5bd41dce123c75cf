"""Discriminators for adversarial training: multi-period (``mpd``, waveform), multi-resolution STFT
(``mrsd``) and multi-scale sub-band constant-Q (``cqt``, Gu et al., 2024).

Each discriminator maps ``(B, 1, T)`` audio to ``(score, features)``; the ensemble returns lists.
``loss.discriminators`` names the families in ``DISCRIMINATORS``; ``build_discriminator`` makes the ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from targetkl.config import Config, ConfigError, register_check


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


def octaves_below_nyquist(sample_rate: int, fmin: float, octaves: int) -> int:
    """The CQT octaves from ``fmin`` that fit below ``sample_rate / 2`` (at most ``octaves``; at least 0)."""
    return max(0, min(octaves, math.floor(math.log2(sample_rate / 2 / fmin))))


def _halfband_lowpass(taps: int = 63) -> torch.Tensor:
    """A Hann-windowed sinc with cutoff at a quarter of the sample rate: the anti-alias filter of a 2x decimation,
    ``(1, 1, taps)``, unit DC gain."""
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    kernel = 0.5 * torch.sinc(0.5 * n) * torch.hann_window(taps, periodic=False, dtype=torch.float64)
    return (kernel / kernel.sum()).float()[None, None]


class ConstantQTransform(nn.Module):
    """Complex constant-Q transform, one octave at a time (the recursive scheme of Schoerkhuber and Klapuri):
    the top octave's ``bins_per_octave`` kernels run on the input; each lower octave reuses them on the signal
    low-passed and decimated by 2 once more, so every kernel stays short.

    Bin ``k`` (0 = lowest) is centred on ``fmin * 2^(k / bins_per_octave)`` Hz with quality factor
    ``Q = 1 / (2^(1 / bins_per_octave) - 1)``: a Hann-windowed complex exponential of ``Q`` periods,
    normalized to unit window sum (a sinusoid of amplitude ``A`` at a bin's centre gives ``|X| ~ A / 2``).
    ``(B, T)`` audio -> ``(B, 2, frames, octaves * bins_per_octave)``: real and imaginary parts, frames every
    ``hop`` samples. ``hop`` must be divisible by ``2^(octaves - 1)``.
    """

    def __init__(self, sample_rate: int, hop: int, fmin: float, octaves: int, bins_per_octave: int):
        super().__init__()
        if octaves < 1 or hop % 2 ** (octaves - 1):
            raise ValueError(f"CQT hop {hop} must be divisible by 2^(octaves - 1) = {2 ** max(octaves - 1, 0)}")
        self.hop, self.octaves, self.bins_per_octave = hop, octaves, bins_per_octave
        quality = 1.0 / (2 ** (1.0 / bins_per_octave) - 1)
        top_fmin = fmin * 2 ** (octaves - 1)
        frequencies = [top_fmin * 2 ** (k / bins_per_octave) for k in range(bins_per_octave)]
        lengths = [math.ceil(quality * sample_rate / f) for f in frequencies]
        width = max(lengths) | 1
        kernels = torch.zeros(2 * bins_per_octave, 1, width, dtype=torch.float64)
        for k, (frequency, length) in enumerate(zip(frequencies, lengths)):
            n = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
            window = torch.hann_window(length, periodic=False, dtype=torch.float64) if length > 1 else torch.ones(1)
            phase = 2 * math.pi * frequency * n / sample_rate
            start = (width - length) // 2
            kernels[k, 0, start:start + length] = window * torch.cos(phase) / window.sum()
            kernels[bins_per_octave + k, 0, start:start + length] = window * torch.sin(phase) / window.sum()
        self.register_buffer("kernels", kernels.float(), persistent=False)
        self.register_buffer("lowpass", _halfband_lowpass(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        signal, hop, octaves = audio.float()[:, None], self.hop, []
        for octave in range(self.octaves):
            response = F.conv1d(signal, self.kernels, stride=hop, padding=self.kernels.shape[-1] // 2)
            octaves.insert(0, response)  # lower octaves first
            if octave < self.octaves - 1:
                signal = F.conv1d(signal, self.lowpass, stride=2, padding=self.lowpass.shape[-1] // 2)
                hop //= 2
        frames = min(o.shape[-1] for o in octaves)
        bins = self.bins_per_octave
        real = torch.cat([o[:, :bins, :frames] for o in octaves], dim=1)
        imaginary = torch.cat([o[:, bins:, :frames] for o in octaves], dim=1)
        return torch.stack([real, imaginary], dim=1).transpose(2, 3)


class SubBandCQTDiscriminator(nn.Module):
    """One scale of the multi-scale sub-band CQT discriminator: each octave of the complex CQT gets its own
    first convolution (the sub-bands), then a shared stack of 2-D convs dilated along time and strided along
    frequency gives the score map."""

    def __init__(self, sample_rate: int, hop: int, bins_per_octave: int, octaves: int, fmin: float,
                 width: int = 32, max_width: int = 256):
        super().__init__()
        self.transform = ConstantQTransform(sample_rate, hop, fmin, octaves, bins_per_octave)
        self.bins_per_octave = bins_per_octave
        self.sub_bands = nn.ModuleList([_wn2d(2, 2, (3, 9), padding=(1, 4)) for _ in range(octaves)])
        channels = [width, min(2 * width, max_width), min(4 * width, max_width), min(8 * width, max_width)]
        self.convs = nn.ModuleList([_wn2d(2, channels[0], (3, 9), padding=(1, 4))] + [
            weight_norm(nn.Conv2d(channels[i], channels[i + 1], (3, 9), stride=(1, 2), dilation=(dilation, 1),
                                  padding=(dilation, 4)))
            for i, dilation in enumerate((1, 2, 4))] + [_wn2d(channels[-1], channels[-1], (3, 9), padding=(1, 4))])
        self.out = _wn2d(channels[-1], 1, (3, 9), padding=(1, 4))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spectrum = self.transform(audio.reshape(audio.shape[0], -1))
        bands = spectrum.split(self.bins_per_octave, dim=-1)
        x = torch.cat([conv(band) for conv, band in zip(self.sub_bands, bands)], dim=-1)
        return _conv_stack(self.convs, self.out, x)


def _period_members(loss, sample_rate: int) -> list[nn.Module]:
    return [PeriodDiscriminator(period) for period in loss.discriminator_periods]


def _stft_members(loss, sample_rate: int) -> list[nn.Module]:
    return [STFTDiscriminator(n_fft) for n_fft in loss.discriminator_stft_windows]


def _cqt_members(loss, sample_rate: int) -> list[nn.Module]:
    octaves = octaves_below_nyquist(sample_rate, loss.discriminator_cqt_fmin, loss.discriminator_cqt_octaves)
    return [SubBandCQTDiscriminator(sample_rate, hop, bins, octaves, loss.discriminator_cqt_fmin)
            for hop, bins in zip(loss.discriminator_cqt_hops, loss.discriminator_cqt_bins)]


DISCRIMINATORS: dict[str, Callable[..., list[nn.Module]]] = {
    "mpd": _period_members, "mrsd": _stft_members, "cqt": _cqt_members}


class Discriminator(nn.Module):
    """Ensemble of discriminators: returns ``(scores, features)`` lists, one per member. ``(B, C, T)`` audio of
    several channels is judged channel by channel (as ``(B * C, 1, T)``)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        audio = audio.reshape(-1, 1, audio.shape[-1])
        scores, features = [], []
        for member in self.members:
            score, feats = member(audio)
            scores.append(score)
            features.append(feats)
        return scores, features


def build_discriminator(loss, sample_rate: int) -> Discriminator:
    """The ensemble of the families ``loss.discriminators`` names (a ``LossConfig``), in that order."""
    return Discriminator([member for name in loss.discriminators for member in DISCRIMINATORS[name](loss, sample_rate)])


@register_check
def _check_discriminators(config: Config) -> None:
    loss = config.loss
    unknown = [name for name in loss.discriminators if name not in DISCRIMINATORS]
    if unknown or (loss.adversarial and not loss.discriminators):
        raise ConfigError(f"loss.discriminators={','.join(loss.discriminators)}: choose from "
                          f"{', '.join(DISCRIMINATORS)} (comma-separated)")
    if "cqt" not in loss.discriminators:
        return
    if len(loss.discriminator_cqt_hops) != len(loss.discriminator_cqt_bins) or not loss.discriminator_cqt_hops:
        raise ConfigError("loss.discriminator_cqt_hops and loss.discriminator_cqt_bins need one value per CQT scale "
                          "each, as many of one as of the other")
    octaves = octaves_below_nyquist(config.model.sample_rate, loss.discriminator_cqt_fmin,
                                    loss.discriminator_cqt_octaves)
    if not loss.discriminator_cqt_fmin > 0 or octaves < 1:
        raise ConfigError(f"loss.discriminator_cqt_fmin={loss.discriminator_cqt_fmin}: no CQT octave fits below "
                          f"{config.model.sample_rate / 2:g} Hz; lower it")
    for hop in loss.discriminator_cqt_hops:
        if hop <= 0 or hop % 2 ** (octaves - 1):
            raise ConfigError(f"loss.discriminator_cqt_hops: {hop} must be a positive multiple of 2^(octaves - 1) = "
                              f"{2 ** (octaves - 1)} ({octaves} octaves from {loss.discriminator_cqt_fmin:g} Hz fit "
                              f"below {config.model.sample_rate / 2:g} Hz)")
