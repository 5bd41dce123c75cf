"""Synthesized demo corpus: short clips of varied sounds, each with a truthful caption.

No downloads: every clip is made here from a seed, so the corpus is identical on every machine.
Clip ``i`` depends only on ``(seed, i)``; asking for more clips extends the same corpus.

``snr_db`` optionally lays each clip over a recording noise floor: white noise that many dB below the
clip's RMS, as a microphone and room leave (off by default, so the clips are digital silence where no
instrument sounds). In silence the log-mel distance, whose floor is 1e-5, scores mostly a decoder's faint
noise, more at high rates than at low ones, which hides a rate-distortion curve; with ``snr_db=50`` that share
is equal at every rate (the measurement: ``docs/experiments.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from targetkl.config import ConfigError

Rng = np.random.Generator


def _envelope(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / sr
    attack_part = np.clip(t / max(attack, 1e-4), 0, 1)
    return attack_part * np.exp(-t / decay)


def _register(f0: float) -> str:
    return "low" if f0 < 200 else ("high" if f0 > 500 else "mid-pitched")


def plucked_string(rng: Rng, n: int, sr: int) -> tuple[np.ndarray, str, str]:
    """Karplus-Strong: a noise burst circulating in a damped delay line."""
    f0 = float(rng.choice([rng.uniform(70, 180), rng.uniform(220, 480), rng.uniform(520, 1000)]))
    period = max(2, int(round(sr / f0)))
    buffer = rng.uniform(-1, 1, period)
    out = np.empty(n)
    damping = rng.uniform(0.990, 0.998)
    for i in range(n):
        out[i] = buffer[i % period]
        buffer[i % period] = damping * 0.5 * (buffer[i % period] + buffer[(i + 1) % period])
    return out, "pluck", f"a {_register(f0)} plucked string note"


def fm_bell(rng: Rng, n: int, sr: int) -> tuple[np.ndarray, str, str]:
    """Two-operator FM with an inharmonic ratio and a decaying index."""
    f0 = float(rng.choice([rng.uniform(150, 300), rng.uniform(600, 1200)]))
    t = np.arange(n) / sr
    decay = rng.uniform(0.4, 1.0)
    index = rng.uniform(2, 5) * np.exp(-t / (decay * 0.5))
    ratio = rng.choice([1.4, 2.76, 3.5])
    out = np.sin(2 * np.pi * f0 * t + index * np.sin(2 * np.pi * f0 * ratio * t)) * _envelope(n, sr, 0.002, decay)
    return out, "bell", f"a {'low' if f0 < 400 else 'high'} metallic bell ringing"


def chord(rng: Rng, n: int, sr: int) -> tuple[np.ndarray, str, str]:
    """Three additive tones (a major or minor triad) with a soft attack."""
    root = rng.uniform(130, 330)
    quality = str(rng.choice(["major", "minor"]))
    third = 4 if quality == "major" else 3
    t = np.arange(n) / sr
    out = np.zeros(n)
    for semitones in (0, third, 7):
        f = root * 2 ** (semitones / 12)
        for harmonic, amp in ((1, 1.0), (2, 0.4), (3, 0.2)):
            out += amp * np.sin(2 * np.pi * f * harmonic * t + rng.uniform(0, 2 * np.pi))
    out *= _envelope(n, sr, 0.05, 2.0)
    return out, "chord", f"a sustained {quality} chord"


def chirp(rng: Rng, n: int, sr: int) -> tuple[np.ndarray, str, str]:
    """A sine sweep up or down over two to four octaves."""
    rising = bool(rng.integers(2))
    low, high = rng.uniform(150, 400), rng.uniform(1500, 4000)
    t = np.arange(n) / sr
    f_start, f_end = (low, high) if rising else (high, low)
    out = signal.chirp(t, f_start, t[-1], f_end, method="logarithmic") * _envelope(n, sr, 0.01, 5.0)
    return out, "chirp", "a rising tone sweep" if rising else "a falling tone sweep"


def noise_burst(rng: Rng, n: int, sr: int) -> tuple[np.ndarray, str, str]:
    """White or low-passed noise, gated to a short burst."""
    kind = str(rng.choice(["white", "low"]))
    noise = rng.standard_normal(n)
    if kind == "low":
        b, a = signal.butter(4, 400 / (sr / 2))
        noise = signal.lfilter(b, a, noise) * 4
    length = int(rng.uniform(0.15, 0.4) * sr)
    start = int(rng.uniform(0, 0.3) * sr)
    gate = np.zeros(n)
    gate[start:start + length] = np.hanning(min(length, n - start))
    caption = "a short burst of white noise" if kind == "white" else "a short burst of low rumbling noise"
    return noise * gate, "noise", caption


def percussion(rng: Rng, n: int, sr: int) -> tuple[np.ndarray, str, str]:
    """Kick (pitch-dropping sine), snare (tone plus noise) or hi-hat (high-passed noise)."""
    kind = str(rng.choice(["kick", "snare", "hihat"]))
    t = np.arange(n) / sr
    if kind == "kick":
        freq = 45 + 120 * np.exp(-t / 0.04)
        out = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.25)
        caption = "a deep kick drum hit"
    elif kind == "snare":
        out = 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05) + rng.standard_normal(n) * np.exp(-t / 0.12)
        caption = "a snare drum hit"
    else:
        b, a = signal.butter(4, min(6000, sr / 2 * 0.8) / (sr / 2), btype="high")
        out = signal.lfilter(b, a, rng.standard_normal(n)) * np.exp(-t / 0.04)
        caption = "a crisp hi-hat tick"
    delay = int(rng.uniform(0, 0.2) * sr)
    return np.concatenate([np.zeros(delay), out])[:n], "percussion", caption


FORMANTS = {"ah": (730, 1090, 2440), "ee": (270, 2290, 3010), "oo": (300, 870, 2240)}


def vowel(rng: Rng, n: int, sr: int) -> tuple[np.ndarray, str, str]:
    """A glottal pulse train with vibrato through three formant resonators."""
    name = str(rng.choice(list(FORMANTS)))
    f0 = float(rng.choice([rng.uniform(95, 140), rng.uniform(200, 280)]))
    t = np.arange(n) / sr
    phase = np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / sr
    source = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
    out = np.zeros(n)
    for formant, bandwidth in zip(FORMANTS[name], (80, 100, 120)):
        radius = np.exp(-np.pi * bandwidth / sr)
        theta = 2 * np.pi * formant / sr
        out += signal.lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius ** 2], source)
    out *= _envelope(n, sr, 0.05, 3.0)
    voice = "low" if f0 < 180 else "high"
    return out, "vowel", f"a {voice} voice singing the vowel '{name}'"


GENERATORS = (plucked_string, fm_bell, chord, chirp, noise_burst, percussion, vowel)


DEFAULT_SNR_DB = float("inf")


def synthesize_clip(seed: int, index: int, seconds: float, sample_rate: int,
                    snr_db: float = DEFAULT_SNR_DB) -> tuple[np.ndarray, str, str]:
    """Clip ``index`` of the corpus: ``(audio (samples,) float32 in [-1, 1], label, caption)``.

    ``snr_db``: the noise floor's level below the clip's RMS, dB (``inf`` for none).
    """
    rng = np.random.default_rng([seed, index])
    n = int(round(seconds * sample_rate))
    generator = GENERATORS[index % len(GENERATORS)]
    audio, label, caption = generator(rng, n, sample_rate)
    peak = np.max(np.abs(audio))
    if peak > 0:
        audio = audio / peak * rng.uniform(0.4, 0.9)
    fade = min(n // 10, int(0.005 * sample_rate))
    if fade > 0:
        audio[-fade:] *= np.linspace(1, 0, fade)
    if np.isfinite(snr_db):
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        audio = audio + rng.standard_normal(n) * rms * 10 ** (-snr_db / 20)
    return audio.astype(np.float32), label, caption


def corpus_settings(clips: int, seconds: float, sample_rate: int, seed: int, snr_db: float, channels: int = 1) -> dict:
    """What ``OUT/corpus.json`` records: everything the clips depend on."""
    settings = {"clips": clips, "seconds": seconds, "sample_rate": sample_rate,
                "seed": seed, "snr_db": snr_db if np.isfinite(snr_db) else None}
    return settings if channels == 1 else {**settings, "channels": channels}


def pan_stereo(audio: np.ndarray, seed: int, index: int, sample_rate: int) -> np.ndarray:
    """``(samples,)`` -> ``(2, samples)``: the clip placed at a random position between left and right
    (constant-power gains) with the far channel up to 0.5 ms late, so each clip has its own stereo image."""
    rng = np.random.default_rng([seed, index, 2])
    position = rng.uniform(-1.0, 1.0)
    angle = (position + 1.0) * np.pi / 4
    delay = int(round(abs(position) * 0.0005 * sample_rate))
    late = np.concatenate([np.zeros(delay, dtype=audio.dtype), audio[: len(audio) - delay]])
    left, right = (audio, late) if position < 0 else (late, audio)
    return np.stack([np.cos(angle) * left, np.sin(angle) * right]).astype(np.float32)


def write_corpus(out_dir: str | Path, clips: int = 300, seconds: float = 1.0, sample_rate: int = 16000,
                 seed: int = 0, progress: bool = True, snr_db: float = DEFAULT_SNR_DB, channels: int = 1) -> Path:
    """Write ``clips`` wav files under ``OUT/clips/``, ``OUT/captions.jsonl`` and ``OUT/corpus.json``
    (the settings); returns ``OUT``. ``channels=2`` pans each clip (:func:`pan_stereo`)."""
    if clips <= 0 or seconds <= 0 or sample_rate <= 0:
        raise ConfigError(f"--clips {clips}, --seconds {seconds}, --sample-rate {sample_rate}: each must be positive")
    if channels not in (1, 2):
        raise ConfigError(f"--channels {channels}: the demo corpus is mono (1) or stereo (2)")
    if not snr_db > 0:
        raise ConfigError(f"--snr-db {snr_db:g}: the noise floor must lie below the signal "
                          "(a positive dB value, or inf)")
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in tqdm(range(clips), desc="synthesizing corpus", disable=not progress):
        audio, label, caption = synthesize_clip(seed, index, seconds, sample_rate, snr_db)
        if channels == 2:
            audio = pan_stereo(audio, seed, index, sample_rate).T
        relative = f"clips/{index:04d}_{label}.wav"
        sf.write(out_dir / relative, audio, sample_rate, subtype="PCM_16")
        lines.append(json.dumps({"path": relative, "caption": caption, "label": label}))
    (out_dir / "captions.jsonl").write_text("\n".join(lines) + "\n")
    settings = corpus_settings(clips, seconds, sample_rate, seed, snr_db, channels)
    (out_dir / "corpus.json").write_text(json.dumps(settings, indent=2) + "\n")
    return out_dir
