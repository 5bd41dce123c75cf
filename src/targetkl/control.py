"""KL controllers: the rate-control term added to the loss of a Gaussian bottleneck.

All controllers see the KL of every frame, ``(batch, frames)`` in nats per frame, and return a scalar
penalty. Their state (multipliers, integrators, step counters) lives in buffers, so it is saved with
the model weights and a resumed run continues with the same controller state.

The ``edge_frames`` first and last frames of each training crop are left out of the controlled KL:
their receptive field reaches into the crop's zero padding, so they are cheaper than the same audio in
the middle of a clip, and a crop of 16 frames would otherwise under-report the rate of long audio by
several percent (the held-out rate is measured on whole clips).

Each controller's own settings are its ``Settings`` dataclass, the config section named after it
(``rate.lagrange.weight``); what it shares with the others is ``RateConfig``.

- ``fixed``:    ``beta * KL`` -- a hand-tuned weight; the rate lands wherever it lands.
- ``target``:   ``lambda * (KL - KL_target)^2`` with ``lambda = weight / KL_target^2`` (or ``kl_lambda``,
                the paper's absolute weight per nat squared) -- the target-KL
                loss, its weight given per squared *relative* error so that 10% off costs the same at
                0.5 and at 8 kbps. With a fixed weight it settles where its gradient balances the
                reconstruction gradient, slightly above target.
- ``capacity``: ``weight * |KL - C|`` (per nat) with ``C`` annealed linearly to ``KL_target`` over
                ``anneal_steps`` (Burgess et al.).
- ``pi``:       ``beta_t * KL`` with ``beta_t`` set by a PI feedback loop (gains ``kp``, ``ki``) on the relative
                rate error (ControlVAE-style), clamped to ``[beta_min, beta_max]`` with conditional-integration
                anti-windup.
- ``lagrange``: augmented Lagrangian ``lambda_t * c + weight/2 * (c / KL_target)^2`` with ``c = KL - KL_target`` and
                dual ascent ``lambda_t += lr * c / KL_target``: the multiplier absorbs the steady push of
                the reconstruction loss, so the constraint is met without offset (GECO-style).

Every controller's penalty is off for the first ``free_steps`` training forwards (optimizer steps times
``train.grad_accum``): an autoencoder-like start lets the decoder learn to use the latent before the
rate is squeezed. Then, over ``warmup_steps`` forwards, ``warmup`` decides how the rate comes down to
the target:

- ``weight`` (default): the goal is the target from the start and the penalty's weight ramps linearly
  from 0 to full.
- ``goal``: the penalty is at full weight at once, but its goal moves geometrically from the KL the
  free phase reached (``free_kl``, a moving average) to the target, so the encoder sheds bits a few
  percent per step. ``fixed`` has no goal and always ramps its weight.

Why these defaults, with the measurements: ``docs/experiments.md``.

Either way, feedback state (multiplier, PI integral) and the calibration wait until the warmup is over.

``scope='batch'`` controls the batch-mean KL (an average bitrate); ``scope='clip'`` applies the
penalty to each clip's mean KL and averages (every clip near the same bitrate). The feedback state of
``pi`` and ``lagrange`` always follows the batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from targetkl.collectives import mean_over_ranks, mean_tensor_over_ranks
from targetkl.config import Config, ConfigError, RateConfig, register_check, register_section
from targetkl.nn.host_scalars import increment_scalar, read_scalar, write_scalar


def free_start_ramp(forwards: int, free_steps: int, warmup_steps: int) -> float:
    """0 for the first ``free_steps`` training forwards, then rising linearly to 1 over ``warmup_steps``:
    the free start shared by every rate-limiting bottleneck (the KL penalty, RVQ's quantization)."""
    past = forwards - free_steps
    if past < 0:
        return 0.0
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, past / warmup_steps)


CONTROLLERS: dict[str, type[KLController]] = {}


