"""Shannon-limit check: the rate controllers on a source whose rate-distortion function is known.

The source is i.i.d. Gaussian vectors ``x`` of ``n`` independent components with unequal variances
``sigma_i^2``. Its distortion-rate function under squared error (summed over components) is given by
reverse water-filling: for a level ``theta``, each component costs ``max(0, 0.5 * log2(sigma_i^2 /
theta))`` bits and keeps ``min(theta, sigma_i^2)`` distortion.

The model is the project's Gaussian bottleneck between a linear encoder and a linear decoder, which is
enough to reach D(R) on this source: ``z_i = a_i x_i + s_i * noise`` with ``a_i^2 sigma_i^2 + s_i^2 = 1``
costs ``KL = -ln s_i`` nats and leaves ``sigma_i^2 s_i^2`` error after the MMSE decoder, exactly the
Gaussian test channel. Distortion is measured with a sampled ``z`` (the test channel whose rate the KL
is); decoding only the mean would not be a code of that rate. A factor-2 slip in the KL (the missing
1/2) moves every reached rate by 2x and the gap by several dB.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from targetkl.bottlenecks.gaussian import GaussianBottleneck
from targetkl.config import ConfigError, RateConfig
from targetkl.control import CONTROLLERS, build_controller
from targetkl.rate import bits_to_nats, nats_to_bits

DEFAULT_VARIANCES = tuple(4.0 * 0.5 ** i for i in range(8))

# Each controller brings its settings for this source (``KLController.sanity_settings``): distortion is
# O(1) per vector and rates are a few nats, so the squared (per relative error) and absolute losses need
# far larger weights than on audio to sit within 1% of the target.


def reverse_water_filling(variances: list[float] | tuple[float, ...], rate_bits: float) -> tuple[float, float]:
    """``(D, theta)``: the smallest summed squared error of a code spending ``rate_bits`` bits per vector
    on independent Gaussian components with these variances, and the water level that achieves it."""
    variances = np.asarray(variances, dtype=np.float64)
    if rate_bits <= 0:
        return float(variances.sum()), float(variances.max())

    def bits(theta: float) -> float:
        return float(np.sum(np.maximum(0.0, 0.5 * np.log2(variances / theta))))

    low, high = 1e-300, float(variances.max())
    for _ in range(400):
        middle = math.sqrt(low * high)
        if bits(middle) > rate_bits:
            low = middle
        else:
            high = middle
    theta = math.sqrt(low * high)
    return float(np.sum(np.minimum(theta, variances))), theta


class LinearGaussianVAE(nn.Module):
    """``(B, n) -> (B, n)``: linear encoder to mean and raw scale, Gaussian bottleneck, linear decoder."""

    def __init__(self, dim: int, rate: RateConfig, target_nats: float):
        super().__init__()
        self.encoder = nn.Linear(dim, 2 * dim)
        self.bottleneck = GaussianBottleneck(dim, build_controller(rate, target_nats))
        self.decoder = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, sample: bool = True):
        self.bottleneck.train(sample)
        encoded = self.bottleneck(self.encoder(x)[:, :, None])
        return self.decoder(encoded.z[:, :, 0]), encoded


@dataclasses.dataclass
class SanityConfig:
    variances: tuple[float, ...] = DEFAULT_VARIANCES
    steps: int = 3000
    batch_size: int = 512
    lr: float = 1e-2
    eval_samples: int = 200_000
    seed: int = 0


def _source(generator: torch.Generator, variances: torch.Tensor, count: int) -> torch.Tensor:
    return (torch.randn(count, len(variances), generator=generator, dtype=torch.float64) * variances.sqrt()).float()


def train_one(controller: str, target_bits: float, config: SanityConfig) -> dict:
    """Train one linear Gaussian VAE with ``controller`` at ``target_bits`` per vector; measure it."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    variances = torch.tensor(config.variances, dtype=torch.float64)
    rate = RateConfig(controller=controller, scope="batch", edge_frames=0, free_steps=0,
                      warmup_steps=config.steps // 20).with_settings(**CONTROLLERS[controller].sanity_settings)
    model = LinearGaussianVAE(len(variances), rate, bits_to_nats(target_bits))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps)))
    for _ in range(config.steps):
        x = _source(generator, variances, config.batch_size)
        decoded, encoded = model(x)
        loss = (decoded - x).pow(2).sum(dim=1).mean() + encoded.penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        x = _source(generator, variances, config.eval_samples)
        decoded, encoded = model(x)
        reached_bits = nats_to_bits(float(encoded.kl_nats_per_frame.double().mean()))
        distortion = float((decoded - x).double().pow(2).sum(dim=1).mean())
    shannon, _ = reverse_water_filling(config.variances, reached_bits)
    return {"controller": controller, "target_bits": target_bits, "reached_bits": reached_bits,
            "rate_error_percent": 100 * (reached_bits - target_bits) / target_bits,
            "distortion": distortion, "shannon_distortion": shannon,
            "gap_db": 10 * math.log10(distortion / shannon)}


def run_sanity(controllers: list[str], rates_bits: list[float], config: SanityConfig | None = None,
               progress: bool = True) -> list[dict]:
    """One row per controller and target rate (bits per vector)."""
    config = config or SanityConfig()
    unknown = [c for c in controllers if c not in CONTROLLERS]
    if unknown:
        raise ConfigError(f"--controllers: unknown {', '.join(unknown)}; choose from {', '.join(CONTROLLERS)}")
    jobs = [(c, r) for c in controllers for r in rates_bits]
    return [train_one(c, r, config) for c, r in tqdm(jobs, desc="sanity", disable=not progress)]


def format_table(rows: list[dict]) -> str:
    lines = [f"{'controller':<10} {'target':>7} {'reached':>8} {'error':>7} {'distortion':>11} {'D(R)':>9} {'gap':>8}",
             f"{'':<10} {'bits':>7} {'bits':>8} {'%':>7} {'':>11} {'':>9} {'dB':>8}"]
    for row in rows:
        lines.append(f"{row['controller']:<10} {row['target_bits']:>7.3f} {row['reached_bits']:>8.3f} "
                     f"{row['rate_error_percent']:>+7.2f} {row['distortion']:>11.5f} {row['shannon_distortion']:>9.5f} "
                     f"{row['gap_db']:>8.3f}")
    return "\n".join(lines)
