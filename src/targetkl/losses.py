"""Reconstruction and adversarial losses; also used as distortion metrics in evaluation.

Waveforms are ``(batch, 1, samples)`` or ``(batch, samples)``; every loss returns a scalar.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    mel = np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / (math.log(6.4) / 27.0), mel)
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    log_region = mel >= 15.0
    return np.where(log_region, 1000.0 * np.exp((math.log(6.4) / 27.0) * (mel - 15.0)), hz)


@functools.lru_cache(maxsize=64)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular, area-normalized (Slaney) filters: ``(n_mels, n_fft // 2 + 1)``."""
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower = (bins[None, :] - edges[:-2, None]) / np.maximum(edges[1:-1, None] - edges[:-2, None], 1e-9)
    upper = (edges[2:, None] - bins[None, :]) / np.maximum(edges[2:, None] - edges[1:-1, None], 1e-9)
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.tensor(weights, dtype=torch.float32)


@functools.lru_cache(maxsize=64)
def _window(n_fft: int, device: str) -> torch.Tensor:
    return torch.hann_window(n_fft, device=device)


def magnitude(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``(B, [1,] T) -> (B, n_fft//2+1, frames)`` magnitude STFT, hop ``n_fft // 4``."""
    audio = audio.reshape(-1, audio.shape[-1]).float()
    spec = torch.stft(audio, n_fft, hop_length=n_fft // 4, window=_window(n_fft, str(audio.device)),
                      return_complex=True, center=True)
    return spec.abs()


def mel_bins_for(n_fft: int) -> int:
    return max(8, n_fft // 8)


class MultiScaleMelLoss(nn.Module):
    """Mean over window sizes of L1 between log10 mel spectrograms (magnitude, clamped at 1e-5)."""

    def __init__(self, sample_rate: int, windows: tuple[int, ...]):
        super().__init__()
        self.windows = tuple(windows)
        for n_fft in self.windows:
            self.register_buffer(f"mel_{n_fft}", mel_filterbank(sample_rate, n_fft, mel_bins_for(n_fft)),
                                 persistent=False)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros((), dtype=torch.float32)
        for n_fft in self.windows:
            filters = getattr(self, f"mel_{n_fft}")
            est = torch.matmul(filters, magnitude(estimate, n_fft)).clamp_min(1e-5).log10()
            ref = torch.matmul(filters, magnitude(reference, n_fft)).clamp_min(1e-5).log10()
            total = total + (est - ref).abs().mean()
        return total / len(self.windows)


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence plus L1 of log magnitudes.

    Spectral convergence is taken over the whole batch, so quiet crops weigh by their energy. (Taken per
    clip and averaged, a near-silent crop's ratio blew up and the tiny model learned a constant output.)
    This is the one loss term that is not a mean over clips: a batch split across processes averages
    to a slightly different loss than the whole batch.
    """

    def __init__(self, windows: tuple[int, ...]):
        super().__init__()
        self.windows = tuple(windows)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros((), dtype=torch.float32)
        for n_fft in self.windows:
            est, ref = magnitude(estimate, n_fft), magnitude(reference, n_fft)
            convergence = torch.linalg.norm(ref - est) / torch.linalg.norm(ref).clamp_min(1e-7)
            log_mag = (est.clamp_min(1e-7).log() - ref.clamp_min(1e-7).log()).abs().mean()
            total = total + convergence + log_mag
        return total / len(self.windows)


def waveform_l1(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (estimate.float() - reference.float()).abs().mean()


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per clip: ``(B, [1,] T) -> (B,)``; means are removed first."""
    estimate = estimate.reshape(estimate.shape[0], -1).double()
    reference = reference.reshape(reference.shape[0], -1).double()
    estimate = estimate - estimate.mean(dim=1, keepdim=True)
    reference = reference - reference.mean(dim=1, keepdim=True)
    scale = (estimate * reference).sum(dim=1, keepdim=True) / (reference.pow(2).sum(dim=1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(dim=1) + eps) / (noise.pow(2).sum(dim=1) + eps))


def lsgan_discriminator_loss(real_scores: list[torch.Tensor], fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """Least-squares GAN: real to 1, fake to 0, summed over discriminators."""
    return sum(((1 - r).pow(2).mean() + f.pow(2).mean()) for r, f in zip(real_scores, fake_scores))


def lsgan_generator_loss(fake_scores: list[torch.Tensor]) -> torch.Tensor:
    return sum((1 - f).pow(2).mean() for f in fake_scores)


def feature_matching_loss(real_features: list[list[torch.Tensor]],
                          fake_features: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminators' intermediate activations on real (detached) and fake audio."""
    total, count = 0.0, 0
    for real_list, fake_list in zip(real_features, fake_features):
        for real, fake in zip(real_list, fake_list):
            total = total + (real.detach() - fake).abs().mean()
            count += 1
    return total / max(count, 1)


class ReconstructionLoss(nn.Module):
    """Weighted sum of multi-scale mel, multi-resolution STFT and waveform L1; returns ``(total, terms)``."""

    def __init__(self, sample_rate: int, mel_windows: tuple[int, ...], stft_windows: tuple[int, ...],
                 mel_weight: float, stft_weight: float, waveform_weight: float):
        super().__init__()
        self.mel = MultiScaleMelLoss(sample_rate, mel_windows)
        self.stft = MultiResolutionSTFTLoss(stft_windows)
        self.weights = {"mel": mel_weight, "stft": stft_weight, "waveform": waveform_weight}

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {"mel": self.mel(estimate, reference), "waveform": waveform_l1(estimate, reference)}
        if self.weights["stft"]:
            terms["stft"] = self.stft(estimate, reference)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms
