"""Residual vector quantizer (DAC-style factorized, L2-normalized codebooks) with quantizer dropout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from targetkl.bottlenecks.base import Bottleneck, BottleneckOutput
from targetkl.nn import wn_conv1d


class VectorQuantizer(nn.Module):
    """Project ``(B, D, F)`` to ``codebook_dim``, pick the nearest code by cosine similarity, project back."""

    def __init__(self, latent_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_proj = wn_conv1d(latent_dim, codebook_dim, kernel_size=1)
        self.out_proj = wn_conv1d(codebook_dim, latent_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def forward(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(quantized (B, D, F), codes (B, F), commitment (B,), codebook_loss (B,))``."""
        projected = self.in_proj(residual)
        batch, dim, frames = projected.shape
        flat = F.normalize(projected.transpose(1, 2).reshape(-1, dim), dim=1)
        codebook = F.normalize(self.codebook.weight, dim=1)
        codes = (flat @ codebook.t()).argmax(dim=1)
        chosen = F.embedding(codes, self.codebook.weight).reshape(batch, frames, dim).transpose(1, 2)
        commitment = F.mse_loss(projected, chosen.detach(), reduction="none").mean(dim=(1, 2))
        codebook_loss = F.mse_loss(chosen, projected.detach(), reduction="none").mean(dim=(1, 2))
        straight_through = projected + (chosen - projected).detach()
        return self.out_proj(straight_through), codes.reshape(batch, frames), commitment, codebook_loss

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` integer codes -> ``(B, D, F)``."""
        return self.out_proj(self.codebook(codes).transpose(1, 2))


class RVQBottleneck(Bottleneck):
    """``n_codebooks`` residual stages of ``codebook_size`` entries: ``n * log2(K)`` bits per frame.

    In training, a fraction ``quantizer_dropout`` of the clips uses only the first ``n_i`` stages
    (``n_i`` uniform in 1..n), so one model serves several bitrates; their rate is counted per clip.
    """

    def __init__(self, latent_dim: int, n_codebooks: int, codebook_size: int, codebook_dim: int,
                 quantizer_dropout: float, commitment_weight: float, codebook_weight: float):
        super().__init__()
        self.latent_dim = latent_dim
        self.input_channels = latent_dim
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.quantizer_dropout = quantizer_dropout
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.quantizers = nn.ModuleList(
            [VectorQuantizer(latent_dim, codebook_size, codebook_dim) for _ in range(n_codebooks)])

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        h = h.float()
        batch, _, frames = h.shape
        active = torch.full((batch,), self.n_codebooks, device=h.device)
        if self.training and self.quantizer_dropout > 0:
            dropped = torch.rand(batch, device=h.device) < self.quantizer_dropout
            random_counts = torch.randint(1, self.n_codebooks + 1, (batch,), device=h.device)
            active = torch.where(dropped, random_counts, active)
        residual, quantized = h, torch.zeros_like(h)
        commitment = h.new_zeros(())
        codebook_loss = h.new_zeros(())
        all_codes = []
        for index, quantizer in enumerate(self.quantizers):
            stage_out, codes, stage_commitment, stage_codebook = quantizer(residual)
            mask = (index < active).to(h.dtype)
            quantized = quantized + stage_out * mask[:, None, None]
            residual = residual - stage_out.detach() * mask[:, None, None]
            commitment = commitment + (stage_commitment * mask).mean()
            codebook_loss = codebook_loss + (stage_codebook * mask).mean()
            all_codes.append(codes)
        bits = (active.to(h.dtype) * self.bits_per_code)[:, None].expand(batch, frames)
        penalty = self.commitment_weight * commitment + self.codebook_weight * codebook_loss
        metrics = {"rvq/commitment": float(commitment.detach()), "rvq/codebook": float(codebook_loss.detach())}
        return BottleneckOutput(z=quantized, kl_nats_per_frame=None, bits_per_frame=bits,
                                codes=torch.stack(all_codes, dim=1), penalty=penalty, metrics=metrics)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, n_codebooks, F)`` codes -> ``(B, D, F)`` latent."""
        return sum(q.decode_codes(codes[:, i]) for i, q in enumerate(self.quantizers))
