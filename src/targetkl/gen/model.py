"""A small diffusion transformer (DiT) over latent frames, conditioned by adaLN-Zero on time and text.

Input ``x``: ``(batch, latent_dim, frames)`` standardized latents; ``t``: ``(batch,)`` flow time in
[0, 1]; ``text``: ``(batch, text_dim)`` sentence embeddings, or rows replaced by the learned null
embedding where ``drop`` is true (classifier-free guidance). Output: the velocity, same shape as ``x``.
The model also holds the per-channel latent statistics it was trained with, so sampling gives latents
in the VAE's own scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of ``t`` scaled by 1000: ``(batch,)`` -> ``(batch, dim)``."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * frequencies[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def position_features(frames: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal positions ``(frames, dim)``; any length works, so generation length is free."""
    return timestep_features(torch.arange(frames, device=device, dtype=torch.float32) / 1000.0, dim)


class DiTBlock(nn.Module):
    """Pre-norm attention and MLP, each modulated (shift, scale, gate) by the condition vector."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attention(h, h, h, need_weights=False)[0]
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class LatentDiT(nn.Module):
    def __init__(self, latent_dim: int, text_dim: int, width: int = 128, depth: int = 4, heads: int = 4):
        super().__init__()
        self.latent_dim, self.text_dim, self.width = latent_dim, text_dim, width
        self.input = nn.Linear(latent_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.text = nn.Sequential(nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.null_text = nn.Parameter(torch.zeros(text_dim))
        self.blocks = nn.ModuleList(DiTBlock(width, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.output = nn.Linear(width, latent_dim)
        for layer in (self.final_modulation[1], self.output):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))

    def standardize(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latents ``(B, C, T)`` to the generator's unit-variance space."""
        return (latent - self.latent_mean[:, None]) / self.latent_std[:, None]

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.latent_std[:, None] + self.latent_mean[:, None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        if drop is not None:
            text = torch.where(drop[:, None], self.null_text[None].to(text.dtype), text)
        condition = self.time(timestep_features(t, self.width)) + self.text(text)
        h = self.input(x.transpose(1, 2)) + position_features(x.shape[-1], self.width, x.device)[None]
        for block in self.blocks:
            h = block(h, condition)
        shift, scale = self.final_modulation(condition)[:, None].chunk(2, dim=-1)
        return self.output(self.final_norm(h) * (1 + scale) + shift).transpose(1, 2)
