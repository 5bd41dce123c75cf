"""Identity bottleneck: a plain autoencoder; the latent is whatever the encoder emits."""

from __future__ import annotations

import torch

from targetkl.bottlenecks.base import Bottleneck, BottleneckOutput

FLOAT_BITS = 32


class IdentityBottleneck(Bottleneck):
    """``z = h``. A float latent has no honest entropy-coded rate; ``bits_per_frame`` reports its raw
    float32 storage cost, ``32 * latent_dim``, which is an upper bound, not a measurement."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.input_channels = latent_dim

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        z = h.float()
        bits = torch.full((z.shape[0], z.shape[-1]), float(FLOAT_BITS * self.latent_dim), device=z.device)
        return BottleneckOutput(z=z, kl_nats_per_frame=None, bits_per_frame=bits, codes=None,
                                penalty=z.new_zeros(()), metrics={"latent/mean_std": z.detach().std()})
