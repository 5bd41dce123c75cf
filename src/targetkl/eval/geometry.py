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
  (``latent_eigenvalues``, largest first): ``latent_condition_number`` (largest over smallest, at most
  ``MAX_CONDITION``: a singular covariance, as of an RVQ latent with fewer codewords than channels, reads 1e12) and
  ``latent_effective_dim``, the entropy effective rank ``exp(-sum p log p)`` of ``p = eigenvalues / their sum``
  (Roy and Vetterli, 2007): 1 when one direction holds all the variance, the channel count when all hold the same.
- **active channels**: the channels whose mean KL is at least ``ACTIVE_NATS`` nats per frame (``channel_kl_nats``
  per channel); a VAE only (NaN for a latent without a posterior).

``smoothness_slope`` and ``interp_max_jump`` are means over clips and pairs and carry their 95% bootstrap interval
(``_lo``, ``_hi``); the spectrum's numbers are of the pooled covariance, without one (see :func:`conditioning`).
Noise and clips are a pure function of ``seed``: the same run gives the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from targetkl.bottlenecks.gaussian import gaussian_kl_per_value
from targetkl.eval.metrics import bootstrap_draws, mel_distance
from targetkl.inference import DEFAULT_BATCH_SIZE, CodecRunner
from targetkl.models.codec import Codec

SMOOTHNESS_LEVELS = (0.125, 0.25, 0.5, 1.0)  # a, in units of each channel's latent std
INTERPOLATION_STEPS = 8
ACTIVE_NATS = 0.1  # nats per frame (0.14 bits) a channel must carry to count as active
GEOMETRY_CLIPS = 8
MAX_CONDITION = 1e12  # the condition number of a singular covariance (a latent in fewer dimensions than channels)
GEOMETRY_KEYS = ("smoothness_slope", "interp_max_jump", "latent_condition_number", "latent_effective_dim",
                 "active_channels")  # the scalar columns of rd.csv and generation.csv
# with the 95% bootstrap interval beside the means over clips (smoothness) and pairs (interpolation)
WITH_INTERVAL = ("smoothness_slope", "interp_max_jump")
GEOMETRY_COLUMNS = tuple(key + suffix for key in GEOMETRY_KEYS
                         for suffix in (("", "_lo", "_hi") if key in WITH_INTERVAL else ("",)))


def _mean_interval(key: str, values: list[float]) -> dict[str, float]:
    """``key_lo`` and ``key_hi``: the 95% percentile-bootstrap interval of the mean of ``values`` (one per clip or
    pair; ``metrics.bootstrap_draws``, NaN under two values)."""
    draws = bootstrap_draws(len(values))
    if draws is None:
        return {f"{key}_lo": math.nan, f"{key}_hi": math.nan}
    low, high = np.percentile(np.asarray(values, dtype=np.float64)[draws].mean(axis=1), [2.5, 97.5])
    return {f"{key}_lo": float(low), f"{key}_hi": float(high)}


def smoothness(runner: CodecRunner, latents: list[torch.Tensor], sigma: torch.Tensor, sample_rate: int,
               seed: int = 0, levels: tuple[float, ...] = SMOOTHNESS_LEVELS) -> dict:
    """``{"levels", "mel_distance"}`` (the curve, mean over clips) and ``smoothness_slope`` (its fit through the
    origin, the mean of the clips' own slopes) with its interval over clips, for ``(D, F)`` ``latents``; ``sigma``
    ``(D,)``."""
    generator = torch.Generator().manual_seed(seed)
    clean = runner.decode(latents)
    per_clip = []  # (levels, clips)
    for level in levels:
        noisy = [z + level * sigma[:, None] * torch.randn(z.shape, generator=generator) for z in latents]
        per_clip.append([mel_distance(a, b, sample_rate) for a, b in zip(clean, runner.decode(noisy))])
    a, distances = np.array(levels), np.array(per_clip)
    slopes = list((a[:, None] * distances).sum(axis=0) / (a * a).sum())
    return {"smoothness_curve": {"levels": list(levels), "mel_distance": distances.mean(axis=1).tolist()},
            "smoothness_slope": float(np.mean(slopes)), **_mean_interval("smoothness_slope", slopes)}


def interpolation_jump(runner: CodecRunner, latents: list[torch.Tensor], sample_rate: int,
                       steps: int = INTERPOLATION_STEPS) -> dict[str, float]:
    """``interp_max_jump``: the mean over neighbouring pairs of the largest step's share of the decoded path's mel
    length (NaN under two clips or when every path has length 0), with its interval over the pairs."""
    shares = []
    for one, other in zip(latents, latents[1:]):
        frames = min(one.shape[-1], other.shape[-1])
        path = [(1 - t) * one[:, :frames] + t * other[:, :frames] for t in np.linspace(0.0, 1.0, steps + 1)]
        decoded = runner.decode(path)
        jumps = [mel_distance(a, b, sample_rate) for a, b in zip(decoded, decoded[1:])]
        if sum(jumps) > 0:
            shares.append(max(jumps) / sum(jumps))
    return {"interp_max_jump": float(np.mean(shares)) if shares else math.nan,
            **_mean_interval("interp_max_jump", shares)}


def _spectrum(frames: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Eigenvalues (largest first) of the channel covariance of ``(D, frames)``, condition number, effective
    dimension (NaN for fewer than two frames or no variance)."""
    if frames.shape[-1] < 2:
        return torch.zeros(0), math.nan, math.nan
    eigenvalues = torch.linalg.eigvalsh(torch.cov(frames.double())).clamp_min(0.0).flip(0)
    total = float(eigenvalues.sum())
    if total <= 0:
        return eigenvalues, math.nan, math.nan
    share = eigenvalues[eigenvalues > 0] / total
    condition = float(eigenvalues[0]) / max(float(eigenvalues[-1]), float(eigenvalues[0]) / MAX_CONDITION)
    return eigenvalues, condition, math.exp(-float((share * share.log()).sum()))


def conditioning(latents: list[torch.Tensor]) -> dict:
    """Eigenvalues of the ``(D, D)`` channel covariance over every frame, its condition number and effective
    dimension. No bootstrap interval: a resample of the clips repeats some of them, which narrows the spectrum and
    would put the interval below the value it brackets."""
    eigenvalues, condition, effective = _spectrum(torch.cat(latents, dim=-1))
    return {"latent_eigenvalues": eigenvalues.tolist(), "latent_condition_number": condition,
            "latent_effective_dim": effective}


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
        return {key: math.nan for key in GEOMETRY_COLUMNS}
    sigma = torch.cat(latents, dim=-1).std(dim=-1).clamp_min(1e-6) if sum(z.shape[-1] for z in latents) > 1 \
        else torch.ones(latents[0].shape[0])
    return {**smoothness(runner, latents, sigma, model.sample_rate, seed),
            **interpolation_jump(runner, latents, model.sample_rate),
            **conditioning(latents), **active_channels([e.z for e in encoded], [e.std for e in encoded]),
            "geometry_clips": len(latents)}
