"""Rectified flow matching: the path ``x_t = (1 - t) x_0 + t e`` from data (t=0) to noise (t=1).

The model predicts the velocity ``v = e - x_0``; sampling integrates ``dx/dt = v`` from t=1 to t=0 with
Euler steps. Classifier-free guidance mixes the conditional and unconditional velocities,
``v_u + cfg * (v_c - v_u)``; at ``cfg = 1`` that is the conditional model alone, so it is computed alone.
An optional ``mask`` ``(B, T)`` (true on real frames) batches clips of different lengths: losses average
over real frames only.
"""

from __future__ import annotations

import torch

from targetkl.gen.model import LatentDiT


def masked_mean(squared: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``(B, C, T)`` over every element, or over the real frames of ``mask`` ``(B, T)``."""
    if mask is None:
        return squared.mean()
    weights = mask[:, None, :].to(squared.dtype)
    return (squared * weights).sum() / (weights.sum() * squared.shape[1]).clamp_min(1)


def flow_matching_loss(model: LatentDiT, x0: torch.Tensor, text: torch.Tensor, drop: torch.Tensor,
                       generator: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared velocity error at logit-normal times; ``x0``: ``(B, C, T)`` standardized latents."""
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=generator, device=x0.device))
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    return masked_mean((model(x_t, t, text, drop, mask) - (noise - x0)) ** 2, mask)


@torch.no_grad()
def validation_loss(model: LatentDiT, x0: torch.Tensor, text: torch.Tensor, times: int = 8, seed: int = 0,
                    mask: torch.Tensor | None = None) -> float:
    """The conditional flow-matching loss averaged over a fixed grid of ``times`` and fixed noise: a
    deterministic measure of how predictable held-out latents are (lower is more predictable)."""
    generator = torch.Generator(device=x0.device).manual_seed(seed)
    total = 0.0
    for t_value in (torch.arange(times, dtype=torch.float32) + 0.5) / times:
        t = torch.full((x0.shape[0],), float(t_value), device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = (1 - t_value) * x0 + t_value * noise
        total += float(masked_mean((model(x_t, t, text, mask=mask) - (noise - x0)) ** 2, mask))
    return total / times


def guided_velocity(model: LatentDiT, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, cfg: float,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    if cfg == 1.0:
        return model(x, t, text, mask=mask)
    drop = torch.cat([torch.zeros(len(x), dtype=torch.bool), torch.ones(len(x), dtype=torch.bool)]).to(x.device)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, text]), drop,
                 None if mask is None else torch.cat([mask, mask]))
    conditional, unconditional = both.chunk(2)
    return unconditional + cfg * (conditional - unconditional)


@torch.no_grad()
def sample(model: LatentDiT, text: torch.Tensor, frames: int, steps: int = 32, cfg: float = 3.0,
           seed: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Latents ``(B, latent_dim, frames)`` in the VAE's scale for text embeddings ``(B, text_dim)`` (or token ids
    ``(B, L)`` of a TTS model; ``mask`` ``(B, frames)`` marks each clip's real frames when lengths differ).

    The start noise comes from ``seed`` alone, so the same seed and prompt give the same latents.
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: sampling needs at least one step")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((text.shape[0], model.latent_dim, frames), generator=generator).to(device)
    text = text.to(device)
    mask = None if mask is None else mask.to(device)
    times = torch.linspace(1.0, 0.0, steps + 1)
    for t_now, t_next in zip(times[:-1], times[1:]):
        t = torch.full((x.shape[0],), float(t_now), device=device)
        x = x + float(t_next - t_now) * guided_velocity(model, x, t, text, cfg, mask)
    return model.unstandardize(x)
