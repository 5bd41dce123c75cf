"""Residual vector quantizer (DAC-style factorized, L2-normalized codebooks) with quantizer dropout.

Two measures keep the codebooks alive on a small model: each code's share of the training frames is
tracked as a moving average, and a code whose share falls below ``DEAD_SHARE`` of the uniform
``1 / codebook_size`` is moved onto a random projected frame of the current batch (dead-code restart,
as in EnCodec; at the first step this initializes every codebook from data); and, like the Gaussian
bottleneck's rate penalty, quantization fades in after ``free_steps`` training forwards over
``warmup_steps`` (the decoder first learns from the unquantized latent). Why both are needed, measured:
``docs/experiments.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from targetkl.bottlenecks.base import Bottleneck, BottleneckOutput
from targetkl.config import ConfigError
from targetkl.control import free_start_ramp
from targetkl.nn import wn_conv1d
from targetkl.nn.host_scalars import increment_scalar, read_scalar

USAGE_DECAY = 0.99
DEAD_SHARE = 0.1


class VectorQuantizer(nn.Module):
    """Project ``(B, D, F)`` to ``codebook_dim``, pick the nearest code by cosine similarity, project back."""

    def __init__(self, latent_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_proj = wn_conv1d(latent_dim, codebook_dim, kernel_size=1)
        self.out_proj = wn_conv1d(codebook_dim, latent_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self.register_buffer("usage", torch.zeros(codebook_size))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """``(N, codebook_dim)`` L2-normalized frames -> ``(N,)`` index of the code with the highest cosine."""
        return (flat @ F.normalize(self.codebook.weight, dim=1).t()).argmax(dim=1)

    @torch.no_grad()
    def restart_dead_codes(self, frames: torch.Tensor, codes: torch.Tensor) -> int:
        """Update the codes' moving-average share of the frames and move dead codes onto batch frames.

        ``frames``: ``(N, codebook_dim)`` projected (unnormalized) training frames, ``codes``: ``(N,)``.
        Under torch.distributed the shares are averaged over ranks and rank 0's replacements are
        broadcast, so every rank keeps the same codebook. Returns the number of codes moved.
        """
        size = self.codebook.num_embeddings
        share = torch.bincount(codes, minlength=size).float() / max(codes.numel(), 1)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(share)
            share /= dist.get_world_size()
        self.usage.mul_(USAGE_DECAY).add_(share, alpha=1 - USAGE_DECAY)
        dead = torch.nonzero(self.usage < DEAD_SHARE / size).flatten()
        if dead.numel() == 0:
            return 0
        picks = torch.randint(0, frames.shape[0], (dead.numel(),), device=frames.device)
        replacement = frames[picks].to(self.codebook.weight.dtype).contiguous()
        if distributed:
            dist.broadcast(replacement, src=0)
        self.codebook.weight.data[dead] = replacement
        self.usage[dead] = 1.0 / size
        return int(dead.numel())

    def forward(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(quantized (B, D, F), codes (B, F), commitment (B,), codebook_loss (B,))``.

        In training, dead codes are restarted (see :meth:`restart_dead_codes`) before the lookup."""
        projected = self.in_proj(residual)
        batch, dim, frames = projected.shape
        flat = F.normalize(projected.transpose(1, 2).reshape(-1, dim), dim=1)
        codes = self.nearest(flat)
        if self.training and torch.is_grad_enabled():
            raw = projected.detach().transpose(1, 2).reshape(-1, dim).float()
            if self.restart_dead_codes(raw, codes):
                codes = self.nearest(flat)
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

    @dataclass
    class Settings:
        """``model.rvq``: ``codebooks`` stages of ``codebook_size`` entries, looked up in ``codebook_dim``
        dimensions; ``dropout`` is the quantizer dropout; ``commitment_weight`` and ``codebook_weight`` weigh
        the two VQ losses."""

        codebooks: int = 4
        codebook_size: int = 1024
        codebook_dim: int = 8
        dropout: float = 0.5
        commitment_weight: float = 0.25
        codebook_weight: float = 1.0
        former_keys: ClassVar[dict[str, str]] = {
            "rvq_codebooks": "codebooks", "rvq_codebook_size": "codebook_size", "rvq_codebook_dim": "codebook_dim",
            "quantizer_dropout": "dropout", "commitment_weight": "commitment_weight",
            "codebook_weight": "codebook_weight"}

        def check(self, path: str) -> None:
            if self.codebooks <= 0 or self.codebook_size < 2:
                raise ConfigError(f"{path}.codebooks must be >= 1 and {path}.codebook_size >= 2")

    def __init__(self, latent_dim: int, n_codebooks: int, codebook_size: int, codebook_dim: int,
                 quantizer_dropout: float, commitment_weight: float, codebook_weight: float,
                 free_steps: int = 0, warmup_steps: int = 0):
        super().__init__()
        self.free_steps = free_steps
        self.warmup_steps = warmup_steps
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))
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

    def quantization_weight(self) -> float:
        """How much of the quantized latent the decoder gets in training: 0 for the first ``free_steps``
        training forwards, then rising linearly to 1 over ``warmup_steps``; always 1 in eval."""
        if not self.training:
            return 1.0
        return free_start_ramp(read_scalar(self, "forwards"), self.free_steps, self.warmup_steps)

    def target_kbps(self, configured_kbps: float | None, measured_kbps: float) -> float | None:
        """A fixed-rate code: its own rate is its target."""
        return measured_kbps

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
        weight = self.quantization_weight()
        z = quantized if weight >= 1.0 else h + weight * (quantized - h)
        if self.training and torch.is_grad_enabled():
            increment_scalar(self, "forwards")
        metrics = {"rvq/commitment": commitment.detach(), "rvq/codebook": codebook_loss.detach(),
                   "rvq/quantization_weight": weight, "rvq/distinct_codes": self.distinct_codes(all_codes)}
        return BottleneckOutput(z=z, kl_nats_per_frame=None, bits_per_frame=bits,
                                codes=torch.stack(all_codes, dim=1), penalty=penalty, metrics=metrics)

    def distinct_codes(self, all_codes: list[torch.Tensor]) -> torch.Tensor:
        """Mean over stages of the number of distinct codes used in the batch (a 0-d tensor, computed on the
        device without a synchronization)."""
        counts = [torch.zeros(self.codebook_size, device=c.device).scatter_(0, c.reshape(-1), 1.0).sum()
                  for c in all_codes]
        return torch.stack(counts).mean()

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, n_codebooks, F)`` codes -> ``(B, D, F)`` latent."""
        return sum(q.decode_codes(codes[:, i]) for i, q in enumerate(self.quantizers))
