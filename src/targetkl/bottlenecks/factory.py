"""Build the bottleneck a config asks for."""

from __future__ import annotations

from targetkl.bottlenecks.base import Bottleneck
from targetkl.config import Config


def build_bottleneck(config: Config) -> Bottleneck:
    from targetkl.bottlenecks.gaussian import GaussianBottleneck
    from targetkl.bottlenecks.identity import IdentityBottleneck
    from targetkl.bottlenecks.rvq import RVQBottleneck
    from targetkl.control import build_controller

    model = config.model
    if model.bottleneck == "vae":
        controller = build_controller(config.rate, config.target_nats_per_frame)
        return GaussianBottleneck(model.latent_dim, controller, model.sigma_eps)
    if model.bottleneck == "rvq":
        return RVQBottleneck(model.latent_dim, model.rvq_codebooks, model.rvq_codebook_size, model.rvq_codebook_dim,
                             model.quantizer_dropout, model.commitment_weight, model.codebook_weight,
                             config.rate.free_steps, config.rate.warmup_steps)
    if model.bottleneck == "ae":
        return IdentityBottleneck(model.latent_dim)
    raise ValueError(f"unknown bottleneck {model.bottleneck!r}; choose vae, rvq or ae")
