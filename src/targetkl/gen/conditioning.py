"""What a generator is conditioned on, one kind per task (``gen.task``), and how its batches are cut.

- ``sound`` (text-to-sound): the caption's sentence embedding (``gen.text_encoder``); training batches are
  random windows of ``frames`` latent frames; a prompt generates ``frames`` frames (or ``--seconds``).
- ``tts`` (text-to-speech): the transcript (the caption) as tokens (``gen.tokens``: ``chars`` or espeak-ng
  ``phonemes``, :mod:`targetkl.gen.tokens`); training batches are whole utterances padded to the longest
  with a mask, since text and audio align only over the whole clip; a prompt's length comes from a
  duration rule fitted on the training clips, ``frames = intercept + per_token * tokens`` (least squares).

Each kind is built for training from the latents (:func:`for_training`) and for generation from the
generator's description (:func:`for_generation`); the trainer, sampler and evaluators ask it, never the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from targetkl.config import ConfigError
from targetkl.gen.dataset import LatentSet, crop_or_pad, latent_batch
from targetkl.gen.text import load_text_encoder
from targetkl.gen.tokens import Vocabulary


@dataclass
class Batch:
    """Latents ``(B, C, T)`` in the VAE's scale, the text (embeddings or token ids), ``conditioned`` ``(B,)``
    (false where the clip has no caption: trained unconditionally) and the real-frame mask ``(B, T)`` or None."""

    latents: torch.Tensor
    text: torch.Tensor
    conditioned: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class Prompts:
    """Text for the model, the frame count to sample, the mask (None when all are equally long) and each
    prompt's own length in frames."""

    text: torch.Tensor
    frames: int
    mask: torch.Tensor | None
    lengths: list[int]


class Conditioning(Protocol):
    def model_dims(self) -> dict:
        """``text_dim`` and ``vocabulary`` of the :class:`~targetkl.gen.model.LatentDiT`."""

    def describe(self) -> dict:
        """What generation needs later, saved in ``gen_config.json`` (includes ``frames`` and ``text_dim``)."""

    def batch(self, indices: list[int], rng: np.random.Generator, sample_posterior: bool) -> Batch: ...

    def prompts(self, texts: list[str], frames: int | None = None) -> Prompts: ...


def _posterior(mean: torch.Tensor, std: torch.Tensor, rng: np.random.Generator, sample: bool) -> torch.Tensor:
    if not sample:
        return mean
    return mean + std * torch.from_numpy(rng.standard_normal(mean.shape).astype(np.float32))


class SoundConditioning:
    """Caption embeddings; fixed-length windows."""

    def __init__(self, text_encoder: str, frames: int, text_dim: int, latents: LatentSet | None = None,
                 table: torch.Tensor | None = None, captioned: torch.Tensor | None = None):
        self.text_encoder, self.frames, self.text_dim = text_encoder, frames, text_dim
        self.latents, self.table, self.captioned = latents, table, captioned

    @classmethod
    def training(cls, config, latents: LatentSet, train_indices: list[int]) -> "SoundConditioning":
        encoder = load_text_encoder(config.text_encoder)
        texts = sorted({c for c in latents.captions if c})
        embedded = dict(zip(texts, encoder.encode(texts))) if texts else {}
        rows = [embedded[c] if c else np.zeros(encoder.dim, np.float32) for c in latents.captions]
        frames = config.frames or int(np.median([latents.means[i].shape[-1] for i in train_indices]))
        return cls(config.text_encoder, frames, encoder.dim, latents, torch.from_numpy(np.stack(rows)),
                   torch.tensor([bool(c) for c in latents.captions]))

    @classmethod
    def generation(cls, description: dict) -> "SoundConditioning":
        return cls(description["config"]["text_encoder"], int(description["frames"]), int(description["text_dim"]))

    def model_dims(self) -> dict:
        return {"text_dim": self.text_dim, "vocabulary": 0}

    def describe(self) -> dict:
        return {"frames": self.frames, "text_dim": self.text_dim}

    def batch(self, indices: list[int], rng: np.random.Generator, sample_posterior: bool) -> Batch:
        latents = latent_batch(self.latents, indices, self.frames, rng, sample_posterior)
        return Batch(latents, self.table[indices], self.captioned[indices], None)

    def prompts(self, texts: list[str], frames: int | None = None) -> Prompts:
        text = torch.from_numpy(load_text_encoder(self.text_encoder).encode(texts))
        frames = frames or self.frames
        return Prompts(text, frames, None, [frames] * len(texts))


