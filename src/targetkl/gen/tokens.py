"""Transcripts to token sequences for text-to-speech: characters, or phonemes spoken by espeak-ng.

A tokenizer turns a transcript into a list of symbols: ``chars`` the normalized letters, digits,
apostrophes and spaces (``targetkl.eval.asr.normalize_text``); ``phonemes`` espeak-ng's IPA for it
(``espeak-ng -q --ipa``, offline, one symbol per code point, words separated by spaces). A
:class:`Vocabulary` maps symbols to ids: 0 is padding, 1 a symbol unseen in training, then the training
symbols in sorted order; it is saved in the generator's description so generation reads text the same way.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

import torch

from targetkl.config import ConfigError
from targetkl.eval.asr import normalize_text

PAD, UNKNOWN = 0, 1
ESPEAK_VOICE = "en-us"
ESPEAK_TIMEOUT_SECONDS = 60


def characters(text: str) -> list[str]:
    return list(normalize_text(text))


@functools.lru_cache(maxsize=65536)
def _ipa(text: str) -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        raise ConfigError("gen.tokens=phonemes needs the espeak-ng program (apt-get install espeak-ng); or pass "
                          "--set gen.tokens=chars")
    try:
        result = subprocess.run([program, "-q", "--ipa", "-v", ESPEAK_VOICE, text], capture_output=True,
                                timeout=ESPEAK_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{program} did not answer within {ESPEAK_TIMEOUT_SECONDS} s; check that "
                          "`espeak-ng -q --ipa hello` works") from None
    if result.returncode != 0:
        raise ConfigError(f"espeak-ng --ipa failed on {text[:40]!r}; check `espeak-ng -q --ipa hello`")
    return " ".join(result.stdout.decode("utf-8", errors="replace").split())


def phonemes(text: str) -> list[str]:
    return list(_ipa(normalize_text(text)))


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"chars": characters, "phonemes": phonemes}


def tokenizer(name: str) -> Callable[[str], list[str]]:
    if name not in TOKENIZERS:
        raise ConfigError(f"gen.tokens={name!r}: unknown; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]


@dataclass
class Vocabulary:
    """The symbols a TTS generator knows (``symbols[i]`` has id ``i + 2``) and how text becomes them."""

    kind: str
    symbols: list[str]

    @classmethod
    def build(cls, kind: str, texts: list[str]) -> "Vocabulary":
        split = tokenizer(kind)
        return cls(kind, sorted({symbol for text in texts for symbol in split(text)}))

    @property
    def size(self) -> int:
        return len(self.symbols) + 2

    def ids(self, text: str) -> list[int]:
        """The ids of ``text`` (at least one: an empty transcript is one unknown symbol)."""
        table = {symbol: i + 2 for i, symbol in enumerate(self.symbols)}
        return [table.get(symbol, UNKNOWN) for symbol in tokenizer(self.kind)(text)] or [UNKNOWN]

    def batch(self, texts: list[str]) -> torch.Tensor:
        """``(len(texts), longest)`` int64 ids, padded with ``PAD``."""
        rows = [self.ids(text) for text in texts]
        out = torch.full((len(rows), max(len(row) for row in rows)), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, :len(row)] = torch.tensor(row)
        return out
