"""The registry of codec architectures (``model.architecture``): each is one file that calls
:func:`register_architecture` with its builder, and its own settings section when it has settings
(``model.oobleck.channel_multiples``). Nothing else asks which architecture a model is.

Chunked inference finds an architecture's receptive field from its convolutions (every ``nn.Conv1d`` and
``nn.ConvTranspose1d``, weight-normed or not; :func:`targetkl.inference.receptive_field_frames`); an
architecture whose networks see further than their convolutions (attention, recurrence) declares its reach
with ``receptive_field``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from targetkl.config import Config, ConfigError, ModelConfig, register_check, register_section

BUILT_IN = ("targetkl.models.dac", "targetkl.models.oobleck")


@dataclass(frozen=True)
class Architecture:
    """``build(model_config, out_channels) -> (encoder, decoder)``: the encoder maps ``(B, audio_channels, T)`` to
    ``(B, out_channels, T / hop)`` (``out_channels``: what the bottleneck takes), the decoder ``(B, latent_dim, F)``
    to ``(B, audio_channels, F * hop)``. ``check(config)`` raises ``ConfigError`` for settings it cannot build;
    ``receptive_field(model_config) -> (encoder_frames, decoder_frames)`` overrides the one counted from the
    convolutions."""

    name: str
    build: Callable[[ModelConfig, int], tuple[nn.Module, nn.Module]]
    description: str = ""
    check: Callable[[Config], None] | None = None
    receptive_field: Callable[[ModelConfig], tuple[int, int]] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(entry: Architecture, settings: type | None = None) -> None:
    """Add ``entry`` under its name; ``settings`` (a dataclass) becomes the section ``model.<name>``."""
    ARCHITECTURES[entry.name] = entry
    if settings is not None:
        register_section("model", entry.name, settings)


def _load_built_in() -> None:
    import importlib

    for module in BUILT_IN:
        importlib.import_module(module)


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; ``ConfigError`` naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"model.architecture={name!r}: choose {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def architecture_names() -> list[str]:
    return sorted(ARCHITECTURES)


@register_check
def _check_architecture(config: Config) -> None:
    chosen = architecture(config.model.architecture)
    if chosen.check is not None:
        chosen.check(config)


_load_built_in()  # after the names above exist: the built-in architectures import them