class SpeechConditioning:
    """Transcript tokens; whole utterances; a duration rule for generation."""

    def __init__(self, vocabulary: Vocabulary, duration: dict, max_frames: int, latents: LatentSet | None = None):
        self.vocabulary, self.duration, self.max_frames, self.latents = vocabulary, duration, max_frames, latents

    @classmethod
    def training(cls, config, latents: LatentSet, train_indices: list[int]) -> "SpeechConditioning":
        spoken = [i for i in train_indices if latents.captions[i]]
        if len(spoken) < 2:
            raise ConfigError(f"{latents.folder}: gen.task=tts needs transcripts (captions) for at least two training "
                              "clips; pre-encode a speech corpus (`targetkl corpus OUT --kind speech`)")
        vocabulary = Vocabulary.build(config.tokens, [latents.captions[i] for i in spoken])
        tokens = np.array([len(vocabulary.ids(latents.captions[i])) for i in spoken], dtype=np.float64)
        frames = np.array([latents.means[i].shape[-1] for i in spoken], dtype=np.float64)
        design = np.stack([np.ones_like(tokens), tokens], axis=1)
        intercept, per_token = np.linalg.lstsq(design, frames, rcond=None)[0]
        if not per_token > 0:  # every transcript equally long: no slope to fit, frames per token on average
            intercept, per_token = 0.0, float(frames.sum() / tokens.sum())
        residual = frames - (intercept + per_token * tokens)
        duration = {"intercept": float(intercept), "per_token": float(per_token),
                    "rms_error_frames": float(np.sqrt(np.mean(residual ** 2)))}
        return cls(vocabulary, duration, int(frames.max()), latents)

    @classmethod
    def generation(cls, description: dict) -> "SpeechConditioning":
        return cls(Vocabulary(description["tokens"], list(description["symbols"])), description["duration"],
                   int(description["frames"]))

    def model_dims(self) -> dict:
        return {"text_dim": 0, "vocabulary": self.vocabulary.size}

    def describe(self) -> dict:
        return {"frames": self.max_frames, "text_dim": 0, "tokens": self.vocabulary.kind,
                "symbols": self.vocabulary.symbols, "duration": self.duration}

    def frames_for(self, text: str) -> int:
        """The duration rule's frame count for ``text`` (at least one frame)."""
        count = len(self.vocabulary.ids(text))
        return max(1, int(round(self.duration["intercept"] + self.duration["per_token"] * count)))

    def batch(self, indices: list[int], rng: np.random.Generator, sample_posterior: bool) -> Batch:
        lengths = [min(self.latents.means[i].shape[-1], self.max_frames) for i in indices]
        frames = max(lengths)
        latents = torch.stack([crop_or_pad(_posterior(self.latents.means[i], self.latents.stds[i], rng,
                                                      sample_posterior), frames, 0) for i in indices])
        captions = [self.latents.captions[i] or "" for i in indices]
        return Batch(latents, self.vocabulary.batch(captions), torch.tensor([bool(c) for c in captions]),
                     _mask(lengths, frames))

    def prompts(self, texts: list[str], frames: int | None = None) -> Prompts:
        lengths = [frames or self.frames_for(text) for text in texts]
        longest = max(lengths)
        return Prompts(self.vocabulary.batch(texts), longest, _mask(lengths, longest), lengths)


def _mask(lengths: list[int], frames: int) -> torch.Tensor:
    return torch.arange(frames)[None] < torch.tensor(lengths)[:, None]


TASKS: dict[str, type] = {"sound": SoundConditioning, "tts": SpeechConditioning}
TASK_HELP: dict[str, str] = {"sound": "text-to-sound: caption embeddings, fixed-length windows",
                             "tts": "text-to-speech: transcript tokens, whole utterances, a duration rule"}


def register_task(name: str, kind: type, help_text: str) -> None:
    """Make ``gen.task=NAME`` build ``kind`` (``training(config, latents, indices)``, ``generation(description)``)."""
    TASKS[name] = kind
    TASK_HELP[name] = help_text


def task_kind(name: str) -> Callable:
    if name not in TASKS:
        raise ConfigError(f"gen.task={name!r}: unknown; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def for_training(config, latents: LatentSet, train_indices: list[int]) -> Conditioning:
    return task_kind(config.task).training(config, latents, train_indices)


def for_generation(description: dict) -> Conditioning:
    return task_kind(description["config"].get("task", "sound")).generation(description)
