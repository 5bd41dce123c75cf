"""Gaussian (VAE) bottleneck: the encoder emits a mean and a scale per channel and frame."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from targetkl.bottlenecks.base import Bottleneck, BottleneckOutput
from targetkl.control import KLController

LN2 = math.log(2.0)


def gaussian_kl_per_value(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, 1)) of each value, nats, same shape as ``mean``.

    ``0.5 * (mean^2 + std^2 - ln std^2 - 1)``; the 0.5 is part of the KL.
    """
    variance = std.pow(2)
    return 0.5 * (mean.pow(2) + variance - torch.log(variance) - 1.0)


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL to the standard normal summed over channels: ``(B, D, F) -> (B, F)`` nats per frame."""
    return gaussian_kl_per_value(mean, std).sum(dim=1)


class GaussianBottleneck(Bottleneck):
    """Split ``(B, 2D, F)`` into mean and raw scale; ``std = softplus(raw) + eps``.

    Training samples ``z = mean + a * std * noise`` (reparameterized; ``a`` is the controller's
    :meth:`~targetkl.control.KLController.noise_scale`, 1 by default); eval returns ``z = mean``. The rate is
    the KL of the posterior to the standard normal prior, whichever ``z`` is returned.
    """

    @dataclass
    class Settings:
        """``model.vae``: ``sigma_eps`` is the floor added to the posterior std."""

        sigma_eps: float = 1e-4
        former_keys: ClassVar[dict[str, str]] = {"sigma_eps": "sigma_eps"}

    def __init__(self, latent_dim: int, controller: KLController, sigma_eps: float = 1e-4):
        super().__init__()
        self.latent_dim = latent_dim
        self.input_channels = 2 * latent_dim
        self.sigma_eps = sigma_eps
        self.controller = controller

    stores_posterior = True

    @property
    def rate_controller(self) -> KLController:
        return self.controller

    @property
    def noise_values_per_frame(self) -> int:
        return self.latent_dim

    def target_kbps(self, configured_kbps: float | None, measured_kbps: float) -> float | None:
        """The configured target, unless the controller has none (a fixed beta lands where it lands)."""
        return configured_kbps if self.controller.has_goal else None

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 2D, F)`` -> mean and std, each ``(B, D, F)``, computed in float32."""
        mean, raw_scale = h.float().chunk(2, dim=1)
        std = F.softplus(raw_scale) + self.sigma_eps
        return mean, std

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        mean, std = self.posterior(h)
        z = mean + self.controller.noise_scale() * std * torch.randn_like(mean) if self.training else mean
        kl = gaussian_kl(mean, std)
        penalty = self.controller(kl)
        metrics = {"latent/mean_std": mean.detach().std(), "latent/posterior_std": std.detach().mean(),
                   **self.controller.all_metrics()}
        return BottleneckOutput(z=z, kl_nats_per_frame=kl, bits_per_frame=kl / LN2, codes=None, penalty=penalty,
                                metrics=metrics, mean=mean, std=std)
