"""Gaussian (VAE) bottleneck: the encoder emits a mean and a scale per channel and frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from targetkl import rate
from targetkl.bottlenecks.base import Bottleneck, BottleneckOutput
from targetkl.control import KLController



def gaussian_kl_per_value(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, 1)) of each value, nats, same shape as ``mean``.

    ``0.5 * (mean^2 + std^2 - ln std^2 - 1)``; the 0.5 is part of the KL.
    """
    variance = std.pow(2)
    return 0.5 * (mean.pow(2) + variance - torch.log(variance) - 1.0)


def inverse_softplus(value: torch.Tensor) -> torch.Tensor:
    """The ``raw`` whose ``softplus(raw)`` is ``value`` (> 0), computed without overflow."""
    return value + torch.log(-torch.expm1(-value))


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL to the standard normal summed over channels: ``(B, D, F) -> (B, F)`` nats per frame."""
    return gaussian_kl_per_value(mean, std).sum(dim=1)


class GaussianBottleneck(Bottleneck):
    """Split ``(B, 2D, F)`` into mean and raw scale; ``std = softplus(raw + scale_shift) + eps``.

    ``scale_shift`` (a buffer, 0 until :meth:`trim_rate` sets it at the end of training) is one constant on every
    raw scale: the final trim of the rate.

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
        self.register_buffer("scale_shift", torch.zeros(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Runs saved before the final trim existed load with no shift."""
        state_dict.setdefault(prefix + "scale_shift", torch.zeros(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        std = F.softplus(raw_scale + self.scale_shift) + self.sigma_eps
        return mean, std

    def set_trim(self, shift: float) -> None:
        self.scale_shift.fill_(shift)

    @torch.no_grad()
    def trim_rate(self, posteriors: list[tuple[torch.Tensor, torch.Tensor]], target_nats: float,
                  limit: float = 1.0) -> dict[str, float] | None:
        """Move ``scale_shift`` so that the mean KL per frame of ``posteriors`` (whole clips' ``(D, F)`` posterior
        mean and std, in eval mode) is ``target_nats``: the same shift on every raw scale, the one nearest 0
        within ``+-limit`` (a walk away from 0 in 16 steps to the first crossing, then bisection).

        The decoder never sees the std in eval, so the decoded posterior mean is unchanged; what changes is what
        the latent costs (and the ``.tkl`` step sizes that follow from it). Returns the shift and the KL before
        and after (nats per frame), or ``None`` (nothing changed) when no shift within the limit reaches the
        target."""
        mean = torch.cat([m for m, _ in posteriors], dim=-1).double()
        std = torch.cat([s for _, s in posteriors], dim=-1).double()
        excess = (std - self.sigma_eps).clamp_min(1e-12)
        raw = inverse_softplus(excess)
        frames = max(mean.shape[-1], 1)

        def error(shift: float) -> float:
            return float(gaussian_kl_per_value(mean, F.softplus(raw + shift) + self.sigma_eps).sum()) / frames \
                - target_nats

        start = error(0.0)
        direction = 1.0 if start > 0 else -1.0  # too many bits: widen the posterior
        low = high = 0.0
        for step in range(1, 17):
            low, high = high, direction * limit * step / 16
            if error(high) * start <= 0:
                break
        else:
            return None
        low_error = error(low)
        for _ in range(50):
            middle = 0.5 * (low + high)
            middle_error = error(middle)
            if (middle_error > 0) == (low_error > 0):
                low, low_error = middle, middle_error
            else:
                high = middle
        shift = 0.5 * (low + high)
        before = start + target_nats
        self.scale_shift += shift
        return {"rate/trim_shift": float(self.scale_shift), "rate/trim_before_kl": before,
                "rate/trim_after_kl": error(shift) + target_nats}

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        mean, std = self.posterior(h)
        z = mean + self.controller.noise_scale() * std * torch.randn_like(mean) if self.training else mean
        kl = gaussian_kl(mean, std)
        penalty = self.controller(kl)
        metrics = {"latent/mean_std": mean.detach().std(), "latent/posterior_std": std.detach().mean(),
                   **self.controller.all_metrics()}
        return BottleneckOutput(z=z, kl_nats_per_frame=kl, bits_per_frame=rate.nats_to_bits(kl), codes=None,
                                penalty=penalty, metrics=metrics, mean=mean, std=std)
