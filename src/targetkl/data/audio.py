"""Corpora as indexed sources: splits, lazily read clips, windows and random crops.

Nothing here holds a corpus in memory: an :class:`AudioSet` is the index entries of one split, and
every clip, window or crop is read from disk when asked for (wav/flac/aiff seek to the window, other
formats decode what they must; a tar member is read from its byte offset). Audio arrays are float32 at the
model's sample rate (soxr), scaled by the file's stored loudness gain: ``(samples,)`` for a mono model (files
are downmixed), ``(channels, samples)`` for one of several channels (see :func:`fit_channels`). Code that
takes either reads the length as ``audio.shape[-1]``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from targetkl.fileio import atomic_path, output_path
from targetkl.data.index import (AUDIO_EXTENSIONS, DataError, IndexEntry, ensure_index, find_audio_files, open_sound,
                                 read_captions)

log = logging.getLogger("targetkl.data")

SILENCE_RMS = 1e-5
MAX_SECONDS = 600.0
RESAMPLE_MARGIN = 2048
REDRAWS = 8  # a training crop whose file cannot be read is drawn again from another clip this many times

__all__ = ["AUDIO_EXTENSIONS", "AudioClip", "AudioSet", "DataError", "find_audio_files", "load_audio", "load_folder",
           "random_crops", "read_captions", "read_window"]


@dataclass
class AudioClip:
    path: str
    audio: np.ndarray
    caption: str | None = None
    label: str | None = None
    domain: str | None = None


def fit_channels(data: np.ndarray, channels: int) -> np.ndarray:
    """``(frames, file_channels)`` to the model's channels: ``(frames,)``, the mix, when ``channels == 1``; else
    ``(frames, channels)``: a file's first ``channels`` channels, or, when it has fewer (a mono file), its mix in
    every channel."""
    if channels == 1:
        return data.mean(axis=1)
    if data.shape[1] >= channels:
        return data[:, :channels]
    return np.repeat(data.mean(axis=1, keepdims=True), channels, axis=1)


def load_audio(path: str | Path, sample_rate: int, channels: int = 1) -> np.ndarray:
    """Read any soundfile-supported file, fit it to ``channels`` (:func:`fit_channels`), resample with soxr:
    ``(samples,)`` float32 for one channel, ``(channels, samples)`` for more.

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
    fitted = fit_channels(data, channels)
    if file_rate != sample_rate:
        fitted = soxr.resample(fitted, file_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(fitted.T, dtype=np.float32)


def gain_for_level(rms: float, peak: float, target_dbfs: float | None) -> float:
    """The gain that brings audio of this RMS to ``target_dbfs`` with its peak below 0.99; 1 for silence
    (or when ``target_dbfs`` is ``None``)."""
    if target_dbfs is None or rms < SILENCE_RMS:
        return 1.0
    gain = 10 ** (target_dbfs / 20) / rms
    loudest = peak * gain
    return gain * (0.99 / loudest) if loudest > 0.99 else gain


def loudness_gain(audio: np.ndarray, target_dbfs: float) -> float:
    """:func:`gain_for_level` of an array."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return gain_for_level(rms, peak, target_dbfs)


def normalize_loudness(audio: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS, then down so the peak stays below 0.99. Silence is left as it is."""
    gain = loudness_gain(audio, target_dbfs)
    return audio if gain == 1.0 else (audio * gain).astype(np.float32)


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


def _resample(mono: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return mono
    return soxr.resample(mono, rate_in, rate_out, quality="HQ").astype(np.float32)


def _read_native(sound: sf.SoundFile, start: int, frames: int, channels: int = 1) -> np.ndarray:
    """Float32 frames ``[start, start + frames)`` of an open file, ``(frames,)`` or ``(frames, channels)`` (see
    :func:`fit_channels`); decodes from the start where the format cannot seek."""
    try:
        sound.seek(start)
        data = sound.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.SoundFileError):
        sound.seek(0)
        data = sound.read(start + frames, dtype="float32", always_2d=True)[start:]
    if not data.shape[0]:
        return np.zeros((0,) if channels == 1 else (0, channels), dtype=np.float32)
    return fit_channels(data, channels)


def read_window(entry: IndexEntry, start: int, length: int, sample_rate: int, gain: float = 1.0,
                channels: int = 1) -> np.ndarray:
    """Samples ``[start, start + length)`` of ``entry`` at ``sample_rate``, times ``gain``: ``(length,)``
    float32 (``(channels, length)`` for ``channels > 1``), zero-padded past the end of the file.

    At another native rate the window is read with a margin, on the grid where native and model
    samples coincide, resampled with soxr and cut; it equals the same window of the resampled whole
    file up to the resampler's edge effects inside the margin.
    """
    out = np.zeros(length if channels == 1 else (channels, length), dtype=np.float32)
    native = entry.sample_rate
    try:
        with open_sound(entry.file, entry.offset, entry.member_size) as sound:
            if native == sample_rate:
                audio = _read_native(sound, start, min(length, max(entry.frames - start, 0)), channels)
            else:
                period_native = native // math.gcd(native, sample_rate)
                period_model = sample_rate // math.gcd(native, sample_rate)
                first = max(0, (start * native // sample_rate - RESAMPLE_MARGIN) // period_native * period_native)
                last = min(entry.frames, -(-((start + length) * native // sample_rate + RESAMPLE_MARGIN)
                                          // period_native) * period_native)
                resampled = _resample(_read_native(sound, first, max(last - first, 0), channels), native,
                                      sample_rate)
                skip = start - first // period_native * period_model
                audio = resampled[skip:skip + length]
    except (OSError, RuntimeError, sf.SoundFileError) as error:
        raise DataError(f"{entry.file}: unreadable audio while reading a window ({error}); re-index with "
                        "`targetkl index`") from error
    audio = audio[:length].T
    out[..., :audio.shape[-1]] = audio if gain == 1.0 else audio * gain
    return out


@dataclass
class AudioSet:
    """The index entries of one split, read from disk on demand.

    ``clips`` is a sequence of :class:`AudioClip` whose audio is read when an item is taken (at most
    ``max_seconds``; longer files keep their start and are listed in ``cropped``). ``read`` gives any
    window, ``length`` the length of clip ``i`` in samples at ``sample_rate``; audio has ``channels`` channels.
    """

    root: Path
    sample_rate: int
    entries: list[IndexEntry]
    loudness_dbfs: float | None = -20.0
    skipped: dict[str, str] = field(default_factory=dict)
    max_seconds: float = MAX_SECONDS
    channels: int = 1

    def __post_init__(self) -> None:
        self.lengths = np.array([e.length_at(self.sample_rate) for e in self.entries], dtype=np.int64)
        self.gains = np.array([gain_for_level(e.rms, e.peak, self.loudness_dbfs) for e in self.entries])

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def cropped(self) -> list[str]:
        longest = int(self.max_seconds * self.sample_rate)
        return [e.path for e, n in zip(self.entries, self.lengths) if n > longest]

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / self.sample_rate

    @property
    def clips(self) -> "LazyClips":
        return LazyClips(self)

    def length(self, index: int) -> int:
        return int(self.lengths[index])

    def read(self, index: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """``(length,)`` (or ``(channels, length)``) samples of clip ``index`` from ``start`` (default: to the end),
        loudness-normalized."""
        if length is None:
            length = max(self.length(index) - start, 0)
        return read_window(self.entries[index], start, length, self.sample_rate, float(self.gains[index]),
                           self.channels)

    def clip(self, index: int) -> AudioClip:
        entry = self.entries[index]
        length = min(self.length(index), int(self.max_seconds * self.sample_rate))
        return AudioClip(entry.path, self.read(index, 0, length), entry.caption, entry.label, entry.domain)

    def summary(self) -> str:
        reasons = Counter(reason.split(":")[0].split(" (")[0] for reason in self.skipped.values())
        detail = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
        text = f"{len(self.entries)} clips ({self.seconds / 3600:.2f} h) indexed in {self.root}"
        if self.cropped:
            text += (f"; {len(self.cropped)} longer than the limit of {self.max_seconds:g} s, cut to their start "
                     "where whole clips are read (evaluation; training crops reach all of them)")
        return text + (f"; skipped {len(self.skipped)} ({detail})" if self.skipped else "")


class LazyClips(Sequence):
    """``AudioSet.clips``: indexing reads the clip from disk; nothing is kept."""

    def __init__(self, audio_set: AudioSet):
        self.audio_set = audio_set

    def __len__(self) -> int:
        return len(self.audio_set)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.audio_set.clip(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.audio_set.clip(index)


def load_folder(root: str | Path, sample_rate: int, split: str = "all", valid_percent: float = 10.0,
                loudness_dbfs: float | None = -20.0, progress: bool = True,
                max_seconds: float = MAX_SECONDS, workers: int | None = None, channels: int = 1) -> AudioSet:
    """The ``train``, ``held_out`` or ``all`` split of a ``--data`` source (folder, manifest or shards), read as
    ``channels`` channels.

    The split is by a hash of each listed path (usable or not, so a file's split never depends on
    whether its neighbours could be read). Indexes the source first (cached; only new or changed files are probed).
    Unusable files are skipped
    with one warning each naming the file and the reason. ``DataError`` if the split holds nothing usable.
    """
    index = ensure_index(root, workers=workers, progress=progress)
    if not index.entries and not index.skipped:
        raise DataError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found; point --data at a folder "
                        "of audio, a manifest or shards, e.g. a folder made by `targetkl corpus`")
    all_paths = sorted([e.path for e in index.entries] + list(index.skipped))
    if split == "all":
        chosen_paths = all_paths
    else:
        train, held_out = split_paths(all_paths, valid_percent)
        chosen_paths = train if split == "train" else held_out
    chosen = set(chosen_paths)
    entries = [e for e in index.entries if e.path in chosen]
    skipped = {p: index.skipped[p] for p in chosen_paths if p in index.skipped}
    audio_set = AudioSet(Path(str(root)), sample_rate, entries, loudness_dbfs, skipped, max_seconds, channels)
    if skipped or audio_set.cropped:
        log.warning(audio_set.summary())
    if not entries:
        raise DataError(f"{root}: none of the {len(chosen_paths)} audio files in the {split} split could be used "
                        f"({len(skipped)} unreadable); check the files")
    return audio_set


def random_crops(audio_set: AudioSet, batch_size: int, segment_samples: int, seed: int, step: int,
                 rows: range | None = None, failures: list[str] | None = None) -> torch.Tensor:
    """A ``(batch, channels, segment_samples)`` batch of random crops, a pure function of ``(seed, step)``.

    Clips shorter than the segment are placed at a random offset in zeros. Because the batch depends
    only on the step, a resumed run sees exactly the batches an uninterrupted run would. ``rows`` reads
    only those rows of the batch (a process's slice under data parallelism); the others are not read.

    With a ``failures`` list, a file that cannot be read (gone or damaged since it was indexed) is appended to
    it and its crop is drawn again from another clip, ``REDRAWS`` times at most, each draw a pure function of
    ``(seed, step, row, attempt)`` (so a resumed run meets the same replacements); a row whose draws all fail
    stays silent. Without it, the ``DataError`` is raised.
    """
    rng = np.random.default_rng([seed, step, 0x7A])
    rows = range(batch_size) if rows is None else rows
    plan = []
    for row, index in enumerate(rng.integers(0, len(audio_set), batch_size)):
        length = audio_set.length(int(index))
        start = int(rng.integers(0, abs(length - segment_samples) + 1))
        plan.append((int(index), length, start))
    batch = np.zeros((len(rows), audio_set.channels, segment_samples), dtype=np.float32)
    for out_row, row in enumerate(rows):
        index, length, start = plan[row]
        for attempt in range(1, REDRAWS + 2):
            try:
                if length >= segment_samples:
                    batch[out_row] = audio_set.read(index, start, segment_samples)
                else:
                    batch[out_row, :, start:start + length] = audio_set.read(index, 0, length)
                break
            except DataError:
                if failures is None:
                    raise
                failures.append(audio_set.entries[index].path)
                batch[out_row] = 0.0
                redraw = np.random.default_rng([seed, step, row, attempt, 0xBAD])
                index = int(redraw.integers(0, len(audio_set)))
                length = audio_set.length(index)
                start = int(redraw.integers(0, abs(length - segment_samples) + 1))
    return torch.from_numpy(batch)


def file_entry(path: str | Path) -> IndexEntry:
    """Probe one audio file (a streaming pass: length, rate, loudness) as an :class:`IndexEntry`;
    ``DataError`` naming the file when it cannot be used."""
    from targetkl.data.index import probe

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such audio file")
    result = probe({"file": str(path)})
    if "reason" in result:
        raise DataError(f"{path}: {result['reason']}")
    if result.get("warning"):
        log.warning("%s: %s; using what it holds", path, result["warning"])
    stat = path.stat()
    return IndexEntry(path=str(path), file=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                      **{k: result[k] for k in ("sample_rate", "channels", "frames", "rms", "peak")})


def write_audio_stream(path: str | Path, sample_rate: int, pieces, num_samples: int, channels: int = 1) -> int:
    """Write ``(first sample, audio)`` pieces (``(samples,)`` or ``(channels, samples)``) in order into a 16-bit
    wav of ``num_samples`` samples, as they come (the file is never in memory whole), under a temporary name
    renamed to ``path`` at the end (a file already at ``path`` stays whole until then); returns the samples
    written."""
    path = output_path(path)
    written = 0
    with atomic_path(path) as temporary:
        with sf.SoundFile(str(temporary), "w", sample_rate, channels, "PCM_16") as out:
            for first, audio in pieces:
                audio = audio[..., : max(num_samples - first, 0)]
                if audio.shape[-1]:
                    out.write(np.clip(audio.T, -1.0, 1.0))
                    written += audio.shape[-1]
    return written


def write_example_clips(folder: Path, clips: list[np.ndarray], sample_rate: int) -> list[str]:
    """Write ``clips`` (each ``(samples,)`` or ``(channels, samples)`` float, clipped to [-1, 1]) as 16-bit
    ``clip{i}.wav`` files in ``folder`` (created); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, audio in enumerate(clips):
        path = folder / f"clip{index}.wav"
        with atomic_path(path) as temporary:
            sf.write(str(temporary), np.clip(np.asarray(audio, dtype=np.float64).T, -1, 1), sample_rate,
                     subtype="PCM_16")
        paths.append(str(path))
    return paths
