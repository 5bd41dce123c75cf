"""Rate calibration: the half of rate control that measures whole training clips.

A KL controller (:mod:`targetkl.control`) sees training crops; the rate that counts is that of whole clips in eval
mode. :class:`RateCalibration` measures it and hands it back: every ``rate.calibrate_every`` steps it encodes
``rate.calibrate_clips`` windows (at most ``rate.calibrate_seconds`` each, drawn as a pure function of
``(seed, step)``) and moves the controller's crop goal (:meth:`KLController.calibrate`); after the last step it
trims the bottleneck once (:meth:`Bottleneck.trim_rate`) so that ``rate.trim_clips`` training clips (a fixed draw of
the seed) meet the target, on the weights that are evaluated (the EMA when kept), and gives the live weights the
same trim. The trainer calls it; it keeps the seconds it spent
(``time/calibration_share``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from targetkl import rate
from targetkl.config import Config
from targetkl.data import AudioSet
from targetkl.inference import CodecRunner
from targetkl.models.codec import Codec

log = logging.getLogger("targetkl.train")

# read(index, start, length): a window of training clip ``index`` as (channels, samples), or None when unreadable
WindowReader = Callable[[int, int, int], "np.ndarray | None"]


class RateCalibration:
    """Whole-clip rate measurements of the training clips ``train_set`` for the model trained under ``config``,
    read through ``read`` (which counts unreadable files), encoded on ``device``."""

    def __init__(self, config: Config, train_set: AudioSet, device: torch.device, read: WindowReader):
        self.config, self.train_set, self.device, self.read = config, train_set, device, read
        self.seconds = 0.0

    def _longest(self) -> int:
        return int(self.config.rate.calibrate_seconds * self.config.model.sample_rate)

    def windows(self, step: int) -> list[np.ndarray]:
        """The windows measured at ``step``: ``rate.calibrate_clips`` clips drawn from ``(seed, step)``, a random
        window of those longer than ``rate.calibrate_seconds``."""
        rng = np.random.default_rng([self.config.train.seed, step, 0xCA1])
        longest, windows = self._longest(), []
        for index in rng.integers(0, len(self.train_set), self.config.rate.calibrate_clips):
            length, start = self.train_set.length(int(index)), 0
            if length > longest:
                start = int(rng.integers(0, length - longest + 1))
                length = longest
            windows.append(self.read(int(index), start, length))
        return [window for window in windows if window is not None]

    def trim_windows(self) -> Iterator[np.ndarray]:
        """The training audio of the final trim, read one window at a time: ``rate.trim_clips`` clips drawn once
        from the seed, the first ``rate.calibrate_seconds`` of each (an unreadable one is left out)."""
        rng = np.random.default_rng([self.config.train.seed, 0x781])
        chosen = sorted(rng.permutation(len(self.train_set))[:self.config.rate.trim_clips])
        longest = self._longest()
        windows = (self.read(int(i), 0, min(self.train_set.length(int(i)), longest)) for i in chosen)
        return (window for window in windows if window is not None)

    @torch.no_grad()
    def calibrate(self, model: Codec, step: int) -> dict[str, float]:
        """At a calibration step, measure whole clips with ``model`` in eval mode (left in training mode after) and
        move its controller's goal; returns the logged scalars, or nothing (not a calibration step, or a
        bottleneck without a KL controller)."""
        controller = model.bottleneck.rate_controller
        rate_config = self.config.rate
        if controller is None or rate_config.calibrate_every <= 0 or step % rate_config.calibrate_every:
            return {}
        started = time.perf_counter()
        windows = self.windows(step)
        if not windows:
            return {}
        encoded = CodecRunner(model, self.device, rate_config.calibrate_batch).encode(windows)
        model.train()
        whole_clip_kl = sum(float(e.kl_nats.sum()) for e in encoded) / max(sum(e.frames for e in encoded), 1)
        controller.calibrate(whole_clip_kl, rate_config.calibrate_gain)
        self.seconds += time.perf_counter() - started
        kbps = rate.nats_per_frame_to_kbps(whole_clip_kl, model.frame_rate)
        return {"rate/calibration_kbps": kbps, "control/offset_nats": float(controller.offset)}

    @torch.no_grad()
    def trim(self, live: Codec, evaluated: Codec | None = None) -> dict[str, float]:
        """After the last step: trim ``evaluated`` (the EMA when kept; default ``live``) so that the trim clips'
        whole-clip rate is the target, and give the ``live`` weights the same trim (left in training mode); returns
        the logged scalars, or nothing when the bottleneck has no trim, the penalty never reached full weight, or no
        trim within reach exists (logged)."""
        evaluated = live if evaluated is None else evaluated
        controller = live.bottleneck.rate_controller
        rate_config, target = self.config.rate, self.config.target_nats_per_frame
        if (controller is None or not controller.has_goal or target is None or rate_config.trim_clips <= 0
                or controller.ramp() < 1.0):
            return {}
        started = time.perf_counter()
        runner = CodecRunner(evaluated, self.device, rate_config.calibrate_batch)
        windows, posteriors = self.trim_windows(), []
        while chunk := list(itertools.islice(windows, max(rate_config.calibrate_batch, 1))):  # memory: one batch
            posteriors += [(e.z, e.std) for e in runner.encode(chunk)]
        live.train()
        if not posteriors:
            return {}
        trimmed = evaluated.bottleneck.trim_rate(posteriors, target)
        self.seconds += time.perf_counter() - started
        if trimmed is None:
            log.warning("the final rate trim found no shift that reaches the target on %d training clips; the rate "
                        "is left as trained", len(posteriors))
            return {}
        if live is not evaluated:
            live.bottleneck.set_trim(trimmed["rate/trim_shift"])
        return trimmed
