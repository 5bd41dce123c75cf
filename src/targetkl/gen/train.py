"""Train the text-conditioned latent generator on pre-encoded latents (``targetkl gen-train``).

Layout of a generator folder::

    GEN/gen_config.json                    GenConfig, the latents folder and the VAE it decodes with
    GEN/checkpoints/step-N/model.safetensors, ema.safetensors, state.pt   (atomic, as for codecs)
    GEN/metrics.jsonl, GEN/tensorboard/    training loss; held-out validation loss

Batches are a pure function of ``(seed, step)``, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from targetkl.config import ConfigError, apply_section, parse_assignments
from targetkl.gen.dataset import LatentSet, load_latent_set
from targetkl.gen.flow import flow_matching_loss, validation_loss
from targetkl.gen.model import LatentDiT
from targetkl.gen.conditioning import Conditioning, for_generation, for_training, task_kind
from targetkl.gen.tokens import tokenizer
from targetkl.checkpoints import (CheckpointError, checkpoint_step, latest_checkpoint, load_module)
from targetkl.train.logger import MetricLogger
from targetkl.train.state import TrainingState, update_ema, write_settings
from targetkl.inference import choose_device
from targetkl.train.trainer import step_seed

CONFIG_FILE = "gen_config.json"


@dataclass
class GenConfig:
    """The generator and its training. ``task``: ``sound`` (text-to-sound) or ``tts`` (text-to-speech, text as
    ``tokens``: ``phonemes`` or ``chars``); see :mod:`targetkl.gen.conditioning`. ``frames`` 0 means the
    training clips' median length (``sound``; ``tts`` trains on whole utterances)."""

    preset: str = "tiny"
    task: str = "sound"
    tokens: str = "phonemes"
    width: int = 128
    depth: int = 4
    heads: int = 4
    frames: int = 0
    steps: int = 1500
    batch_size: int = 16
    lr: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    cond_drop: float = 0.1
    sample_posterior: bool = True
    text_encoder: str = "minilm"
    seed: int = 0
    log_every: int = 50
    validate_every: int = 250
    checkpoint_every: int = 500
    device: str = "auto"


GEN_PRESETS: dict[str, dict] = {
    "tiny": {},
    "base": {"width": 512, "depth": 12, "heads": 8, "steps": 200000, "batch_size": 64, "lr": 1e-4,
             "warmup_steps": 2000, "ema_decay": 0.9999, "validate_every": 5000, "checkpoint_every": 5000},
}


def gen_config(preset: str = "tiny", assignments: list[str] | None = None, **flags) -> GenConfig:
    """Preset, then ``--set gen.KEY=VALUE`` assignments (the section ``gen`` may be left out: ``KEY=VALUE``) read as
    the codec's config reads its sections (:func:`targetkl.config.apply_section`), then flags that are not
    ``None``; checked."""
    if preset not in GEN_PRESETS:
        raise ConfigError(f"unknown generator preset {preset!r}; choose one of {', '.join(GEN_PRESETS)}")
    config = dataclasses.replace(GenConfig(), preset=preset, **GEN_PRESETS[preset])
    dotted = [item if item.startswith("gen.") else f"gen.{item}" for item in assignments or []]
    apply_section(config, parse_assignments(dotted).get("gen", {}), "gen", "--set")
    apply_section(config, {k: v for k, v in flags.items() if v is not None}, "gen", "command line")
    if min(config.width, config.depth, config.heads) < 1 or config.frames < 0:
        raise ConfigError(f"width={config.width}, depth={config.depth}, heads={config.heads}: each must be >= 1 "
                          f"(and frames={config.frames} >= 0)")
    if config.width % config.heads:
        raise ConfigError(f"width={config.width} must be a multiple of heads={config.heads}")
    if config.steps < 0 or config.batch_size < 1 or not 0 < config.lr < math.inf:
        raise ConfigError("steps must be >= 0, batch_size >= 1 and lr a positive number")
    task_kind(config.task)
    tokenizer(config.tokens)
    if not 0 <= config.cond_drop < 1 or not 0 <= config.ema_decay < 1:
        raise ConfigError(f"cond_drop={config.cond_drop}, ema_decay={config.ema_decay}: each must be in [0, 1)")
    return config


