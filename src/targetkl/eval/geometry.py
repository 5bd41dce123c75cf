"""The latent's geometry: how smooth, local and well conditioned a codec's latent space is, on held-out clips.

A latent a generator learns well should be smooth (a small step in the latent is a small change in sound), have no
cliffs between clips, and spread its variance over the channels it keeps rather than hide it in a few. Measured on
the posterior means (a VAE) or latents (RVQ, AE) of up to ``clips`` held-out clips, decoded in eval mode:

- **smoothness**: the mean mel distance between ``decode(z)`` and ``decode(z + a * sigma * n)``, ``n ~ N(0, I)``,
  ``sigma`` the per-channel standard deviation of the held-out latents (every codec is pushed in units of its own
  latent's spread), for each ``a`` in ``SMOOTHNESS_LEVELS``: the curve ``smoothness_curve`` and its least-squares
  slope through the origin ``smoothness_slope`` (mel distance per sigma; smaller is smoother).
- **interpolation**: along the straight line between neighbouring clips' latents (cut to the shorter), decoded at
  ``INTERPOLATION_STEPS + 1`` points, the largest mel distance between consecutive decodes over the path's total
  length, averaged over the pairs: ``interp_max_jump``, ``1 / INTERPOLATION_STEPS`` for an even path, 1 for a
  single cliff.
- **conditioning**: the eigenvalues of the latent's channel covariance over all held-out frames
  (``latent_eigenvalues``, largest first): ``latent_condition_number`` (largest over smallest) and
  ``latent_effective_dim``, the entropy effective rank ``exp(-sum p log p)`` of ``p = eigenvalues / their sum``
  (Roy and Vetterli, 2007): 1 when one direction holds all the variance, the channel count when all hold the same.
- **active channels**: the channels whose mean KL is at least ``ACTIVE_NATS`` nats per frame (``channel_kl_nats``
  per channel); a VAE only (NaN for a latent without a posterior).

Noise and clips are a pure function of ``seed``: the same run gives the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from targetkl.bottlenecks.gaussian import gaussian_kl_per_value
from targetkl.eval.metrics import mel_distance
from targetkl.inference import DEFAULT_BATCH_SIZE, CodecRunner
from targetkl.models.codec import Codec

SMOOTHNESS_LEVELS = (0.125, 0.25, 0.5, 1.0)  # a, in units of each channel's latent std
INTERPOLATION_STEPS = 8
ACTIVE_NATS = 0.1  # nats per frame (0.14 bits) a channel must carry to count as active
GEOMETRY_CLIPS = 8
GEOMETRY_KEYS = ("smoothness_slope", "interp_max_jump", "latent_condition_number", "latent_effective_dim",
                 "active_channels")  # the scalar columns of rd.csv and generation.csv


def smoothness(runner: CodecRunner, latents: list[torch.Tensor], sigma: torch.Tensor, sample_rate: int,
               seed: int = 0, levels: tuple[float, ...] = SMOOTHNESS_LEVELS) -> dict:
    """``{"levels", "mel_distance"}`` (the curve) and ``smoothness_slope`` for ``(D, F)`` ``latents``; ``sigma``
    ``(D,)``."""
    generator = torch.Generator().manual_seed(seed)
    clean = runner.decode(latents)
    curve = []
    for level in levels:
        noisy = [z + level * sigma[:, None] * torch.randn(z.shape, generator=generator) for z in latents]
        curve.append(float(np.mean([mel_distance(a, b, sample_rate) for a, b in zip(clean, runner.decode(noisy))])))
    a, d = np.array(levels), np.array(curve)
    return {"smoothness_curve": {"levels": list(levels), "mel_distance": curve},
            "smoothness_slope": float((a * d).sum() / (a * a).sum())}


def interpolation_jump(runner: CodecRunner, latents: list[torch.Tensor], sample_rate: int,
                       steps: int = INTERPOLATION_STEPS) -> float:
    """Mean over neighbouring pairs of the largest step's share of the decoded path's mel length (NaN under two
    clips or when every path has length 0)."""
    shares = []
    for one, other in zip(latents, latents[1:]):
        frames = min(one.shape[-1], other.shape[-1])
        path = [(1 - t) * one[:, :frames] + t * other[:, :frames] for t in np.linspace(0.0, 1.0, steps + 1)]
        decoded = runner.decode(path)
        jumps = [mel_distance(a, b, sample_rate) for a, b in zip(decoded, decoded[1:])]
        if sum(jumps) > 0:
            shares.append(max(jumps) / sum(jumps))
    return float(np.mean(shares)) if shares else math.nan


def conditioning(latents: list[torch.Tensor]) -> dict:
    """Eigenvalues of the ``(D, D)`` channel covariance over every frame, its condition number and effective
    dimension."""
    frames = torch.cat(latents, dim=-1).double()
    if frames.shape[-1] < 2:
        return {"latent_eigenvalues": [], "latent_condition_number": math.nan, "latent_effective_dim": math.nan}
    eigenvalues = torch.linalg.eigvalsh(torch.cov(frames)).clamp_min(0.0).flip(0)
    total = float(eigenvalues.sum())
    if total <= 0:
        return {"latent_eigenvalues": eigenvalues.tolist(), "latent_condition_number": math.nan,
                "latent_effective_dim": math.nan}
    share = eigenvalues / total
    entropy = -float((share[share > 0] * share[share > 0].log()).sum())
    smallest = float(eigenvalues[-1])
    condition = float(eigenvalues[0]) / smallest if smallest > 0 else math.inf
    return {"latent_eigenvalues": eigenvalues.tolist(), "latent_condition_number": condition,
            "latent_effective_dim": math.exp(entropy)}


def active_channels(means: list[torch.Tensor], stds: list[torch.Tensor | None]) -> dict:
    """Mean KL per frame of each channel (nats) and the count of channels at or above ``ACTIVE_NATS``."""
    if not means or any(std is None for std in stds):
        return {"channel_kl_nats": None, "active_channels": math.nan}
    kl = gaussian_kl_per_value(torch.cat(means, dim=-1).double(), torch.cat(stds, dim=-1).double()).mean(dim=-1)
    return {"channel_kl_nats": kl.tolist(), "active_channels": int((kl >= ACTIVE_NATS).sum())}


@torch.no_grad()
def latent_geometry(model: Codec, audios: list[np.ndarray], clips: int = GEOMETRY_CLIPS, seed: int = 0,
                    device: torch.device | str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Every measure above for ``model`` on the first ``clips`` of ``audios`` (held-out clips, ``(samples,)`` or
    ``(channels, samples)``): the scalar ``GEOMETRY_KEYS``, the smoothness curve, the eigenvalues and the
    per-channel KL."""
    runner = CodecRunner(model, device, batch_size)
    encoded = runner.encode(list(audios[:clips]))
    latents = [e.z.float() for e in encoded]
    if not latents:
        return {key: math.nan for key in GEOMETRY_KEYS}
    sigma = torch.cat(latents, dim=-1).std(dim=-1).clamp_min(1e-6) if sum(z.shape[-1] for z in latents) > 1 \
        else torch.ones(latents[0].shape[0])
    return {**smoothness(runner, latents, sigma, model.sample_rate, seed),
            "interp_max_jump": interpolation_jump(runner, latents, model.sample_rate),
            **conditioning(latents), **active_channels([e.z for e in encoded], [e.std for e in encoded]),
            "geometry_clips": len(latents)}
