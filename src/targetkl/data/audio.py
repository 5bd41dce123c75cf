"""Load a folder of audio files with optional captions into memory, split it and cut random crops.

Audio arrays are float32, mono, ``(samples,)`` at the model's sample rate, loudness-normalized.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from tqdm import tqdm

log = logging.getLogger("targetkl.data")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SILENCE_RMS = 1e-5
MAX_SECONDS = 600.0


class DataError(ValueError):
    """A data set that cannot be used; the message names the path and the fix."""


@dataclass
class AudioClip:
    path: str
    audio: np.ndarray
    caption: str | None = None
    label: str | None = None


@dataclass
class AudioSet:
    """Clips of one split, plus what was skipped while loading and why."""

    root: Path
    sample_rate: int
    clips: list[AudioClip]
    skipped: dict[str, str] = field(default_factory=dict)
    cropped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clips)

    def summary(self) -> str:
        reasons = Counter(reason.split(":")[0].split(" (")[0] for reason in self.skipped.values())
        detail = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
        text = f"{len(self.clips)} clips loaded from {self.root}"
        if self.cropped:
            text += f"; {len(self.cropped)} longer than the limit, cut to their start"
        return text + (f"; skipped {len(self.skipped)} ({detail})" if self.skipped else "")


def find_audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read any soundfile-supported file, downmix to mono, resample with soxr: ``(samples,)`` float32.

    Raises ``DataError`` with the path and the reason if the file is unreadable, empty or not finite.
    """
    path = Path(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise DataError(f"{path}: unreadable audio ({str(error).splitlines()[0][:120]})") from error
    if data.shape[0] == 0:
        raise DataError(f"{path}: empty: the file holds no samples")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: non-finite: the file holds NaN or Inf samples")
    mono = data.mean(axis=1)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def loudness_gain(audio: np.ndarray, target_dbfs: float) -> float:
    """The gain that brings ``audio`` to ``target_dbfs`` RMS with its peak below 0.99; 1 for silence."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
    if rms < SILENCE_RMS:
        return 1.0
    gain = 10 ** (target_dbfs / 20) / rms
    peak = float(np.max(np.abs(audio))) * gain
    return gain * (0.99 / peak) if peak > 0.99 else gain


def normalize_loudness(audio: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS, then down so the peak stays below 0.99. Silence is left as it is."""
    gain = loudness_gain(audio, target_dbfs)
    return audio if gain == 1.0 else (audio * gain).astype(np.float32)


def read_captions(root: Path) -> tuple[dict[str, dict], list[str]]:
    """Captions keyed by path relative to ``root`` (also by file stem, for AudioCaps-style CSVs).

    Reads ``captions.jsonl`` lines ``{"path", "caption"[, "label"]}`` or any ``*.csv`` with a ``caption``
    column and a ``path``, ``file_name`` or ``youtube_id`` column. Returns ``(captions, problems)``.
    """
    captions: dict[str, dict] = {}
    problems: list[str] = []
    jsonl = root / "captions.jsonl"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not isinstance(row.get("caption"), str):
                    raise ValueError("needs string fields 'path' and 'caption'")
            except ValueError as error:
                problems.append(f"{jsonl}:{number}: bad caption line ({error})")
                continue
            captions[row["path"]] = row
    for table in sorted(root.glob("*.csv")):
        with open(table, newline="", errors="replace") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            key = next((k for k in ("path", "file_name", "youtube_id") if k in fields), None)
            if "caption" not in fields or key is None:
                continue
            for number, row in enumerate(reader, start=2):
                if not row.get(key) or not row.get("caption"):
                    problems.append(f"{table}:{number}: bad caption row (empty {key} or caption)")
                    continue
                captions.setdefault(row[key], {"path": row[key], "caption": row["caption"]})
    return captions, problems


def held_out_score(relative_path: str) -> int:
    """A stable hash in ``[0, 10000)``: a file's split never changes when other files are added."""
    return int(hashlib.sha1(relative_path.encode()).hexdigest()[:8], 16) % 10000


def split_paths(relative_paths: list[str], valid_percent: float) -> tuple[list[str], list[str]]:
    """Deterministic (train, held_out) split by path hash; at least one of each when there are >= 2 files."""
    threshold = valid_percent * 100
    held_out = [p for p in relative_paths if held_out_score(p) < threshold]
    train = [p for p in relative_paths if held_out_score(p) >= threshold]
    if valid_percent > 0 and not held_out and len(train) >= 2:
        first = min(train, key=held_out_score)
        held_out, train = [first], [p for p in train if p != first]
    if not train and len(held_out) >= 2:
        last = max(held_out, key=held_out_score)
        train, held_out = [last], [p for p in held_out if p != last]
    return train, held_out


def load_folder(root: str | Path, sample_rate: int, split: str = "all", valid_percent: float = 10.0,
                loudness_dbfs: float | None = -20.0, progress: bool = True,
                max_seconds: float = MAX_SECONDS) -> AudioSet:
    """Load the ``train``, ``held_out`` or ``all`` split of a folder of audio files.

    Unreadable, empty and non-finite files are skipped with one warning naming the file and the reason;
    files longer than ``max_seconds`` keep their first ``max_seconds`` (one warning each), so one
    multi-hour recording cannot exhaust memory. A summary line counts both. ``DataError`` if nothing is
    usable.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass a folder of audio files (make one with `targetkl corpus`)")
    files = find_audio_files(root)
    if not files:
        raise DataError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found; "
                        "point --data at a folder of audio, e.g. one made by `targetkl corpus`")
    captions, problems = read_captions(root)
    for problem in problems:
        log.warning(problem)
    relative = [f.relative_to(root).as_posix() for f in files]
    train, held_out = split_paths(relative, valid_percent)
    chosen = {"train": train, "held_out": held_out, "all": relative}[split]
    clips, skipped, cropped = [], {}, []
    longest = int(max_seconds * sample_rate)
    for rel in tqdm(chosen, desc=f"loading {split} audio", disable=not progress, leave=False):
        try:
            audio = load_audio(root / rel, sample_rate)
        except DataError as error:
            reason = str(error).split(": ", 1)[1]
            log.warning("skipping %s", error)
            skipped[rel] = reason
            continue
        if len(audio) > longest:
            log.warning("%s: %.0f s long, keeping the first %g s", root / rel, len(audio) / sample_rate, max_seconds)
            audio = audio[:longest]
            cropped.append(rel)
        if loudness_dbfs is not None:
            audio = normalize_loudness(audio, loudness_dbfs)
        meta = captions.get(rel) or captions.get(Path(rel).stem) or {}
        clips.append(AudioClip(rel, audio, meta.get("caption"), meta.get("label")))
    audio_set = AudioSet(root, sample_rate, clips, skipped, cropped)
    if skipped or cropped:
        log.warning(audio_set.summary())
    if not clips:
        raise DataError(f"{root}: none of the {len(chosen)} audio files in the {split} split could be used "
                        f"({len(skipped)} unreadable); check the files")
    return audio_set


def random_crops(audio_set: AudioSet, batch_size: int, segment_samples: int, seed: int, step: int) -> torch.Tensor:
    """A ``(batch, 1, segment_samples)`` batch of random crops, a pure function of ``(seed, step)``.

    Clips shorter than the segment are placed at a random offset in zeros. Because the batch depends
    only on the step, a resumed run sees exactly the batches an uninterrupted run would.
    """
    rng = np.random.default_rng([seed, step, 0x7A])
    batch = np.zeros((batch_size, 1, segment_samples), dtype=np.float32)
    for row, index in enumerate(rng.integers(0, len(audio_set.clips), batch_size)):
        audio = audio_set.clips[index].audio
        if len(audio) >= segment_samples:
            start = int(rng.integers(0, len(audio) - segment_samples + 1))
            batch[row, 0] = audio[start:start + segment_samples]
        else:
            start = int(rng.integers(0, segment_samples - len(audio) + 1))
            batch[row, 0, start:start + len(audio)] = audio
    return torch.from_numpy(batch)