def latent_statistics(latents: LatentSet, indices: list[int],
                      sample_posterior: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``(C,)`` of the training latents (posterior samples: the variance of the
    means plus the mean posterior variance)."""
    means = torch.cat([latents.means[i] for i in indices], dim=-1).double()
    mean = means.mean(dim=-1)
    variance = ((means - mean[:, None]) ** 2).mean(dim=-1)
    if sample_posterior:
        variance = variance + torch.cat([latents.stds[i] for i in indices], dim=-1).double().pow(2).mean(dim=-1)
    return mean.float(), variance.sqrt().clamp_min(1e-3).float()


class GenTrainer:
    def __init__(self, config: GenConfig, latents_dir: str | Path, out: str | Path, progress: bool = True):
        self.config, self.out, self.progress = config, Path(out), progress
        self.latents = load_latent_set(latents_dir)
        self.train_indices = self.latents.indices("train")
        self.held_out_indices = self.latents.indices("held_out")
        if not self.train_indices:
            raise ConfigError(f"{latents_dir}: no training clips in these latents; pre-encode a larger folder")
        self.device = choose_device(config.device)
        self.conditioning: Conditioning = for_training(config, self.latents, self.train_indices)
        self.frames = self.conditioning.describe()["frames"]
        torch.manual_seed(config.seed)
        self.model = LatentDiT(self.latents.latent_dim, width=config.width, depth=config.depth, heads=config.heads,
                               **self.conditioning.model_dims())
        mean, std = latent_statistics(self.latents, self.train_indices, config.sample_posterior)
        self.model.latent_mean.copy_(mean)
        self.model.latent_std.copy_(std)
        self.model.to(self.device)
        self.ema = copy.deepcopy(self.model).eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.state = TrainingState({"model": self.model, "ema": self.ema}, {"optimizer": self.optimizer})
        self.step = 0

    def learning_rate(self, step: int) -> float:
        warmup = self.config.warmup_steps
        return self.config.lr * min(1.0, (step + 1) / warmup) if warmup else self.config.lr

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(x0 (B, C, T) standardized, text, drop (B,), mask (B, T) or None)`` for ``step``."""
        rng = np.random.default_rng([self.config.seed, step, 0x6E])
        indices = [self.train_indices[i] for i in rng.integers(0, len(self.train_indices), self.config.batch_size)]
        batch = self.conditioning.batch(indices, rng, self.config.sample_posterior)
        drop = torch.from_numpy(rng.random(len(indices)) < self.config.cond_drop) | ~batch.conditioned
        x0 = self.model.standardize(batch.latents.to(self.device))
        mask = None if batch.mask is None else batch.mask.to(self.device)
        return x0, batch.text.to(self.device), drop.to(self.device), mask

    def train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        x0, text, drop, mask = self.batch(self.step)
        generator = torch.Generator(device=self.device).manual_seed(step_seed(self.config.seed, self.step))
        self.model.train()
        loss = flow_matching_loss(self.model, x0, text, drop, generator, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, self.config.ema_decay)
        self.step += 1
        return float(loss.detach())

    def held_out_loss(self) -> float | None:
        """Validation loss of the EMA model on held-out latents (fixed windows, noise and times)."""
        indices = self.held_out_indices or self.train_indices
        batch = self.conditioning.batch(indices, np.random.default_rng([self.config.seed, 0x76]),
                                        self.config.sample_posterior)
        return validation_loss(self.ema, self.ema.standardize(batch.latents.to(self.device)),
                               batch.text.to(self.device),
                               mask=None if batch.mask is None else batch.mask.to(self.device))

    def save(self) -> Path:
        return self.state.save(self.out, self.step)

    def resume(self) -> bool:
        state = self.state.resume(self.out)
        if state is not None:
            self.step = int(state["step"])
        return state is not None

    def _write_config(self) -> None:
        description = {"config": dataclasses.asdict(self.config), **self.conditioning.describe(),
                       "latents": str(self.latents.folder.resolve()), "latents_info": self.latents.info}
        keys = ("width", "depth", "heads", "text_encoder", "seed", "sample_posterior", "task", "tokens")
        write_settings(self.out / CONFIG_FILE, description,
                       lambda saved: ({k: saved["config"].get(k, getattr(GenConfig, k)) for k in keys},
                                      saved["latents_info"]),
                       "generator settings or latents")

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self.resume()
        logger = MetricLogger(self.out)
        logger.truncate_after(self.step)
        total = self.config.steps
        losses: list[float] = []
        with tqdm(total=total, initial=self.step, desc="gen-train", disable=not self.progress,
                  dynamic_ncols=True) as bar:
            while self.step < total:
                loss = self.train_step()
                if not math.isfinite(loss):
                    raise CheckpointError(f"{self.out}: the generator's loss became {loss} at step {self.step}; "
                                          "lower --set lr=... and rerun (it resumes from the last checkpoint)")
                losses.append(loss)
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == total:
                    logger.log(self.step, {"loss": float(np.mean(losses)), "lr": self.learning_rate(self.step - 1)})
                    bar.set_postfix(loss=f"{np.mean(losses):.3f}")
                    losses = []
                if self.step % self.config.validate_every == 0 or self.step == total:
                    logger.log(self.step, {"loss": self.held_out_loss()}, split="held_out")
                if self.step % self.config.checkpoint_every == 0 or self.step == total:
                    self.save()
        if latest_checkpoint(self.out) is None:
            self.save()
        return {"step": self.step, "val_loss": self.held_out_loss(), "frames": self.frames, "task": self.config.task}


@dataclass
class LoadedGenerator:
    folder: Path
    description: dict
    model: LatentDiT
    step: int

    @property
    def config(self) -> dict:
        return self.description["config"]

    @property
    def conditioning(self) -> Conditioning:
        return for_generation(self.description)


def load_generator(folder: str | Path, device: str | torch.device = "cpu") -> LoadedGenerator:
    """The generator's EMA weights and description (``gen_config.json``)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; {folder} is not a generator (train one with `targetkl gen-train`)")
    description = json.loads(path.read_text())
    checkpoint = latest_checkpoint(folder)
    if checkpoint is None:
        raise CheckpointError(f"{folder}: no checkpoint yet; run `targetkl gen-train --out {folder}` first")
    config = description["config"]
    model = LatentDiT(int(description["latents_info"]["latent_dim"]), width=config["width"], depth=config["depth"],
                      heads=config["heads"], **for_generation(description).model_dims())
    load_module(model, checkpoint / "ema.safetensors")
    return LoadedGenerator(folder, description, model.to(device).eval(), checkpoint_step(checkpoint))
