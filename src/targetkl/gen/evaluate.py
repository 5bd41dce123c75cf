"""How well a generator's audio matches real audio and its prompt, and how predictable its latents are.

- ``frechet_distance``: between Gaussians fitted to judge embeddings of real and generated audio.
- ``kad``: kernel audio distance (unbiased MMD^2, Gaussian kernel, median bandwidth, x100) on the same
  embeddings.
- ``text_match``: the fraction of generated clips the judge assigns to the prompt's class.
- The same two numbers for random latents (Gaussian noise with the latents' per-channel mean and std)
  decoded by the same VAE: the floor a generator has to beat.
- ``decoder_sensitivity``: mel distance between ``decode(z)`` and ``decode(z + a * std_c * e)`` for
  held-out posterior means ``z``: how much an error of the generator, relative to the latent's scale,
  costs in audio.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy import linalg

from targetkl.eval.metrics import mel_distance
from targetkl.eval.sweep import SweepError
from targetkl.gen.classifier import Judge
from targetkl.gen.dataset import LatentSet
from targetkl.gen.flow import sample
from targetkl.gen.sample import decode_latents
from targetkl.gen.train import LoadedGenerator
from targetkl.models.codec import Codec

SENSITIVITY_LEVELS = (0.1, 0.3, 1.0)

AudioEmbedder = Callable[[list[np.ndarray]], np.ndarray]
"""Audio clips ``(samples,)`` at the VAE's sample rate to embeddings ``(N, D)``."""

EMBEDDERS: dict[str, Callable[[Judge], AudioEmbedder]] = {"judge": lambda judge: (lambda clips: judge.embed(clips)[0])}


def register_audio_embedder(name: str, factory: Callable[[Judge], AudioEmbedder]) -> None:
    """Make ``name`` usable as ``select --embedding NAME`` for the Frechet distance (e.g. a CLAP or VGGish
    model the user has on disk; ``factory`` gets the corpus judge and may ignore it)."""
    EMBEDDERS[name] = factory


def audio_embedder_factory(name: str) -> Callable[[Judge], AudioEmbedder]:
    """The factory registered as ``name``; an unknown name is a one-line user error naming the choices."""
    if name not in EMBEDDERS:
        raise SweepError(f"--embedding {name}: unknown; choose {', '.join(EMBEDDERS)} or register one with "
                         "targetkl.gen.evaluate.register_audio_embedder")
    return EMBEDDERS[name]


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """``|m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)`` for embeddings ``(N, D)`` and ``(M, D)``, N, M >= 2."""
    if len(real) < 2 or len(generated) < 2:
        raise ValueError("the Frechet distance needs at least two embeddings on each side")
    mean_a, mean_b = real.mean(axis=0), generated.mean(axis=0)
    cov_a = np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1])
    cov_b = np.cov(generated, rowvar=False) + 1e-6 * np.eye(real.shape[1])
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


KAD_SCALE = 100.0  # KAD is reported times 100, as the KAD toolkit (kadtk) does


def median_pairwise_distance(embeddings: np.ndarray) -> float:
    """Median Euclidean distance over the distinct pairs of ``(N, D)`` embeddings, N >= 2."""
    points = np.asarray(embeddings, dtype=np.float64)
    squared = np.sum((points[:, None, :] - points[None, :, :]) ** 2, axis=-1)
    return float(np.median(np.sqrt(squared[np.triu_indices(len(points), k=1)])))


def kernel_audio_distance(real: np.ndarray, generated: np.ndarray, bandwidth: float | None = None) -> float:
    """Kernel audio distance (Chung et al., 2025): the unbiased estimate of the squared maximum mean
    discrepancy between ``(N, D)`` real and ``(M, D)`` generated embeddings (N, M >= 2), times ``KAD_SCALE``.

    Kernel ``k(a, b) = exp(-|a - b|^2 / (2 h^2))`` with ``h`` the median pairwise distance of the real
    embeddings unless ``bandwidth`` is given. Unbiased: the within-set means leave out the diagonal,
    ``sum_{i != j} k(x_i, x_j) / (N (N - 1))``, so the value can fall slightly below zero for two samples
    of one distribution. Distribution-free, unlike the Frechet distance's Gaussian fit.
    """
    x, y = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the kernel audio distance needs at least two embeddings on each side")
    h = bandwidth if bandwidth is not None else median_pairwise_distance(x)
    gamma = 1.0 / (2.0 * max(h, 1e-12) ** 2)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-gamma * np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1))

    n, m = len(x), len(y)
    within_x = (kernel(x, x).sum() - n) / (n * (n - 1))  # the diagonal is exp(0) = 1 for every point
    within_y = (kernel(y, y).sum() - m) / (m * (m - 1))
    return float(KAD_SCALE * (within_x + within_y - 2 * kernel(x, y).mean()))


