"""Generated test corpora for the data benchmarks: tones and noise written as FLAC, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_corpus(folder: Path, minutes: float, file_seconds: float, sample_rate: int = 48000, channels: int = 2,
                 seed: int = 0) -> Path:
    """``minutes`` of audio in files of ``file_seconds`` (kept when already there); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = max(1, int(round(minutes * 60 / file_seconds)))
    rng = np.random.default_rng(seed)
    t = np.arange(int(file_seconds * sample_rate)) / sample_rate
    for index in range(files):
        path = folder / f"{index:06d}.flac"
        if path.exists():
            continue
        tone = 0.2 * np.sin(2 * np.pi * rng.uniform(80, 2000) * t)
        mono = (tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        audio = np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1)
        sf.write(path, audio, sample_rate, subtype="PCM_16")
    return folder
