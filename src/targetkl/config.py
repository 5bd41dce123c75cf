"""Typed configuration: dataclasses, named presets and overrides from YAML/TOML files or ``key=value``.

A run's resolved configuration is saved as ``RUN/config.json`` and is the single source of truth when
the run is resumed, evaluated or used to encode audio.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from targetkl import rate
from targetkl.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message says which key and what to do."""


class EntrySections:
    """A section whose registry entries (controllers in ``rate``, bottlenecks in ``model``) each keep their own
    typed sub-section in ``entries``, read as attributes: ``config.rate.lagrange.lr``, ``config.model.rvq.codebooks``.
    The sub-sections are built from the registries (see :func:`register_section`) when the section is created."""

    def __getattr__(self, name: str) -> Any:
        entries = self.__dict__.get("entries")
        if entries is not None and name in entries:
            return entries[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


ENTRY_SETTINGS: dict[str, dict[str, type]] = {"model": {}, "rate": {}}
CHECKS: list[Callable[[Config], None]] = []

# The modules whose import registers the built-in parts (controllers, bottlenecks, architectures, discriminators):
# their sections (register_section) and their checks (register_check). The config layer names them and imports
# them once, when the first config is built; they import the config, never the other way round at import time.
PARTS = ("targetkl.control", "targetkl.bottlenecks.factory", "targetkl.models.architectures",
         "targetkl.models.discriminators")


def register_section(parent: str, name: str, settings: type) -> None:
    """Give registry entry ``name`` its own section ``parent.name``, the dataclass ``settings`` with the entry's
    defaults. ``settings.former_keys`` (optional) maps keys of the parent section that the entry used before it had
    a section (``rate.lagrange_lr``) to its own (``lr``): ``from_dict`` moves them when it reads an old
    ``config.json``. An entry without settings gets no section."""
    if parent not in ENTRY_SETTINGS:
        raise ValueError(f"entries have sections in {', '.join(ENTRY_SETTINGS)}, not {parent!r}")
    if dataclasses.fields(settings):
        ENTRY_SETTINGS[parent][name] = settings


def register_check(check: Callable[[Config], None]) -> Callable[[Config], None]:
    """Run ``check(config)`` in :func:`validate`: a registry checks that the entry a config names exists and that
    its settings can work, raising ``ConfigError`` with the key and the fix."""
    CHECKS.append(check)
    return check


def load_parts() -> None:
    """Import the built-in parts (``PARTS``) so that every section and check is registered; cheap after the first
    call."""
    import importlib

    for module in PARTS:
        importlib.import_module(module)


def _entry_sections(parent: str) -> dict[str, Any]:
    load_parts()
    return {name: settings() for name, settings in ENTRY_SETTINGS[parent].items()}


@dataclass
class ModelConfig(EntrySections):
    """The codec. ``architecture``: a name from the registry (``targetkl.models.architectures``): ``dac``
    (DAC-style; encoder channels double at each stride, the decoder mirrors the strides) or ``oobleck`` (Stable
    Audio's VAE; widths ``encoder_dim`` / ``decoder_dim`` times ``model.oobleck.channel_multiples``, one per
    stride, even strides; see ``targetkl.models.oobleck``).

    ``init``: ``torch`` (PyTorch's default conv init) or ``scaled`` (variance preserving, zero biases,
    residual units start as the identity; see ``targetkl.models.codec.initialize_weights``).

    ``audio_channels``: 1 (mono; files are downmixed) or more (stereo: 2; a mono file fills every channel, a file
    with more channels gives its first ones). Each bottleneck's and architecture's own settings are a section
    named after it: ``model.vae.sigma_eps``, ``model.rvq.codebooks``, ``model.oobleck.channel_multiples``.
    """

    sample_rate: int = 16000
    audio_channels: int = 1
    encoder_dim: int = 8
    strides: tuple[int, ...] = (2, 4, 5, 8)
    decoder_dim: int = 64
    latent_dim: int = 16
    bottleneck: str = "vae"
    init: str = "torch"
    architecture: str = "dac"
    entries: dict[str, Any] = field(default_factory=lambda: _entry_sections("model"), repr=False)

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return rate.frame_rate(self.sample_rate, self.hop)


@dataclass
class RateConfig(EntrySections):
    """How the KL (the rate) of a Gaussian bottleneck is controlled; shared by every controller.

    ``target_kbps`` is converted to ``KL_target`` nats per frame with the model's frame rate. ``controller``
    names the controller; its own settings are the section named after it (``rate.lagrange.weight``,
    ``rate.pi.kp``; see each controller's ``Settings`` in ``targetkl.control``). ``scope`` is ``batch`` (the
    batch-mean KL meets the target: an average bitrate) or ``clip`` (every clip's mean KL is pulled to the
    target: a constant bitrate). ``edge_frames`` frames at each end of a training crop are left out of the
    controlled KL (see ``targetkl.control``).

    The penalty is off for the first ``free_steps`` training forwards; over the next ``warmup_steps`` the
    rate comes down: ``warmup='weight'`` (default) ramps the weight with the goal at the target;
    ``'goal'`` anneals the goal geometrically from the free phase's KL to the target at full penalty
    weight. ``noise_ramp`` (default on) scales the posterior noise of training forwards by the same ramp:
    the free phase trains a plain autoencoder on the posterior mean, and the noise comes in with the penalty.

    Calibration encodes ``calibrate_clips`` windows of at most ``calibrate_seconds`` every ``calibrate_every``
    steps, ``calibrate_batch`` at a time, and moves the crop goal by ``calibrate_gain`` times the whole-clip
    rate error; its share of the run's time is logged as ``time/calibration_share``. After the last step the
    rate is trimmed once on ``trim_clips`` training clips (the same ones every time; 0: no trim): one shift of the
    posterior's scale brings their whole-clip KL to the target, leaving the decoded mean as it is.
    """

    target_kbps: float | None = 2.0
    controller: str = "lagrange"
    scope: str = "clip"
    edge_frames: int = 2
    free_steps: int = 300
    warmup_steps: int = 200
    warmup: str = "weight"
    calibrate_every: int = 10
    calibrate_clips: int = 32
    calibrate_seconds: float = 10.0
    calibrate_batch: int = 1
    calibrate_gain: float = 0.2
    trim_clips: int = 256
    noise_ramp: bool = True
    entries: dict[str, Any] = field(default_factory=lambda: _entry_sections("rate"), repr=False)

    def with_settings(self, **values: Any) -> RateConfig:
        """A copy with ``values`` set in the section of ``self.controller`` (e.g. ``weight=2.0, lr=0.5``)."""
        copied = copy.deepcopy(self)
        section = copied.entries[copied.controller]
        copied.entries[copied.controller] = dataclasses.replace(section, **values)
        return copied


@dataclass
class LossConfig:
    mel_windows: tuple[int, ...] = (128, 256, 512, 1024)
    mel_weight: float = 15.0
    stft_windows: tuple[int, ...] = (256, 512, 1024)
    stft_weight: float = 1.0
    waveform_weight: float = 1.0
    adversarial: bool = False
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 2.0
    discriminators: tuple[str, ...] = ("mpd", "mrsd")
    discriminator_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    discriminator_stft_windows: tuple[int, ...] = (2048, 1024, 512)
    discriminator_cqt_hops: tuple[int, ...] = (512, 256, 256)
    discriminator_cqt_bins: tuple[int, ...] = (24, 36, 48)
    discriminator_cqt_octaves: int = 9
    discriminator_cqt_fmin: float = 32.7
    discriminator_lr: float = 1e-4


@dataclass
class DataConfig:
    """``workers``: DataLoader processes reading training crops per training process; -1 picks them for the
    machine (none on two cores or fewer, else half of each process's share of the cores, at most 8).
    ``max_bad_reads``: the share of the training files that may become unreadable during a run (gone or damaged
    since indexing; their crops are drawn again from other clips, each file named once); past it training stops
    with a checkpoint."""

    segment_seconds: float = 0.32
    valid_percent: float = 10.0
    loudness_dbfs: float = -20.0
    workers: int = -1
    max_bad_reads: float = 0.05


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1000.0
    ema_decay: float = 0.0
    bf16: bool = True
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    max_bad_steps: int = 20
    log_audio_clips: int = 4  # held-out clips whose audio and spectrograms go to TensorBoard at each checkpoint


@dataclass
class Config:
    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    rate: RateConfig = field(default_factory=RateConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values; entry sections nest in their parent: ``{"rate": {"lagrange": {"lr": ...}}}``."""
        return {"preset": self.preset, **{f.name: section_dict(getattr(self, f.name))
                                          for f in dataclasses.fields(self) if f.name != "preset"}}

    @property
    def segment_samples(self) -> int:
        return int(round(self.data.segment_seconds * self.model.sample_rate))

    @property
    def target_nats_per_frame(self) -> float | None:
        if self.rate.target_kbps is None:
            return None
        return rate.kbps_to_nats_per_frame(self.rate.target_kbps, self.model.frame_rate)

    def rate_schedule(self) -> tuple[int, int]:
        """``(free_steps, warmup_steps)`` in training forwards as training uses them: ``rate.free_steps`` and
        ``rate.warmup_steps``, or, where the two would take more than ``RATE_SCHEDULE_SHARE`` of the run's
        ``train.steps * train.grad_accum`` forwards, both scaled down by one factor, so that the rest of a short
        run (a smoke test, a sweep with ``train.steps=200``) trains at full penalty and its rate is controlled.
        A pure function of the config: the same run resumes with the same schedule."""
        free, warmup = self.rate.free_steps, self.rate.warmup_steps
        room = int(self.train.steps * self.train.grad_accum * RATE_SCHEDULE_SHARE)
        if free + warmup <= room:
            return free, warmup
        fitted_free = free * room // (free + warmup)
        return fitted_free, room - fitted_free

    def with_fitted_rate_schedule(self) -> Config:
        """This config with ``rate.free_steps``/``rate.warmup_steps`` replaced by :meth:`rate_schedule`'s."""
        free, warmup = self.rate_schedule()
        if (free, warmup) == (self.rate.free_steps, self.rate.warmup_steps):
            return self
        return dataclasses.replace(self, rate=dataclasses.replace(self.rate, free_steps=free, warmup_steps=warmup))


MAX_SEGMENT_SECONDS = 60.0  # a training crop longer than this is a typo (the presets crop 0.3-1 s)
RATE_SCHEDULE_SHARE = 0.5  # the free start and the warmup take at most this share of a run

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"train": {"min_lr_ratio": 0.0}},
    "base-24k": {
        "model": {"sample_rate": 24000, "encoder_dim": 64, "strides": (2, 4, 5, 8),
                  "decoder_dim": 1024, "latent_dim": 64},
        "loss": {"mel_windows": (32, 64, 128, 256, 512, 1024, 2048), "stft_windows": (512, 1024, 2048),
                 "adversarial": True},
        "data": {"segment_seconds": 0.4},
        "rate": {"target_kbps": 6.0, "free_steps": 10000, "warmup_steps": 10000},
        "train": {"steps": 400000, "batch_size": 16, "lr": 1e-4, "schedule": "exponential",
                  "warmup_steps": 0, "grad_clip": 1000.0, "ema_decay": 0.999, "checkpoint_every": 5000,
                  "log_every": 50},
    },
    "dac-44k": {
        "model": {"sample_rate": 44100, "encoder_dim": 64, "strides": (2, 4, 8, 8),
                  "decoder_dim": 1536, "latent_dim": 64},
        "loss": {"mel_windows": (32, 64, 128, 256, 512, 1024, 2048), "stft_windows": (512, 1024, 2048),
                 "adversarial": True},
        "data": {"segment_seconds": 512 * 75 / 44100},
        "rate": {"target_kbps": 8.0, "free_steps": 10000, "warmup_steps": 10000},
        "train": {"steps": 400000, "batch_size": 12, "lr": 1e-4, "schedule": "exponential",
                  "warmup_steps": 0, "grad_clip": 1000.0, "ema_decay": 0.999, "checkpoint_every": 5000,
                  "log_every": 50},
    },
    # Stable Audio's VAE shape on CPU: 50 Hz at 16 kHz like tiny (hop 2*4*4*10 = 320), Oobleck layers.
    "oobleck-tiny": {
        "model": {"architecture": "oobleck", "encoder_dim": 32, "decoder_dim": 32, "latent_dim": 16,
                  "strides": (2, 4, 4, 10), "oobleck": {"channel_multiples": (1, 2, 2, 4)}},
        "train": {"min_lr_ratio": 0.0},
    },
    # Stable Audio Open's VAE: stereo 44.1 kHz, strides 2,4,4,8,8 (hop 2048, 21.5 Hz), 64 latent channels.
    "oobleck-44k": {
        "model": {"architecture": "oobleck", "sample_rate": 44100, "audio_channels": 2, "encoder_dim": 128,
                  "decoder_dim": 128, "latent_dim": 64, "strides": (2, 4, 4, 8, 8),
                  "oobleck": {"channel_multiples": (1, 2, 4, 8, 16)}},
        "loss": {"mel_windows": (32, 64, 128, 256, 512, 1024, 2048), "stft_windows": (512, 1024, 2048),
                 "adversarial": True},
        "data": {"segment_seconds": 2048 * 32 / 44100},
        "rate": {"target_kbps": 8.0, "free_steps": 10000, "warmup_steps": 10000, "calibrate_every": 100,
                 "calibrate_batch": 8, "calibrate_seconds": 5.0},
        "train": {"steps": 400000, "batch_size": 12, "lr": 1e-4, "schedule": "exponential",
                  "warmup_steps": 0, "grad_clip": 1000.0, "ema_decay": 0.999, "checkpoint_every": 5000,
                  "log_every": 50},
    },
    # The paper's model (Seetharaman and Kumar, ICASSP 2026): DAC's codec at 48 kHz with a Gaussian
    # bottleneck, 40 Hz latent frames (hop 2*4*5*5*6 = 1200), 128 latent channels, adversarial losses.
    # 80 nats per frame (the paper's lowest target) is 4.62 kbps at 40 Hz; 1280 nats is 73.9 kbps.
    "dacvae-48k": {
        "model": {"sample_rate": 48000, "encoder_dim": 32, "strides": (2, 4, 5, 5, 6),
                  "decoder_dim": 1536, "latent_dim": 128},
        "loss": {"mel_windows": (32, 64, 128, 256, 512, 1024, 2048), "stft_windows": (512, 1024, 2048),
                 "adversarial": True},
        "data": {"segment_seconds": 0.5},
        "rate": {"target_kbps": rate.nats_per_frame_to_kbps(320, 40), "free_steps": 10000, "warmup_steps": 10000,
                 "calibrate_every": 100, "calibrate_clips": 32, "calibrate_seconds": 5.0, "calibrate_batch": 8},
        "train": {"steps": 400000, "batch_size": 12, "lr": 1e-4, "schedule": "exponential",
                  "warmup_steps": 0, "grad_clip": 1000.0, "ema_decay": 0.999, "checkpoint_every": 5000,
                  "log_every": 50},
    },
}
for _name in ("base-24k", "dac-44k"):
    PRESETS[_name]["rate"].update({"calibrate_every": 100, "calibrate_seconds": 5.0, "calibrate_batch": 8})