def register_controller(cls: type[KLController]) -> type[KLController]:
    """Class decorator: make ``cls`` selectable as ``rate.controller = cls.name`` (config validation, the CLI,
    ``sanity`` and the sweep read this registry) and its ``Settings`` the config section ``rate.<name>``. Its
    constructor takes ``(RateConfig, target_nats)``."""
    CONTROLLERS[cls.name] = cls
    register_section("rate", cls.name, cls.Settings)
    return cls


@register_check
def _check_controller(config: Config) -> None:
    if config.rate.controller not in CONTROLLERS:
        raise ConfigError(f"rate.controller={config.rate.controller!r}: choose one of {', '.join(CONTROLLERS)}")


@dataclass
class NoSettings:
    """The settings of a controller that has none of its own."""


class KLController(nn.Module):
    """Base class. ``forward(kl_per_frame)`` returns the penalty and updates state when training.

    A subclass sets ``name``, implements :meth:`penalty` (and :meth:`update` for feedback state) and is
    registered with :func:`register_controller`. Its own settings are the dataclass ``Settings`` (defaults
    included; ``self.settings`` holds the run's), which may define ``check(path)`` raising ``ConfigError``.
    ``has_goal = False`` for one without a target rate; ``sanity_settings`` are the ``Settings`` values it uses
    on the Shannon-limit check's source;
    ``reads_batch_kl = True`` for feedback that needs each training batch's mean KL in :meth:`update` (a 0-d
    float64 tensor on the model's device, averaged over ranks; the others are given ``None``).

    State lives in 0-d buffers read through :func:`~targetkl.nn.host_scalars.read_scalar`, so reading a
    counter or a multiplier does not wait for the GPU.
    """

    name = "base"
    has_goal = True
    reads_batch_kl = False
    sanity_settings: ClassVar[dict] = {}
    Settings: ClassVar[type] = NoSettings

    def __init__(self, config: RateConfig, target_nats: float | None):
        super().__init__()
        self.settings = config.entries.get(self.name) or self.Settings()
        self.scope = config.scope
        self.edge_frames = config.edge_frames
        self.target = float(target_nats) if target_nats is not None else None
        self.free_steps = config.free_steps
        self.warmup_steps = config.warmup_steps
        self.warmup = config.warmup
        self.noise_ramp = config.noise_ramp
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))
        self.register_buffer("offset", torch.zeros((), dtype=torch.float64))
        self.register_buffer("free_kl", torch.zeros((), dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Runs saved before ``free_kl`` existed load with it at 0: only a ``goal`` warmup reads it."""
        state_dict.setdefault(prefix + "free_kl", torch.zeros((), dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def goal(self) -> float:
        """The KL that training crops are steered to, nats per frame: the target plus the calibration offset;
        during a ``goal`` warmup, on the geometric path from the free phase's KL down to it."""
        settled = self.target + read_scalar(self, "offset")
        ramp = self.ramp()
        free_kl = read_scalar(self, "free_kl")
        if not self.anneals_goal() or ramp >= 1.0 or free_kl <= settled:
            return settled
        return free_kl ** (1.0 - ramp) * settled ** ramp

    def scale(self) -> float:
        """What a violation is measured against (nats): the target, or the annealed goal while it is above."""
        if self.anneals_goal() and self.ramp() < 1.0:
            return max(self.goal(), self.target)
        return self.target

    def anneals_goal(self) -> bool:
        return self.warmup == "goal" and self.has_goal and self.target is not None

    def weight_ramp(self) -> float:
        """Weight of the penalty: 0 in the free phase, then full weight (``goal`` warmup) or the linear ramp."""
        if self.anneals_goal():
            return 1.0 if read_scalar(self, "forwards") >= self.free_steps else 0.0
        return self.ramp()

    def calibrate(self, whole_clip_kl: float, gain: float, limit: float = 0.5) -> None:
        """Integral step on the rate of whole training clips in eval mode (``whole_clip_kl`` nats per frame).

        Crops are not clips: a crop's edges, which frames random crops cover, and a per-crop penalty all
        make the crop-level KL differ from the rate measured on whole clips. This moves the crop goal by
        ``-gain * (whole_clip_kl - target)`` nats (bounded to ``limit * target``) so that whole clips meet
        the target. No-op without a target or before the penalty is at full weight.
        """
        if self.target is None or self.ramp() < 1.0:
            return
        offset = read_scalar(self, "offset") - gain * (whole_clip_kl - self.target)
        write_scalar(self, "offset", min(max(offset, -limit * self.target), limit * self.target))

    def noise_scale(self) -> float:
        """Factor on the posterior noise of the next training forward: 1, or with ``rate.noise_ramp`` the
        penalty's ramp (0 in the free phase, so it trains a plain autoencoder on the posterior mean)."""
        return self.ramp() if self.noise_ramp else 1.0

    def ramp(self) -> float:
        """Weight of the penalty after ``forwards`` training forwards (see :func:`free_start_ramp`)."""
        return free_start_ramp(read_scalar(self, "forwards"), self.free_steps, self.warmup_steps)

    def controlled_kl(self, kl_per_frame: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` nats per frame -> ``(B,)`` per-clip mean over the frames away from the crop edges.

        When a crop is too short to drop ``2 * edge_frames`` frames and keep some, every frame counts.
        """
        frames = kl_per_frame.shape[-1]
        if self.edge_frames > 0 and frames > 2 * self.edge_frames:
            kl_per_frame = kl_per_frame[:, self.edge_frames: frames - self.edge_frames]
        return kl_per_frame.mean(dim=1)

    def _per_scope(self, kl_per_clip: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` -> the quantity controlled: ``(1,)`` batch mean or ``(batch,)`` per clip."""
        if self.scope == "clip":
            return kl_per_clip
        return kl_per_clip.mean().reshape(1)

    def penalty(self, kl: torch.Tensor) -> torch.Tensor:
        """``kl``: ``(n,)`` nats per frame; returns the mean penalty over the ``n`` entries."""
        raise NotImplementedError

    def update(self, batch_kl: torch.Tensor | None) -> None:
        """Advance the controller's state after a training forward with batch-mean KL ``batch_kl`` (nats per
        frame, a 0-d tensor averaged over ranks; ``None`` unless the class ``reads_batch_kl``)."""

    def metrics(self) -> dict[str, float]:
        return {}

    def all_metrics(self) -> dict[str, float]:
        return {**self.metrics(), "control/offset_nats": read_scalar(self, "offset")}

    def forward(self, kl_per_frame: torch.Tensor) -> torch.Tensor:
        kl_per_clip = self.controlled_kl(kl_per_frame)
        training = self.training and torch.is_grad_enabled()
        forwards = read_scalar(self, "forwards")
        records_free_kl = training and self.anneals_goal() and forwards < max(self.free_steps, 1)
        settled = training and self.ramp() >= 1.0
        batch_kl = None
        if settled and self.reads_batch_kl:
            batch_kl = mean_tensor_over_ranks(kl_per_clip.detach().mean().to(torch.float64))
        if records_free_kl:
            free_kl = mean_over_ranks([float(kl_per_clip.detach().mean())])[0]
            previous = read_scalar(self, "free_kl")
            write_scalar(self, "free_kl", free_kl if forwards == 0 else 0.9 * previous + 0.1 * free_kl)
        value = self.weight_ramp() * self.penalty(self._per_scope(kl_per_clip))
        if training:
            if settled:
                self.update(batch_kl)
            increment_scalar(self, "forwards")
        return value


@register_controller
class FixedBeta(KLController):
    name = "fixed"
    sanity_settings = {"beta": 0.5}
    has_goal = False

    @dataclass
    class Settings:
        """``beta``: the KL weight per nat."""

        beta: float = 1e-2
        former_keys: ClassVar[dict[str, str]] = {"beta": "beta"}

    def __init__(self, config: RateConfig, target_nats: float | None):
        super().__init__(config, target_nats)
        self.beta = self.settings.beta

    def penalty(self, kl: torch.Tensor) -> torch.Tensor:
        return self.beta * kl.mean()

    def calibrate(self, whole_clip_kl: float, gain: float, limit: float = 0.5) -> None:
        """A fixed beta has no target to calibrate."""

    def metrics(self) -> dict[str, float]:
        return {"control/beta": self.beta}


@register_controller
class TargetKL(KLController):
    """``weight * ((KL - goal) / scale)^2``, or with ``rate.kl_lambda`` the paper's ``kl_lambda * (KL - goal)^2``
    in nats (a weight per nat squared)."""

    name = "target"
    sanity_settings = {"weight": 7000.0}

    @dataclass
    class Settings:
        """``weight``: per squared relative error; ``kl_lambda`` (when set, instead): per nat squared."""

        weight: float = 64.0
        kl_lambda: float | None = None
        former_keys: ClassVar[dict[str, str]] = {"weight": "weight", "kl_lambda": "kl_lambda"}

        def check(self, path: str) -> None:
            if self.kl_lambda is not None and not self.kl_lambda > 0:
                raise ConfigError(f"{path}.kl_lambda={self.kl_lambda}: the weight per nat squared must be positive")

    def __init__(self, config: RateConfig, target_nats: float | None):
        super().__init__(config, target_nats)
        self.weight = self.settings.weight
        self.kl_lambda = self.settings.kl_lambda

    def penalty(self, kl: torch.Tensor) -> torch.Tensor:
        if self.kl_lambda is not None:
            return self.kl_lambda * (kl - self.goal()).pow(2).mean()
        return self.weight * ((kl - self.goal()) / self.scale()).pow(2).mean()


@register_controller
class Capacity(KLController):
    name = "capacity"
    sanity_settings = {"weight": 20.0}

    @dataclass
    class Settings:
        """``weight``: per nat of ``|KL - C|``; ``anneal_steps``: controlled forwards over which ``C`` rises to the
        goal (0: at the goal from the start)."""

        weight: float = 64.0
        anneal_steps: int = 0
        former_keys: ClassVar[dict[str, str]] = {"weight": "weight", "capacity_anneal_steps": "anneal_steps"}

    def __init__(self, config: RateConfig, target_nats: float | None):
        super().__init__(config, target_nats)
        self.weight = self.settings.weight
        self.anneal_steps = self.settings.anneal_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def capacity(self) -> float:
        if self.anneal_steps <= 0:
            return self.goal()
        return self.goal() * min(1.0, read_scalar(self, "step") / self.anneal_steps)

    def penalty(self, kl: torch.Tensor) -> torch.Tensor:
        return self.weight * (kl - self.capacity()).abs().mean()

    def update(self, batch_kl: torch.Tensor | None) -> None:
        increment_scalar(self, "step")

    def metrics(self) -> dict[str, float]:
        return {"control/capacity_nats": self.capacity()}


@register_controller
class PIController(KLController):
    name = "pi"
    reads_batch_kl = True
    sanity_settings = {"kp": 0.5, "ki": 0.05, "beta_max": 100.0}

    @dataclass
    class Settings:
        """Gains ``kp``, ``ki`` on the relative rate error; ``beta`` (per nat) stays in ``[beta_min, beta_max]``."""

        kp: float = 0.02
        ki: float = 0.002
        beta_min: float = 0.0
        beta_max: float = 10.0
        former_keys: ClassVar[dict[str, str]] = {"pi_kp": "kp", "pi_ki": "ki", "beta_min": "beta_min",
                                                 "beta_max": "beta_max"}

        def check(self, path: str) -> None:
            if not self.beta_min <= self.beta_max:
                raise ConfigError(f"{path}.beta_min={self.beta_min} is above {path}.beta_max={self.beta_max}")

    def __init__(self, config: RateConfig, target_nats: float | None):
        super().__init__(config, target_nats)
        self.kp, self.ki = self.settings.kp, self.settings.ki
        self.beta_min, self.beta_max = self.settings.beta_min, self.settings.beta_max
        self.register_buffer("beta", torch.tensor(float(self.beta_min), dtype=torch.float64))
        self.register_buffer("integral", torch.zeros((), dtype=torch.float64))

    def penalty(self, kl: torch.Tensor) -> torch.Tensor:
        return read_scalar(self, "beta") * kl.mean()

    @staticmethod
    def step_rule(error: float, integral: float, kp: float, ki: float, beta_min: float,
                  beta_max: float) -> tuple[float, float]:
        """One PI update: returns ``(beta, integral)``. ``error`` > 0 means too many bits.

        The integral only accumulates while the output is not saturated, or when the error pulls it
        back inside ``[beta_min, beta_max]`` (conditional integration, a standard anti-windup rule).
        """
        candidate = integral + error
        unclamped = kp * error + ki * candidate
        saturated_high = unclamped > beta_max and error > 0
        saturated_low = unclamped < beta_min and error < 0
        if not (saturated_high or saturated_low):
            integral = candidate
        beta = min(max(kp * error + ki * integral, beta_min), beta_max)
        return beta, integral

    def update(self, batch_kl: torch.Tensor | None) -> None:
        """Reads the batch KL on the host: one synchronization per training forward."""
        error = (float(batch_kl) - self.goal()) / self.goal()
        beta, integral = self.step_rule(error, read_scalar(self, "integral"), self.kp, self.ki, self.beta_min,
                                        self.beta_max)
        write_scalar(self, "beta", beta)
        write_scalar(self, "integral", integral)

    def metrics(self) -> dict[str, float]:
        return {"control/beta": read_scalar(self, "beta")}


@register_controller
class Lagrange(KLController):
    name = "lagrange"
    reads_batch_kl = True
    sanity_settings = {"weight": 70.0, "lr": 0.05}

    @dataclass
    class Settings:
        """``weight``: of the squared term, per squared relative error; ``lr``: the multiplier's step per unit
        of relative violation."""

        weight: float = 64.0
        lr: float = 1e-3
        former_keys: ClassVar[dict[str, str]] = {"weight": "weight", "lagrange_lr": "lr"}

    def __init__(self, config: RateConfig, target_nats: float | None):
        super().__init__(config, target_nats)
        self.weight = self.settings.weight
        self.lr = self.settings.lr
        self.register_buffer("multiplier", torch.zeros((), dtype=torch.float64))

    def penalty(self, kl: torch.Tensor) -> torch.Tensor:
        violation = kl - self.goal()
        multiplier = self.multiplier.clone()  # the update after this forward changes the buffer in place
        return (multiplier * violation + 0.5 * self.weight * (violation / self.scale()).pow(2)).mean()

    @staticmethod
    def step_rule(multiplier, batch_kl, target: float, lr: float):
        """Dual ascent on the relative violation: ``lambda + lr * clip((KL - target) / target, -1, 1)``, on
        Python floats or (without leaving the device) on 0-d tensors.

        The clip bounds how far one early batch (an untrained encoder can be 10x off target) moves the
        multiplier, so the start of training does not wind it up.
        """
        relative = (batch_kl - target) / target
        if isinstance(relative, torch.Tensor):
            return multiplier + lr * relative.clamp(-1.0, 1.0)
        return multiplier + lr * min(max(relative, -1.0), 1.0)

    def update(self, batch_kl: torch.Tensor | None) -> None:
        self.multiplier.copy_(self.step_rule(self.multiplier, batch_kl, self.goal(), self.lr))

    def metrics(self) -> dict[str, float | torch.Tensor]:
        return {"control/multiplier": self.multiplier.detach().clone()}


def build_controller(config: RateConfig, target_nats: float | None) -> KLController:
    if config.controller not in CONTROLLERS:
        raise ValueError(f"unknown KL controller {config.controller!r}; choose one of {', '.join(CONTROLLERS)}")
    controller_class = CONTROLLERS[config.controller]
    if controller_class.has_goal and target_nats is None:
        raise ValueError(f"the {config.controller!r} controller needs rate.target_kbps")
    return controller_class(config, target_nats)
