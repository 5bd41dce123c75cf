"""Shared fixtures: a small synthesized corpus and a tiny config that trains in seconds."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TARGETKL_CACHE", tempfile.mkdtemp(prefix="targetkl-index-"))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    from targetkl.data.corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"), clips=28, seconds=0.5, progress=False)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The default demo corpus (300 one-second clips), as `targetkl corpus` writes it."""
    from targetkl.data.corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("demo_corpus"), progress=False)


def quick_config(**sections):
    """The tiny preset shrunk further for unit tests, with overrides ``section={key: value}``."""
    from targetkl.config import apply_overrides, preset, validate

    overrides = {"train": {"steps": 4, "batch_size": 2, "log_every": 1, "checkpoint_every": 2, "warmup_steps": 1},
                 "model": {"encoder_dim": 4, "decoder_dim": 16, "latent_dim": 8},
                 "loss": {"mel_windows": (128, 256), "stft_windows": (256,)},
                 "rate": {"free_steps": 0, "warmup_steps": 0, "calibrate_every": 1, "calibrate_clips": 4}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    config = apply_overrides(preset("tiny"), overrides)
    validate(config)
    return config


def chromium_flags() -> list[str]:
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is needed for the report check: apt-get install chromium"
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"]


def chromium_dom(page) -> str:
    """The page's DOM after load, as headless Chromium renders it."""
    import subprocess

    return subprocess.run(chromium_flags() + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=120).stdout
