"""The offline judge of generated audio: a small log-mel CNN trained on the corpus's own labels.

No pretrained audio model can be downloaded here, so the project trains one on the corpus it is
given: classes are the ``label`` field of ``captions.jsonl`` (or the caption text itself when there is
no label). It also sees the reconstructions of the training clips by the codecs it will judge (all of
them alike), because a tiny VAE's artifacts alone fool a judge that has heard only clean audio (the
measurement: ``docs/experiments.md``).
Its penultimate layer (``EMBEDDING_DIM`` values) is the embedding for the Frechet distance;
its class decision is the text-match judge. It is only as good as its held-out accuracy, which is
stored with it and shown in the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from targetkl.data import AudioClip, load_folder
from targetkl.data.audio import normalize_loudness
from targetkl.losses import magnitude, mel_filterbank
from targetkl.fileio import atomic_path, write_text_atomic

EMBEDDING_DIM = 32
N_FFT, N_MELS = 512, 64
LOUDNESS_DBFS = -20.0


def class_of(clip: AudioClip) -> str | None:
    return clip.label or clip.caption


class AudioClassifier(nn.Module):
    """``(B, samples)`` audio -> ``(embedding (B, EMBEDDING_DIM), logits (B, classes))``."""

    def __init__(self, sample_rate: int, classes: int):
        super().__init__()
        self.register_buffer("filters", mel_filterbank(sample_rate, N_FFT, N_MELS), persistent=False)
        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.MaxPool2d(2))
        self.features = nn.Sequential(nn.BatchNorm2d(1), block(1, 16), block(16, 32), block(32, 64))
        self.embedding = nn.Sequential(nn.Linear(128, EMBEDDING_DIM), nn.ReLU())
        self.head = nn.Linear(EMBEDDING_DIM, classes)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_mel = torch.matmul(self.filters, magnitude(audio, N_FFT)).clamp_min(1e-5).log10()
        h = self.features(log_mel[:, None])
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        embedding = self.embedding(pooled)
        return embedding, self.head(embedding)


@dataclass
class Judge:
    """A trained classifier with its class names, input length and held-out accuracy."""

    model: AudioClassifier
    classes: list[str]
    sample_rate: int
    samples: int
    accuracy: float
    trained_on: list[str]

    def prepare(self, clips: list[np.ndarray]) -> torch.Tensor:
        """Loudness-normalize and cut or zero-pad every clip (``(channels, samples)`` ones: their mix) to the judge's
        length: ``(B, samples)``."""
        batch = np.zeros((len(clips), self.samples), dtype=np.float32)
        for row, audio in enumerate(clips):
            audio = np.asarray(audio, dtype=np.float32)
            audio = audio.mean(axis=0) if audio.ndim == 2 else audio
            audio = normalize_loudness(audio[: self.samples], LOUDNESS_DBFS)
            batch[row, : len(audio)] = audio
        return torch.from_numpy(batch)

    @torch.no_grad()
    def embed(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings (N, EMBEDDING_DIM), predicted class indices (N,))``."""
        self.model.eval()
        embeddings, predictions = [], []
        for start in range(0, len(clips), 64):
            embedding, logits = self.model(self.prepare(clips[start:start + 64]))
            embeddings.append(embedding.numpy())
            predictions.append(logits.argmax(dim=1).numpy())
        if not embeddings:
            return np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int64)
        return np.concatenate(embeddings), np.concatenate(predictions)

    def class_index(self, name: str) -> int:
        return self.classes.index(name)


def _augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random circular shift and white noise at 15-40 dB SNR: robustness to codec artifacts."""
    out = np.empty_like(batch)
    for row, audio in enumerate(batch):
        audio = np.roll(audio, int(rng.integers(-len(audio) // 8, len(audio) // 8 + 1)))
        rms = float(np.sqrt(np.mean(audio ** 2))) + 1e-8
        out[row] = audio + rng.standard_normal(len(audio)).astype(np.float32) * rms * 10 ** (-rng.uniform(15, 40) / 20)
    return out


def train_judge(data: str | Path, out: str | Path, sample_rate: int, valid_percent: float = 10.0,
                steps: int = 400, batch_size: int = 32, seed: int = 0,
                decoded: list[tuple[np.ndarray, str]] | None = None, trained_on: list[str] | None = None,
                progress: bool = True) -> Judge:
    """Train on the training split of ``data`` (plus ``decoded``: codec reconstructions of training clips
    with their classes, so that codec artifacts alone do not change the judgement), measure accuracy on
    the held-out real clips, save to ``out`` with ``trained_on`` (names of the codecs whose output it saw).
    """
    def labelled(split: str) -> list[AudioClip]:
        return [c for c in load_folder(data, sample_rate, split, valid_percent, progress=False).clips if class_of(c)]

    train, held_out = labelled("train"), labelled("held_out")
    classes = sorted({class_of(c) for c in train})
    if len(classes) < 2:
        raise ValueError(f"{data}: the judge needs captions or labels of at least two kinds; add captions.jsonl")
    samples = int(np.median([len(c.audio) for c in train]))
    torch.manual_seed(seed)
    judge = Judge(AudioClassifier(sample_rate, len(classes)), classes, sample_rate, samples, float("nan"),
                  list(trained_on or []))
    examples = [(c.audio, class_of(c)) for c in train] + [(a, c) for a, c in decoded or [] if c in classes]
    features = judge.prepare([audio for audio, _ in examples]).numpy()
    targets = torch.tensor([classes.index(name) for _, name in examples])
    optimizer = torch.optim.Adam(judge.model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    judge.model.train()
    for _ in tqdm(range(steps), desc="training the judge", disable=not progress, leave=False):
        indices = rng.integers(0, len(examples), batch_size)
        _, logits = judge.model(torch.from_numpy(_augment(features[indices], rng)))
        loss = nn.functional.cross_entropy(logits, targets[indices])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    known = [c for c in held_out if class_of(c) in classes]
    if known:
        _, predicted = judge.embed([c.audio for c in known])
        judge.accuracy = float(np.mean([classes[p] == class_of(c) for p, c in zip(predicted, known)]))
    save_judge(judge, out)
    return judge


def save_judge(judge: Judge, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in judge.model.state_dict().items()}
    with atomic_path(out / "classifier.safetensors") as temporary:
        save_file(tensors, str(temporary))
    write_text_atomic(out / "classifier.json", json.dumps({"classes": judge.classes, "sample_rate": judge.sample_rate,
                                                          "samples": judge.samples, "accuracy": judge.accuracy,
                                                          "trained_on": judge.trained_on}, indent=2) + "\n")


def load_judge(folder: str | Path) -> Judge | None:
    """The judge saved in ``folder``, or ``None`` when there is none (yet)."""
    folder = Path(folder)
    if not (folder / "classifier.json").is_file() or not (folder / "classifier.safetensors").is_file():
        return None
    meta = json.loads((folder / "classifier.json").read_text())
    model = AudioClassifier(meta["sample_rate"], len(meta["classes"]))
    model.load_state_dict(load_file(str(folder / "classifier.safetensors")))
    return Judge(model.eval(), meta["classes"], meta["sample_rate"], meta["samples"], meta["accuracy"],
                 meta.get("trained_on", []))
