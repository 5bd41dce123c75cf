"""The bottleneck contract shared by the Gaussian, RVQ and identity bottlenecks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class BottleneckOutput:
    """What every bottleneck returns.

    z:                  ``(B, D, F)`` latent passed to the decoder (a sample in training, the mean in eval).
    kl_nats_per_frame:  ``(B, F)`` KL(q || N(0, I)) per frame in nats, or ``None`` for non-Gaussian ones.
    bits_per_frame:     ``(B, F)`` rate of each frame in bits.
    codes:              ``(B, n_codebooks, F)`` integer codes of a discrete bottleneck, else ``None``.
    penalty:            scalar added to the loss (rate-control term or commitment/codebook loss).
    metrics:            scalars to log: Python numbers or 0-d tensors left on the device (the trainer turns
                        them into floats only at log time, so a forward costs no synchronization).
    mean, std:          ``(B, D, F)`` posterior mean and std of a Gaussian bottleneck, else ``None``.
    """

    z: torch.Tensor
    kl_nats_per_frame: torch.Tensor | None
    bits_per_frame: torch.Tensor
    codes: torch.Tensor | None
    penalty: torch.Tensor
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None


class Bottleneck(nn.Module):
    """``forward(h: (B, input_channels, F)) -> BottleneckOutput`` with ``z`` of ``latent_dim`` channels.

    What differs between bottlenecks is asked of the bottleneck, never decided by its name:
    ``rate_controller`` (the KL controller that the trainer's calibration feeds, or ``None``),
    ``noise_values_per_frame`` (posterior noise values one training forward draws per clip and frame,
    so each process of a data-parallel run can skip the other ranks' share), ``stores_posterior`` (what
    ``pre-encode`` keeps: posterior mean and std, or the latent alone) and ``target_kbps`` (what ``eval``
    compares the measured rate with).
    """

    input_channels: int
    latent_dim: int
    stores_posterior = False

    @property
    def rate_controller(self):
        return None

    @property
    def noise_values_per_frame(self) -> int:
        return 0

    def target_kbps(self, configured_kbps: float | None, measured_kbps: float) -> float | None:
        """The rate this bottleneck was asked for, to report next to the measured one (``None``: none)."""
        return None

    def trim_rate(self, posteriors: list, target_nats: float) -> dict[str, float] | None:
        """The final trim of a rate-controlled bottleneck (see ``GaussianBottleneck.trim_rate``); ``None``: none."""
        return None

    def set_trim(self, shift: float) -> None:
        """Take the trim ``shift`` that :meth:`trim_rate` found on another copy of this bottleneck (its
        ``rate/trim_shift``); 0 undoes the trim (training goes on from the untrimmed state)."""

    def clear_trim(self) -> None:
        self.set_trim(0.0)

    def forward(self, h: torch.Tensor) -> BottleneckOutput:  # pragma: no cover - interface
        raise NotImplementedError
