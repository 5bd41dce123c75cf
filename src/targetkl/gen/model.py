"""A small diffusion transformer (DiT) over latent frames, conditioned by adaLN-Zero on time and text.

Input ``x``: ``(batch, latent_dim, frames)`` standardized latents; ``t``: ``(batch,)`` flow time in
[0, 1]; ``text``: either ``(batch, text_dim)`` sentence embeddings (text-to-sound: the caption conditions
every frame through adaLN), or, for a model built with ``vocabulary > 0``, ``(batch, tokens)`` int64 token
ids (text-to-speech: :class:`TokenText` spreads the tokens evenly over the frames and adds them to the
input, as F5-TTS adds its padded text to the noisy audio). Where ``drop`` is true the text is replaced by a
learned null (classifier-free guidance). ``mask``: ``(batch, frames)`` bool, true on real frames, for
batches of clips of different lengths (attention ignores the rest). Output: the velocity, same shape as
``x``. The model also holds the per-channel latent statistics it was trained with, so sampling gives
latents in the VAE's own scale.
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

    def forward(self, x: torch.Tensor, condition: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attention(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


def stretch_indices(token_counts: torch.Tensor, frame_counts: torch.Tensor, frames: int) -> torch.Tensor:
    """``(batch, frames)`` token index per frame: ``floor(j * tokens / frames_i)`` for frame ``j`` of a clip of
    ``frames_i`` real frames and ``tokens`` tokens (0 past the clip's end): each token gets an equal share."""
    j = torch.arange(frames, device=token_counts.device)[None].float()
    index = torch.floor(j * token_counts[:, None].float() / frame_counts[:, None].clamp_min(1).float()).long()
    return torch.minimum(index, (token_counts[:, None] - 1).clamp_min(0)) * (j < frame_counts[:, None]).long()


class TokenText(nn.Module):
    """Token ids ``(B, L)`` (0 = padding) to per-frame text features ``(B, frames, width)``.

    Each token's embedding is repeated over an equal share of the clip's real frames (a monotonic
    alignment prior that a small model learns from quickly; E2/F5-TTS pad with filler tokens instead and
    let attention find the alignment, which takes GPU-scale training), then refined by two residual
    convolutions over frames so neighbouring tokens blend at their borders.
    """

    def __init__(self, vocabulary: int, width: int, kernel: int = 5):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width, padding_idx=0)
        self.null = nn.Parameter(torch.zeros(width))
        self.convolutions = nn.ModuleList(nn.Conv1d(width, width, kernel, padding=kernel // 2) for _ in range(2))

    def forward(self, tokens: torch.Tensor, frames: int, mask: torch.Tensor | None,
                drop: torch.Tensor | None) -> torch.Tensor:
        token_counts = (tokens > 0).sum(dim=1)
        frame_counts = mask.sum(dim=1) if mask is not None else torch.full_like(token_counts, frames)
        index = stretch_indices(token_counts, frame_counts, frames)
        h = self.embedding(torch.gather(tokens, 1, index))
        if drop is not None:
            h = torch.where(drop[:, None, None], self.null[None, None].to(h.dtype), h)
        keep = None if mask is None else mask[:, None, :].to(h.dtype)
        h = h.transpose(1, 2)
        for convolution in self.convolutions:  # frames past a clip's end stay zero, as the convolution's own padding
            h = h if keep is None else h * keep
            h = h + convolution(nn.functional.gelu(h))
        h = h if keep is None else h * keep
        return h.transpose(1, 2)


class LatentDiT(nn.Module):
    def __init__(self, latent_dim: int, text_dim: int, width: int = 128, depth: int = 4, heads: int = 4,
                 vocabulary: int = 0):
        super().__init__()
        self.latent_dim, self.text_dim, self.width, self.vocabulary = latent_dim, text_dim, width, vocabulary
        self.input = nn.Linear(latent_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        if vocabulary:
            self.tokens = TokenText(vocabulary, width)
        else:
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
                drop: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        condition = self.time(timestep_features(t, self.width))
        h = self.input(x.transpose(1, 2)) + position_features(x.shape[-1], self.width, x.device)[None]
        if self.vocabulary:
            h = h + self.tokens(text, x.shape[-1], mask, drop)
        else:
            if drop is not None:
                text = torch.where(drop[:, None], self.null_text[None].to(text.dtype), text)
            condition = condition + self.text(text)
        padding = None if mask is None else ~mask
        for block in self.blocks:
            h = block(h, condition, padding)
        shift, scale = self.final_modulation(condition)[:, None].chunk(2, dim=-1)
        return self.output(self.final_norm(h) * (1 + scale) + shift).transpose(1, 2)
