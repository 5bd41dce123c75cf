"""Speech intelligibility: offline recognition (pocketsphinx's English model) and word/character error rates.

A data source is speech when its ``corpus.json`` says ``"kind": "speech"`` (as ``targetkl corpus --kind
speech`` writes); its captions are then the transcripts. With a ``grammar.jsgf`` beside it the recognizer
is held to that grammar (the corpus's vocabulary), otherwise it uses the full English language model.
Each reconstruction is recognized, and so is the original, whose error rate is the recognizer's own.
Every input gets the same seeded noise floor (``NOISE_FLOOR``) first: pocketsphinx's energy features
break on digital silence (on the speech corpus its WER on the originals fell from 0.35 to 0.06 with it),
and a codec's decode is rarely digitally silent, so without it the originals would score worse than
their reconstructions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import soxr

from targetkl.errors import UserError

RECOGNIZER_RATE = 16000
NOISE_FLOOR = 3e-4  # std of the seeded noise added before recognition (about -70 dBFS)


class RecognizerError(UserError, RuntimeError):
    """pocketsphinx is missing or cannot load the grammar."""


def normalize_text(text: str) -> str:
    """Lower case, letters, digits and apostrophes only, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def edit_distance(reference: list, hypothesis: list) -> int:
    """Levenshtein distance (substitutions, insertions and deletions, each 1) between two sequences."""
    previous = list(range(len(hypothesis) + 1))
    for i, token in enumerate(reference, start=1):
        current = [i]
        for j, guess in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token != guess)))
        previous = current
    return previous[-1]


def error_counts(reference: str, hypothesis: str) -> dict[str, float]:
    """``wer_edits``/``wer_words`` and ``cer_edits``/``cer_chars`` of one transcript (counts, pooled later)."""
    reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    return {"wer_edits": float(edit_distance(reference.split(), hypothesis.split())),
            "wer_words": float(len(reference.split())),
            "cer_edits": float(edit_distance(list(reference), list(hypothesis))), "cer_chars": float(len(reference))}


def is_speech_source(data_dir: str | Path) -> bool:
    try:
        return json.loads((Path(data_dir) / "corpus.json").read_text()).get("kind") == "speech"
    except (OSError, ValueError, AttributeError):
        return False


class SpeechRecognizer:
    """pocketsphinx, optionally held to a JSGF grammar. ``transcribe`` takes ``(samples,)`` float audio."""

    def __init__(self, grammar: str | Path | None = None):
        try:
            from pocketsphinx import Decoder
        except ImportError as error:
            raise RecognizerError("speech scoring needs pocketsphinx (its wheel ships an English model): "
                                  "pip install pocketsphinx") from error
        options = {"loglevel": "FATAL"}
        if grammar is not None:
            options["jsgf"] = str(grammar)
        try:
            self.decoder = Decoder(**options)
        except (RuntimeError, ValueError) as error:
            raise RecognizerError(f"{grammar}: pocketsphinx cannot load this grammar ({error})") from error
        self.originals: dict[str, str] = {}

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """The recognizer's words for ``(samples,)`` audio (``(channels, samples)``: their mix)."""
        audio = np.asarray(audio, dtype=np.float64)
        if audio.ndim == 2:
            audio = audio.mean(axis=0)
        if sample_rate != RECOGNIZER_RATE:
            audio = soxr.resample(audio, sample_rate, RECOGNIZER_RATE)
        audio = audio + NOISE_FLOOR * np.random.default_rng(0).standard_normal(len(audio))
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    def clip_errors(self, transcript: str, original: np.ndarray, decoded: np.ndarray, sample_rate: int,
                    key: str) -> dict[str, float]:
        """Error counts of ``decoded`` and (``*_original_edits``) of ``original`` against ``transcript``; the
        original's transcription is kept under ``key``, so a sweep recognizes each original once."""
        if key not in self.originals:
            self.originals[key] = self.transcribe(original, sample_rate)
        counts = error_counts(transcript, self.transcribe(decoded, sample_rate))
        reference = error_counts(transcript, self.originals[key])
        counts.update(wer_original_edits=reference["wer_edits"], cer_original_edits=reference["cer_edits"])
        return counts


def recognizer_for(data_dir: str | Path) -> SpeechRecognizer | None:
    """A recognizer for a speech source (its grammar when it has one), ``None`` for any other source."""
    if not is_speech_source(data_dir):
        return None
    grammar = Path(data_dir) / "grammar.jsgf"
    if grammar.exists() and not grammar.is_file():
        raise RecognizerError(f"{grammar}: not a file; the speech source's grammar must be a JSGF file (or absent, "
                              "for the full language model)")
    return SpeechRecognizer(grammar if grammar.is_file() else None)
