"""The bottleneck registry: each kind is one class plus one entry here, named by ``model.bottleneck``.

An entry builds the bottleneck from a config, checks the settings it reads (``ConfigError`` naming the
key), and says whether ``rate.target_kbps`` applies to it; its ``settings`` dataclass (usually the class's
``Settings``) is its config section ``model.<name>``. Nothing outside ``bottlenecks/`` asks which
kind it holds: it asks the entry, or the built bottleneck (see ``Bottleneck``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from targetkl import rate
from targetkl.bottlenecks.base import Bottleneck
from targetkl.bottlenecks.gaussian import GaussianBottleneck
from targetkl.bottlenecks.rvq import RVQBottleneck
from targetkl.config import Config, ConfigError, register_check, register_section


@dataclass
class _NoSettings:
    """The settings of a bottleneck that has none of its own."""


@dataclass(frozen=True)
class BottleneckKind:
    name: str
    build: Callable[[Config], Bottleneck]
    validate: Callable[[Config], None]
    targets_rate: Callable[[Config], bool]  # does this config train to rate.target_kbps?
    summary: str
    settings: type = _NoSettings  # a dataclass: the section model.<name>, with check(path) if it has one


BOTTLENECKS: dict[str, BottleneckKind] = {}


def register_bottleneck(kind: BottleneckKind) -> BottleneckKind:
    BOTTLENECKS[kind.name] = kind
    register_section("model", kind.name, kind.settings)
    return kind


def bottleneck_kind(name: str) -> BottleneckKind:
    if name not in BOTTLENECKS:
        raise ConfigError(f"model.bottleneck={name!r}: choose one of {', '.join(BOTTLENECKS)}")
    return BOTTLENECKS[name]


def build_bottleneck(config: Config) -> Bottleneck:
    """The bottleneck of ``config``, its free start and warmup fitted to the run's length
    (:meth:`Config.rate_schedule`)."""
    return bottleneck_kind(config.model.bottleneck).build(config.with_fitted_rate_schedule())


def _controller_class(config: Config):
    from targetkl.control import CONTROLLERS

    if config.rate.controller not in CONTROLLERS:
        raise ConfigError(f"rate.controller={config.rate.controller!r}: choose one of {', '.join(CONTROLLERS)}")
    return CONTROLLERS[config.rate.controller]


def _build_gaussian(config: Config) -> Bottleneck:
    from targetkl.control import build_controller

    controller = build_controller(config.rate, config.target_nats_per_frame)
    return GaussianBottleneck(config.model.latent_dim, controller, config.model.vae.sigma_eps)


def _validate_gaussian(config: Config) -> None:
    if not _controller_class(config).has_goal:
        return
    model, target = config.model, config.rate.target_kbps
    if target is None or not (target > 0 and target < float("inf")):
        raise ConfigError(f"rate.target_kbps={target}: a target bitrate must be positive")
    bits_per_value = 16.0
    ceiling = rate.bits_per_frame_to_kbps(model.latent_dim * bits_per_value, model.frame_rate)
    if target > ceiling:
        raise ConfigError(
            f"rate.target_kbps={target} is above what {model.latent_dim} latent channels at "
            f"{model.frame_rate:g} Hz can usefully carry (~{ceiling:g} kbps at 16 bits per value); "
            "lower the target or widen model.latent_dim")


def _build_rvq(config: Config) -> Bottleneck:
    settings = config.model.rvq
    return RVQBottleneck(config.model.latent_dim, settings.codebooks, settings.codebook_size, settings.codebook_dim,
                         settings.dropout, settings.commitment_weight, settings.codebook_weight,
                         config.rate.free_steps, config.rate.warmup_steps)


def _build_identity(config: Config) -> Bottleneck:
    from targetkl.bottlenecks.identity import IdentityBottleneck

    return IdentityBottleneck(config.model.latent_dim)


register_bottleneck(BottleneckKind(
    "vae", _build_gaussian, _validate_gaussian, lambda config: _controller_class(config).has_goal,
    "Gaussian posterior, its KL rate-controlled by rate.controller", GaussianBottleneck.Settings))
register_bottleneck(BottleneckKind(
    "rvq", _build_rvq, lambda config: None, lambda config: False, "residual vector quantizer (DAC/EnCodec style)",
    RVQBottleneck.Settings))
register_bottleneck(BottleneckKind(
    "ae", _build_identity, lambda config: None, lambda config: False, "identity: a plain autoencoder"))


@register_check
def _check_bottleneck(config: Config) -> None:
    bottleneck_kind(config.model.bottleneck).validate(config)