def text_match(judge: Judge, audio: list[np.ndarray], classes: list[str]) -> float:
    """Fraction of clips whose judged class is the class of their prompt."""
    _, predicted = judge.embed(audio)
    return float(np.mean([judge.classes[p] == c for p, c in zip(predicted, classes)]))


@torch.no_grad()
def decoder_sensitivity(decoder: Codec, latents: LatentSet, indices: list[int], levels=SENSITIVITY_LEVELS,
                        seed: int = 0) -> dict[str, float]:
    """Mean mel distance between decodes of clean and perturbed held-out means, per noise level."""
    means = [latents.means[i] for i in indices]
    scale = torch.cat(means, dim=-1).std(dim=-1).clamp_min(1e-6)
    generator = torch.Generator().manual_seed(seed)
    result = {}
    clean = [decode_latents(decoder, mean[None])[0] for mean in means]
    for level in levels:
        distances = []
        for mean, clean_audio in zip(means, clean):
            noise = torch.randn(mean.shape, generator=generator) * scale[:, None] * level
            noisy = decode_latents(decoder, (mean + noise)[None])[0]
            distances.append(mel_distance(clean_audio, noisy, decoder.sample_rate))
        result[f"{level:g}"] = float(np.mean(distances))
    return result


@torch.no_grad()
def random_latents(generator: LoadedGenerator, count: int, frames: int, seed: int) -> torch.Tensor:
    """Gaussian latents with the per-channel mean and std the generator was trained with."""
    noise = torch.randn((count, generator.model.latent_dim, frames), generator=torch.Generator().manual_seed(seed))
    return generator.model.unstandardize(noise.to(next(generator.model.parameters()).device))


def evaluate_generator(generator: LoadedGenerator, decoder: Codec, judge: Judge, prompts: list[str],
                       prompt_classes: list[str], text_vectors: torch.Tensor, real_embeddings: np.ndarray,
                       embed: AudioEmbedder, steps: int = 32, cfg: float = 3.0,
                       seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    """Generate one clip per prompt (``text_vectors`` ``(P, text_dim)``, batch seeds from ``seed``), and
    score it and the random-latent floor; the Frechet distance compares ``embed`` of them with
    ``real_embeddings`` (the same embedder on real audio, computed once per sweep).
    Returns ``(metrics, generated audio)``."""
    frames = int(generator.description["frames"])
    generated: list[np.ndarray] = []
    for start in range(0, len(prompts), 32):
        latents = sample(generator.model, text_vectors[start:start + 32], frames, steps, cfg, seed + start)
        generated += decode_latents(decoder, latents)
    noise_audio = decode_latents(decoder, random_latents(generator, len(prompts), frames, seed + 7))
    generated_embeddings, noise_embeddings = embed(generated), embed(noise_audio)
    metrics = {"text_match": text_match(judge, generated, prompt_classes),
               "text_match_random_latents": text_match(judge, noise_audio, prompt_classes),
               "frechet_distance": frechet_distance(real_embeddings, generated_embeddings),
               "frechet_distance_random_latents": frechet_distance(real_embeddings, noise_embeddings),
               "kad": kernel_audio_distance(real_embeddings, generated_embeddings),
               "kad_random_latents": kernel_audio_distance(real_embeddings, noise_embeddings),
               "generated_clips": len(generated)}
    return metrics, generated


def prompt_rows(latents: LatentSet, indices: list[int]) -> tuple[list[str], list[str], list[int]]:
    """Prompts (captions), their classes and latent indices for the captioned clips among ``indices``."""
    rows = [(latents.captions[i], latents.labels[i] or latents.captions[i], i) for i in indices if latents.captions[i]]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

