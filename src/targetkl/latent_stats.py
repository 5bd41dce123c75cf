"""Per-channel statistics of a codec's latents, and where a run keeps them (``RUN/latent_stats.json``).

A diffusion model is trained on ``(z - mean) / std`` per channel, so a run must carry its latent
statistics. Training measures them at every checkpoint on training clips; ``targetkl.load`` and
``targetkl export`` read them. File contents: ``{"step", "mean": [D], "std": [D], "posterior_std": [D],
"clips", "frames"}``: ``mean``/``std`` of the posterior means over every frame (each frame weighted
equally), ``posterior_std`` the mean posterior std per channel (absent for a deterministic bottleneck).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from targetkl.fileio import read_json_or_none, write_text_atomic
from targetkl.inference import CodecRunner

FILE_NAME = "latent_stats.json"
RUN_CLIPS = 64          # training clips a run's statistics are measured on
RUN_CLIP_SECONDS = 10.0  # each cut to its first 10 s, so long recordings cost what short ones do


@torch.no_grad()
def latent_statistics(model: torch.nn.Module, audios: Sequence[np.ndarray]) -> dict:
    """``audios``: ``(samples,)`` or ``(channels, samples)`` clips at the model's rate and level ->
    ``{"mean": [D], "std": [D], "posterior_std": [D] (Gaussian only), "clips": n, "frames": F}``."""
    encoded = CodecRunner(model).encode(list(audios))
    dim = model.latent_dim
    total, squares = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    sigma, frames = torch.zeros(dim, dtype=torch.float64), 0
    for item in encoded:
        z = item.z.double()
        total += z.sum(dim=-1)
        squares += z.pow(2).sum(dim=-1)
        if item.std is not None:
            sigma += item.std.double().sum(dim=-1)
        frames += z.shape[-1]
    mean = total / max(frames, 1)
    std = (squares / max(frames, 1) - mean.pow(2)).clamp_min(0).sqrt()
    stats = {"mean": mean.tolist(), "std": std.tolist(), "clips": len(encoded), "frames": frames}
    if encoded and encoded[0].std is not None:
        stats["posterior_std"] = (sigma / max(frames, 1)).tolist()
    return stats


def run_statistics(model: torch.nn.Module, train_set, seed: int = 0) -> dict:
    """Statistics on up to :data:`RUN_CLIPS` clips of ``train_set`` (an ``AudioSet``) drawn with ``seed`` (NumPy's
    generator: torch's random state is untouched), each read up to :data:`RUN_CLIP_SECONDS`; a file that cannot
    be read any more is left out."""
    from targetkl.data import DataError

    chosen = sorted(np.random.default_rng([seed, 0x5747]).permutation(len(train_set))[:RUN_CLIPS])
    limit = int(RUN_CLIP_SECONDS * model.sample_rate)
    audios = []
    for index in chosen:
        try:
            audios.append(train_set.read(int(index), 0, min(train_set.length(int(index)), limit)))
        except DataError:
            continue
    return latent_statistics(model, audios)


def write_run_statistics(run_dir: Path, step: int, stats: dict) -> None:
    write_text_atomic(Path(run_dir) / FILE_NAME, json.dumps({"step": step, **stats}) + "\n")


def read_run_statistics(run_dir: Path, step: int) -> dict | None:
    """The statistics measured at ``step``; ``None`` when the file is missing, damaged or from another step."""
    stats = read_json_or_none(Path(run_dir) / FILE_NAME)
    return stats if stats is not None and stats.get("step") == step else None