def section_dict(section: Any) -> dict[str, Any]:
    """One section's values, with its entries' sections nested under their names."""
    values = {f.name: copy.deepcopy(getattr(section, f.name)) for f in dataclasses.fields(section)
              if f.name != "entries"}
    for name, entry in section.__dict__.get("entries", {}).items():
        values[name] = dataclasses.asdict(entry)
    return values


def field_type(cls: type, name: str) -> Any:
    """The declared type of dataclass field ``name`` (``int``, ``float | None``, ``tuple[int, ...]``...)."""
    return typing.get_type_hints(cls)[name]


def _number(value: Any, kind: type, key: str) -> Any:
    """``value`` as an ``int`` or a finite-or-infinite (never NaN) ``float``; ``ConfigError`` otherwise."""
    name = "an integer" if kind is int else "a number"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind is int and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected {name}, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected {name}, got {value!r}")
    if math.isnan(value):
        raise ConfigError(f"{key}: expected {name}, got nan")
    if kind is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return int(value)


def coerce(value: Any, kind: Any, key: str) -> Any:
    """Convert ``value`` (from JSON, YAML, TOML or a ``key=value`` string) to the declared type ``kind`` of
    field ``key``: ``int``, ``float``, ``bool``, ``str``, ``tuple[X, ...]`` or any of them ``| None``.
    Anything else (a list for a number, a mapping, NaN) is a ``ConfigError`` naming the key."""
    arguments = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return coerce(value, next(a for a in arguments if a is not type(None)), key)
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str):
            value = [part for part in value.strip().strip("()[]").split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of values, e.g. [2, 4], got {value!r}")
        if len(arguments) != 2 or arguments[1] is not Ellipsis:
            if len(value) != len(arguments):
                raise ConfigError(f"{key}: expected {len(arguments)} values, got {len(value)}")
            return tuple(coerce(v, a, key) for v, a in zip(value, arguments))
        return tuple(coerce(v, arguments[0], key) for v in value)
    if kind is bool:
        text = value.strip().lower() if isinstance(value, str) else value
        if text in ("1", "true", "yes", "on", True, 1):
            return True
        if text in ("0", "false", "no", "off", False, 0):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if kind in (int, float):
        return _number(value, kind, key)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a name (a string), got {value!r}")
        return value
    raise ConfigError(f"{key}: cannot read a value of type {kind}")


def apply_overrides(config: Config, overrides: dict[str, Any], where: str = "overrides",
                    migrate: bool = False) -> Config:
    """Return a copy of ``config`` with a nested ``{"section": {"key": value}}`` mapping applied; an entry's
    section nests one level deeper (``{"rate": {"lagrange": {"lr": 0.01}}}``).

    Unknown sections or keys raise ``ConfigError`` naming the key and where it came from. A key that moved into an
    entry's section is moved there with ``migrate`` (an old ``config.json``), else named in the error.
    """
    config = copy.deepcopy(config)
    for section_name, section_values in overrides.items():
        if section_name == "preset":
            continue
        section = getattr(config, section_name, None)
        if section is None or not dataclasses.is_dataclass(section):
            known = ", ".join(f.name for f in dataclasses.fields(Config) if f.name != "preset")
            raise ConfigError(f"{where}: unknown section {section_name!r}; known sections: {known}")
        apply_section(section, section_values, section_name, where, migrate)
    return config


def apply_section(section: Any, values: Any, path: str, where: str, migrate: bool = False) -> None:
    """Set the keys of the mapping ``values`` on the dataclass ``section`` (named ``path`` in messages), each
    coerced to its field's type, entries' sections one level deeper; ``ConfigError`` naming the key and ``where``
    on anything unknown or unreadable. Every typed settings dataclass (the codec's sections, the generator's) is
    read this way."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: section {path!r} must be a mapping of keys to values")
    entries = section.__dict__.get("entries", {})
    names = {f.name for f in dataclasses.fields(section)} - {"entries"}
    for key, value in values.items():
        if key in entries:
            apply_section(entries[key], value, f"{path}.{key}", where, migrate)
            continue
        if key not in names:
            moved = [(name, type(entry).former_keys[key]) for name, entry in entries.items()
                     if key in getattr(type(entry), "former_keys", {})]
            if moved and migrate:
                for name, new_key in moved:
                    apply_section(entries[name], {new_key: value}, f"{path}.{name}", where, migrate)
                continue
            if moved:
                raise ConfigError(f"{where}: {path}.{key} is now "
                                  f"{' / '.join(f'{path}.{name}.{new_key}' for name, new_key in moved)}; set that")
            known = ", ".join(sorted(names | {f"{name}.*" for name in entries}))
            raise ConfigError(f"{where}: unknown key {path}.{key}; known keys: {known}")
        try:
            setattr(section, key, coerce(value, field_type(type(section), key), f"{path}.{key}"))
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"rate.lagrange.lr": 0.1, "train.lr": 3e-4}`` to ``{"rate": {"lagrange": {"lr": 0.1}}, "train": ...}``;
    ``None`` values (flags not given) are left out."""
    nested: dict[str, Any] = {}
    for path, value in dotted.items():
        if value is None:
            continue
        *parents, key = path.split(".")
        level = nested
        for parent in parents:
            level = level.setdefault(parent, {})
        level[key] = value
    return nested


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["model.latent_dim=32", "rate.lagrange.lr=3e-3"]`` to a nested override mapping."""
    dotted: dict[str, Any] = {}
    for item in assignments:
        path = item.split("=", 1)[0]
        if "=" not in item or "." not in path or "" in path.split("."):
            raise ConfigError(f"--set {item!r}: write it as section.key=value, e.g. train.steps=200")
        dotted[path] = item.split("=", 1)[1]
    return nest(dotted)


def load_override_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON file of overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing .yaml, .toml or .json file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as error:
        raise ConfigError(f"{path}: cannot parse config ({error}); fix the syntax") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections to keys")
    return data


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = apply_overrides(Config(), PRESETS[name], where=f"preset {name}")
    config.preset = name
    return config


def from_dict(data: dict[str, Any], where: str = "config") -> Config:
    """Rebuild a ``Config`` saved with ``to_dict`` (e.g. ``RUN/config.json``), moving keys that an older version
    kept in a shared section into their entry's own (``rate.lagrange_lr`` to ``rate.lagrange.lr``)."""
    config = apply_overrides(Config(), data, where=where, migrate=True)
    config.preset = data.get("preset", "tiny")
    return config


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; {run_dir} is not a training run (train one with `targetkl train`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: corrupt config ({error}); restore it or retrain the run") from error
    return from_dict(data, where=str(path))


def validate(config: Config) -> None:
    """Fail early, with a message naming the key, on values that cannot train: the shared settings here, each
    registry's entries (the named controller, bottleneck, architecture and discriminators) by its registered
    check, each active entry's section by its own ``check``."""
    model, rate_config, train = config.model, config.rate, config.train
    load_parts()
    if rate_config.scope not in ("batch", "clip"):
        raise ConfigError(f"rate.scope={rate_config.scope!r}: choose batch or clip")
    if model.init not in ("torch", "scaled"):
        raise ConfigError(f"model.init={model.init!r}: choose torch or scaled")
    if rate_config.warmup not in ("goal", "weight"):
        raise ConfigError(f"rate.warmup={rate_config.warmup!r}: choose goal or weight")
    if not 1 <= model.audio_channels <= 8:
        raise ConfigError(f"model.audio_channels={model.audio_channels}: use 1 (mono) or 2 (stereo), at most 8")
    if model.sample_rate <= 0 or model.latent_dim <= 0 or model.encoder_dim <= 0 or model.decoder_dim <= 0:
        raise ConfigError("model.sample_rate, latent_dim, encoder_dim and decoder_dim must be positive")
    if not model.strides or any(s <= 0 for s in model.strides):
        raise ConfigError(f"model.strides={model.strides}: every stride must be a positive integer")
    if config.segment_samples % model.hop != 0 or config.segment_samples == 0:
        raise ConfigError(
            f"data.segment_seconds={config.data.segment_seconds} gives {config.segment_samples} samples, which "
            f"is not a positive multiple of the hop {model.hop}; use a multiple of {model.hop / model.sample_rate:g} s")
    for check in CHECKS:
        check(config)
    for parent, active in (("model", model.bottleneck), ("rate", rate_config.controller)):
        settings = getattr(config, parent).entries.get(active)
        if hasattr(settings, "check"):
            settings.check(f"{parent}.{active}")
    if train.steps < 0 or train.batch_size <= 0 or train.grad_accum <= 0:
        raise ConfigError("train.steps must be >= 0, train.batch_size and train.grad_accum >= 1")
    if train.log_audio_clips < 0:
        raise ConfigError(f"train.log_audio_clips={train.log_audio_clips}: must be >= 0 (0 logs no audio)")
    if not 0 < train.lr < math.inf:
        raise ConfigError(f"train.lr={train.lr}: the learning rate must be a positive number")
    if train.schedule not in ("constant", "cosine", "exponential"):
        raise ConfigError(f"train.schedule={train.schedule!r}: choose constant, cosine or exponential")
    if train.schedule == "exponential" and not train.min_lr_ratio > 0:
        raise ConfigError(f"train.min_lr_ratio={train.min_lr_ratio}: the exponential schedule would set the learning "
                          "rate to 0 after warmup; use a ratio above 0 (e.g. 0.1) or train.schedule=cosine")
    if not 0 <= train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay={train.ema_decay}: must be in [0, 1)")
    if rate_config.calibrate_seconds <= 0 or rate_config.calibrate_clips < 0 or rate_config.calibrate_batch < 1:
        raise ConfigError("rate.calibrate_seconds must be positive, rate.calibrate_clips >= 0 and "
                          "rate.calibrate_batch >= 1")
    if rate_config.free_steps < 0 or rate_config.warmup_steps < 0 or rate_config.trim_clips < 0:
        raise ConfigError(f"rate.free_steps={rate_config.free_steps}, rate.warmup_steps={rate_config.warmup_steps}, "
                          f"rate.trim_clips={rate_config.trim_clips}: each must be >= 0")
    data = config.data
    if not 0 <= data.valid_percent < 100:
        raise ConfigError(f"data.valid_percent={data.valid_percent}: must be in [0, 100)")
    if not 0 <= data.max_bad_reads <= 1:
        raise ConfigError(f"data.max_bad_reads={data.max_bad_reads}: a share of the training files, in [0, 1]")
    if data.segment_seconds > MAX_SEGMENT_SECONDS:
        raise ConfigError(f"data.segment_seconds={data.segment_seconds}: training crops of at most "
                          f"{MAX_SEGMENT_SECONDS:g} s (the presets use 0.3-1 s)")


def with_target_nats(config: Config, nats_per_frame: float | None) -> Config:
    """``config`` with its target given in nats per frame (converted to kbps at the model's frame rate)."""
    if nats_per_frame is None:
        return config
    if not (nats_per_frame > 0 and math.isfinite(nats_per_frame)):
        raise ConfigError(f"--target-nats {nats_per_frame}: a target KL must be a positive number of nats per frame")
    kbps = rate.nats_per_frame_to_kbps(nats_per_frame, config.model.frame_rate)
    return apply_overrides(config, {"rate": {"target_kbps": kbps}}, where="--target-nats")


def resolve(preset_name: str = "tiny", files: list[str] | None = None, assignments: list[str] | None = None,
            flags: dict[str, Any] | None = None, target_nats: float | None = None,
            base: Config | None = None) -> Config:
    """Preset (or ``base``: a run's saved config, which a resumed run starts from), then override files in order,
    then ``--set`` assignments, then explicit CLI flags (``None`` values are left out), then ``target_nats``
    (``--target-nats``, converted at the model's frame rate); validated."""
    config = copy.deepcopy(base) if base is not None else preset(preset_name)
    for file in files or []:
        config = apply_overrides(config, load_override_file(file), where=str(file))
    if assignments:
        config = apply_overrides(config, parse_assignments(assignments), where="--set")
    config = apply_overrides(config, nest(flags or {}), where="command line")
    config = with_target_nats(config, target_nats)
    if base is None:
        config.preset = preset_name
    validate(config)
    return config
