"""A captioned speech corpus spoken by espeak-ng: sentences of a small fixed grammar, several voices.

Each clip says one sentence of ``GRAMMAR`` (command, colour, preposition, digit, adverb, in the manner of
the GRID corpus); its caption is the spoken text. The grammar is written next to the clips
(``grammar.jsgf``) so a recognizer can be held to the corpus's vocabulary, as speech codec tests do.
Clip ``i`` depends only on ``(seed, i)``. Needs the ``espeak-ng`` program (Debian package ``espeak-ng``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from targetkl.config import ConfigError

WORDS = {
    "command": ("bin", "lay", "place", "set"),
    "colour": ("blue", "green", "red", "white"),
    "preposition": ("at", "by", "in", "with"),
    "digit": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "adverb": ("again", "now", "please", "soon"),
}
GRAMMAR = "\n".join(["#JSGF V1.0;", "grammar speech;",
                     "public <sentence> = " + " ".join(f"<{slot}>" for slot in WORDS) + ";"]
                    + [f"<{slot}> = {' | '.join(words)};" for slot, words in WORDS.items()]) + "\n"
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+f2", "en-gb-x-rp+m3", "en-us+f5")
PAUSE_SECONDS = 0.15
ESPEAK_TIMEOUT_SECONDS = 60  # one sentence takes well under a second; a hung espeak-ng is stopped here


class SpeechToolError(ConfigError):
    """espeak-ng is missing or failed."""


def sentence(rng: np.random.Generator) -> str:
    return " ".join(str(rng.choice(words)) for words in WORDS.values())


def speak(text: str, voice: str, words_per_minute: int, pitch: int, sample_rate: int) -> np.ndarray:
    """``text`` spoken by espeak-ng, resampled to ``sample_rate``: ``(samples,)`` float32, peak 0.5, with
    ``PAUSE_SECONDS`` of silence either side."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise SpeechToolError("espeak-ng not found: the speech corpus is spoken by it; install the Debian package "
                              "(apt-get install espeak-ng)")
    command = [program, "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "--stdout", text]
    try:
        result = subprocess.run(command, capture_output=True, timeout=ESPEAK_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise SpeechToolError(f"{program} did not answer within {ESPEAK_TIMEOUT_SECONDS} s; check that "
                              "`espeak-ng --stdout hello > /dev/null` works") from None
    if result.returncode != 0 or not result.stdout:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise SpeechToolError(f"espeak-ng -v {voice} failed ({detail[0] if detail else result.returncode}); "
                              "check `espeak-ng --voices=en`")
    try:
        audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float64")
    except (sf.LibsndfileError, RuntimeError, ValueError):
        raise SpeechToolError(f"{program} printed no WAV audio for --stdout; check that `espeak-ng --stdout hello "
                              "| file -` says WAVE audio") from None
    if audio.size == 0 or not np.isfinite(audio).all():
        raise SpeechToolError(f"{program} printed empty or broken audio; check the espeak-ng installation")
    audio = audio.mean(axis=1) if audio.ndim > 1 else audio
    audio = soxr.resample(audio, rate, sample_rate) if rate != sample_rate else audio
    audio = 0.5 * audio / max(float(np.max(np.abs(audio))), 1e-9)
    pause = np.zeros(int(PAUSE_SECONDS * sample_rate))
    return np.concatenate([pause, audio, pause]).astype(np.float32)


def write_speech_corpus(out_dir: str | Path, clips: int = 100, sample_rate: int = 16000, seed: int = 0,
                        progress: bool = True) -> Path:
    """Write ``OUT/clips/*.wav``, ``OUT/captions.jsonl`` (caption = the spoken text, label = the voice),
    ``OUT/grammar.jsgf`` and ``OUT/corpus.json`` (``"kind": "speech"``); returns ``OUT``."""
    if clips <= 0 or sample_rate <= 0:
        raise ConfigError(f"--clips {clips}, --sample-rate {sample_rate}: each must be positive")
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in tqdm(range(clips), desc="speaking corpus", disable=not progress):
        rng = np.random.default_rng([seed, index])
        text, voice = sentence(rng), VOICES[index % len(VOICES)]
        audio = speak(text, voice, int(rng.integers(130, 175)), int(rng.integers(35, 65)), sample_rate)
        relative = f"clips/{index:04d}_{voice.replace('+', '_')}.wav"
        sf.write(out_dir / relative, audio, sample_rate, subtype="PCM_16")
        lines.append(json.dumps({"path": relative, "caption": text, "label": voice}))
    (out_dir / "captions.jsonl").write_text("\n".join(lines) + "\n")
    (out_dir / "grammar.jsgf").write_text(GRAMMAR)
    settings = {"kind": "speech", "clips": clips, "sample_rate": sample_rate, "seed": seed, "voices": list(VOICES),
                "grammar": "grammar.jsgf"}
    (out_dir / "corpus.json").write_text(json.dumps(settings, indent=2) + "\n")
    return out_dir
