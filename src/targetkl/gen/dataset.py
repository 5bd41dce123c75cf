"""Pre-encoded latents (``targetkl pre-encode``): the generator trains on these, never on audio.

Layout of a latents folder::

    LATENTS/latents.safetensors   mean/<i> and std/<i>: (latent_dim, frames_i) float32 per clip
    LATENTS/manifest.jsonl        one line per clip: index, path, caption, label, split, frames
    LATENTS/info.json             the run (path and fingerprint), sample rate, frame rate, latent width,
                                  target and measured held-out rate (kbps) of these very latents
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from targetkl.errors import UserError
from targetkl import rate
from targetkl.data import load_folder
from targetkl.inference import DEFAULT_BATCH_SIZE, CodecRunner, choose_device
from targetkl.models.codec import model_fingerprint
from targetkl.runs import load_run
from targetkl.fileio import atomic_path, write_text_atomic

LATENTS_FILE, MANIFEST_FILE, INFO_FILE = "latents.safetensors", "manifest.jsonl", "info.json"


class LatentSetError(UserError, ValueError):
    """A latents folder that is missing or damaged; the message says how to rebuild it."""


@dataclass
class LatentSet:
    """Per-clip posterior means and standard deviations, ``(latent_dim, frames)`` each, with captions."""

    folder: Path
    info: dict
    means: list[torch.Tensor]
    stds: list[torch.Tensor]
    captions: list[str | None]
    labels: list[str | None]
    splits: list[str]
    paths: list[str]

    def indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    @property
    def latent_dim(self) -> int:
        return int(self.info["latent_dim"])


@torch.no_grad()
def pre_encode(run_dir: str | Path, data: str | Path, out: str | Path, progress: bool = True,
               device: str | torch.device | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Encode every clip of ``data`` (both splits) with the run's encoder in eval mode; returns ``info``.

    Audio is read from disk as the run trained on it (sample rate, loudness), ``batch_size`` clips at a
    time, long clips in chunks, on ``device`` (auto: CUDA when present). The held-out rate of the stored
    latents is measured from their KL, ``frame_rate * mean_t(KL_t) / ln 2``.
    """
    loaded = load_run(run_dir, choose_device(str(device) if device is not None else None))
    model, config = loaded.model, loaded.config
    runner = CodecRunner(model, batch_size=batch_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors, lines = {}, []
    held_out_bits, held_out_frames = 0.0, 0
    for split in ("train", "held_out"):
        audio_set = load_folder(data, config.model.sample_rate, split, config.data.valid_percent,
                                config.data.loudness_dbfs, progress=False, channels=config.model.audio_channels)
        bar = tqdm(total=len(audio_set), desc=f"pre-encoding {split}", disable=not progress, leave=False)
        for first in range(0, len(audio_set), batch_size):
            clips = audio_set.clips[first:first + batch_size]
            for clip, encoded in zip(clips, runner.encode([clip.audio for clip in clips])):
                index = len(lines)
                tensors[f"mean/{index}"] = encoded.z.contiguous()
                std = encoded.std if encoded.std is not None else torch.zeros_like(encoded.z)
                tensors[f"std/{index}"] = std.contiguous()
                if split == "held_out":
                    held_out_bits += float(encoded.bits_per_frame.sum())
                    held_out_frames += encoded.frames
                lines.append(json.dumps({"index": index, "path": clip.path, "caption": clip.caption,
                                         "label": clip.label, "split": split, "frames": encoded.frames}))
            bar.update(len(clips))
        bar.close()
    bits_per_frame = held_out_bits / max(held_out_frames, 1)
    measured = rate.bits_per_frame_to_kbps(bits_per_frame, model.frame_rate) if held_out_frames else None
    controlled = model.bottleneck.rate_controller is not None
    info = {"run": str(Path(run_dir).resolve()), "fingerprint": model_fingerprint(model),
            "data": str(Path(data).resolve()),
            "bottleneck": config.model.bottleneck, "sample_rate": model.sample_rate, "hop": model.hop,
            "frame_rate": model.frame_rate, "latent_dim": model.latent_dim,
            "target_kbps": model.bottleneck.target_kbps(config.rate.target_kbps, measured) if controlled else None,
            "rate_kbps": measured,
            "clips": len(lines), "captioned": sum(1 for line in lines if json.loads(line)["caption"])}
    with atomic_path(out / LATENTS_FILE) as temporary:
        save_file(tensors, str(temporary))
    write_text_atomic(out / MANIFEST_FILE, "\n".join(lines) + "\n")
    write_text_atomic(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    return info


def load_latent_set(folder: str | Path) -> LatentSet:
    folder = Path(folder)
    fix = f"make it with `targetkl pre-encode RUN --data DIR --out {folder}`"
    for name in (LATENTS_FILE, MANIFEST_FILE, INFO_FILE):
        if not (folder / name).is_file():
            raise LatentSetError(f"{folder / name}: missing; {fix}")
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        rows = [json.loads(line) for line in (folder / MANIFEST_FILE).read_text().splitlines() if line.strip()]
        tensors = load_file(str(folder / LATENTS_FILE))
        means = [tensors[f"mean/{row['index']}"] for row in rows]
        stds = [tensors[f"std/{row['index']}"] for row in rows]
    except (ValueError, KeyError, OSError, RuntimeError) as error:
        raise LatentSetError(f"{folder}: damaged latents ({str(error)[:120]}); {fix}") from error
    if not rows:
        raise LatentSetError(f"{folder}: holds no clips; {fix}")
    return LatentSet(folder, info, means, stds, [r["caption"] for r in rows], [r.get("label") for r in rows],
                     [r["split"] for r in rows], [r["path"] for r in rows])


def crop_or_pad(latent: torch.Tensor, frames: int, start: int) -> torch.Tensor:
    """``(C, T)`` to ``(C, frames)``: a window from ``start``, or the whole clip followed by zeros."""
    if latent.shape[-1] >= frames:
        return latent[:, start:start + frames]
    return torch.nn.functional.pad(latent, (0, frames - latent.shape[-1]))


def latent_batch(latents: LatentSet, indices: list[int], frames: int, generator: np.random.Generator,
                 sample_posterior: bool = True) -> torch.Tensor:
    """``(len(indices), C, frames)``: random windows of the clips, posterior samples ``mean + std * e``
    (what the decoder saw in training) or the means."""
    batch = []
    for index in indices:
        mean, std = latents.means[index], latents.stds[index]
        start = int(generator.integers(0, max(mean.shape[-1] - frames, 0) + 1))
        window = crop_or_pad(mean, frames, start)
        if sample_posterior:
            noise = torch.from_numpy(generator.standard_normal(window.shape).astype(np.float32))
            window = window + crop_or_pad(std, frames, start) * noise
        batch.append(window)
    return torch.stack(batch)
