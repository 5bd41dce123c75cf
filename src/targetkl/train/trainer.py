"""The training loop: plain PyTorch, explicit, resumable to the exact same next loss.

Every source of randomness is a function of ``(seed, step)``: the batch crops, and the torch RNG
(reparameterization noise, quantizer dropout) reseeded before each step. Together with the optimizer,
EMA, discriminator and controller state in the checkpoint, a resumed run repeats the uninterrupted one.

Step scalars stay on the device as 0-d tensors and become Python floats (one transfer, and the mean over
ranks) only on the steps that are logged (``train.log_every``). A step waits for the device once, to learn
whether its loss and gradient were finite before the optimizer steps.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from targetkl import rate
from targetkl.config import Config, ConfigError, from_dict, validate
from targetkl.data import AudioSet, DataError, load_folder
from targetkl.data.stream import CropBatches, auto_workers, crop_loader
from targetkl.calibration import RateCalibration
from targetkl.inference import choose_device
from targetkl.losses import (ReconstructionLoss, feature_matching_loss, lsgan_discriminator_loss,
                             lsgan_generator_loss)
from targetkl.models.codec import build_codec
from targetkl.models.discriminators import build_discriminator
from targetkl.collectives import mean_tensor_over_ranks
from targetkl.train.distributed import SINGLE, DistributedContext, barrier, mean_over_ranks
from targetkl.checkpoints import checkpoint_step, latest_checkpoint
from targetkl.train.logger import MetricLogger, NullLogger
from targetkl.train.runlock import RunLock
from targetkl.train.state import TrainingError, TrainingState, update_ema, write_settings

log = logging.getLogger("targetkl.train")


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped a run inside a longer job (a sweep, the demo): its checkpoint is written, and
    the job must stop too instead of going on with a half-trained model. The CLI exits with status 130."""


def host_floats(values: dict[str, float | torch.Tensor], over_ranks: bool = False) -> dict[str, float]:
    """Step scalars (Python numbers and 0-d device tensors) as Python floats, in one transfer (one sync);
    with ``over_ranks``, averaged over the processes first, on the device."""
    device = next((v.device for v in values.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values.values()])
    if over_ranks:
        stacked = mean_tensor_over_ranks(stacked)
    return dict(zip(values, stacked.tolist()))


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool
    last_metrics: dict[str, float]
    held_out: dict[str, float] = field(default_factory=dict)  # measured at the last step: rate_kbps, target_kbps...

    def finished(self) -> "TrainResult":
        """This result, or :class:`TrainingInterrupted` if a stop signal ended the run early."""
        if self.interrupted:
            raise TrainingInterrupted(f"interrupted at step {self.step}; checkpoint saved in {self.run_dir}. "
                                      "Run the same command to continue.")
        return self


def learning_rate(config: Config, step: int) -> float:
    """The LR schedule as a pure function of the step: linear warmup, then constant, cosine or exponential."""
    train = config.train
    if train.warmup_steps and step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return train.lr
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    if train.schedule == "cosine":
        floor = train.lr * train.min_lr_ratio
        return floor + 0.5 * (train.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))
    return train.lr * (train.min_lr_ratio ** min(progress, 1.0))


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 17) % (2 ** 63 - 1)


class Trainer:
    """Train the codec in ``config`` on ``data_dir``; writes everything into ``run_dir``."""

    def __init__(self, config: Config, data_dir: str | Path, run_dir: str | Path, progress: bool = True,
                 train_set: AudioSet | None = None, held_out_set: AudioSet | None = None,
                 distributed: DistributedContext | None = None):
        validate(config)
        self.config = config
        self.run_dir = Path(run_dir)
        self.data_dir = Path(data_dir)
        self.dist = distributed or SINGLE
        self.progress = progress and self.dist.is_main
        self.run_lock = RunLock(self.run_dir)
        if self.dist.is_main:
            self.run_lock.check()  # refuse a folder another process trains before loading any data
        self.device = choose_device(config.train.device)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        channels = config.model.audio_channels
        self.train_set = train_set or load_folder(data_dir, config.model.sample_rate, "train",
                                                  config.data.valid_percent, config.data.loudness_dbfs, progress,
                                                  channels=channels)
        if held_out_set is None and config.data.valid_percent > 0:
            held_out_set = load_folder(data_dir, config.model.sample_rate, "held_out", config.data.valid_percent,
                                       config.data.loudness_dbfs, progress=False, channels=channels)
        self.held_out_set = held_out_set
        self.crop_batches = CropBatches(self.train_set, config.train.batch_size, config.segment_samples,
                                        config.train.seed, self.dist.rank, self.dist.world_size)
        self.workers = config.data.workers if config.data.workers >= 0 else auto_workers(self.dist.local_world_size)
        self._batches = None
        self.calibration = RateCalibration(config, self.train_set, self.device, self._read_or_skip)
        self.data_wait_seconds = 0.0
        torch.manual_seed(config.train.seed)
        self.model = build_codec(config).to(self.device)
        self.reconstruction = ReconstructionLoss(
            config.model.sample_rate, config.loss.mel_windows, config.loss.stft_windows, config.loss.mel_weight,
            config.loss.stft_weight, config.loss.waveform_weight).to(self.device)
        train = config.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train.lr, betas=train.betas,
                                           weight_decay=train.weight_decay)
        self.ema = copy.deepcopy(self.model).eval() if train.ema_decay > 0 else None
        self.discriminator = None
        self.disc_optimizer = None
        if config.loss.adversarial:
            self.discriminator = build_discriminator(config.loss, config.model.sample_rate).to(self.device)
            self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=config.loss.discriminator_lr,
                                                    betas=train.betas)
        self.state = TrainingState({"model": self.model, "ema": self.ema, "discriminator": self.discriminator},
                                   {"optimizer": self.optimizer, "disc_optimizer": self.disc_optimizer})
        self.training_model = self.model
        if self.dist.active:
            self.training_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        if train.compile:
            self.model.compile_networks()
        self.step = 0
        self.bad_steps = 0
        self.bad_reads = 0  # crops drawn again because their file could not be read
        self.bad_files: set[str] = set()
        self._stop_signal: int | None = None
        fitted = config.rate_schedule()
        if fitted != (config.rate.free_steps, config.rate.warmup_steps) and self.dist.is_main:
            log.info("a %d-step run: the free start and warmup (rate.free_steps=%d, rate.warmup_steps=%d) are "
                     "fitted to %d and %d training forwards, so the run's second half trains at full rate penalty",
                     train.steps, config.rate.free_steps, config.rate.warmup_steps, *fitted)

    # ----------------------------------------------------------------- state
    def save(self) -> Path | None:
        """Write a checkpoint (rank 0 only; other ranks hold the same weights)."""
        if not self.dist.is_main:
            return None
        extra = {"schedule": {"name": self.config.train.schedule, "lr": learning_rate(self.config, self.step)},
                 "bad_steps": self.bad_steps}
        return self.state.save(self.run_dir, self.step, extra, self.config.train.keep_checkpoints)

    def resume(self) -> bool:
        state = self.state.resume(self.run_dir)
        if state is None:
            return False
        self.step = int(state["step"])
        self.bad_steps = int(state.get("bad_steps", 0))
        return True

    def _write_config(self) -> None:
        """Save the resolved config; refuse to resume a run whose model or rate settings differ (a run saved before
        a setting existed has that setting's default). A run whose checkpoint is still at step 0 (``targetkl
        import`` writes one) has not trained at any rate: its rate settings may change, its model may not."""
        latest = latest_checkpoint(self.run_dir)
        guarded = ("model",) if latest is not None and checkpoint_step(latest) == 0 else ("model", "rate")

        def fixed(settings: dict) -> dict:
            try:
                settings = from_dict(settings, where=str(self.run_dir / "config.json")).to_dict()
            except ConfigError:
                pass
            return {key: settings.get(key) for key in guarded}

        write_settings(self.run_dir / "config.json", self.config.to_dict(), fixed,
                       "model or rate settings" if len(guarded) == 2 else "model settings")

    # ------------------------------------------------------------- one step
    def _autocast(self):
        if self.device.type == "cuda" and self.config.train.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, float | torch.Tensor]:
        """One optimizer step (``grad_accum`` micro-batches); returns this process's step scalars, some as
        0-d device tensors (see :func:`host_floats`), with ``skipped = 1.0`` when the step was not taken."""
        config, train = self.config, self.config.train
        torch.manual_seed(step_seed(train.seed, self.step))
        lr = learning_rate(config, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float | torch.Tensor] = {}
        for micro in range(train.grad_accum):
            micro_step = self.step * train.grad_accum + micro
            waited = time.perf_counter()
            audio, failed = next(self._batches) if self._batches is not None else self.crop_batches[micro_step]
            audio = audio.to(self.device, non_blocking=True)
            self._note_bad_reads(failed)
            self.data_wait_seconds += time.perf_counter() - waited
            with self._autocast():
                self._skip_noise(self.dist.rank)
                decoded, encoded = self.training_model(audio)
                self._skip_noise(self.dist.world_size - 1 - self.dist.rank)
                reconstruction, terms = self.reconstruction(decoded.float(), audio)
                loss = reconstruction + encoded.penalty
                if self.discriminator is not None:
                    loss = loss + self._adversarial_terms(audio, decoded, terms)
            (loss / train.grad_accum).backward()
            scalars = {"loss": loss.detach(), "loss/rate_penalty": encoded.penalty.detach(),
                       **{f"loss/{k}": v.detach() for k, v in terms.items()},
                       "rate/kbps": rate.bits_per_frame_to_kbps(encoded.bits_per_frame.detach().mean(),
                                                                self.model.frame_rate),
                       "latent/std": encoded.z.detach().float().std(), **encoded.metrics}
            if encoded.kl_nats_per_frame is not None:
                scalars["rate/kl_nats_per_frame"] = encoded.kl_nats_per_frame.detach().mean()
            for key, value in scalars.items():
                if isinstance(value, torch.Tensor):
                    value = value.to(torch.float64)
                totals[key] = totals.get(key, 0.0) + value / train.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        finite = torch.isfinite(totals["loss"]) & torch.isfinite(grad_norm)
        nonfinite_ranks = 1.0 - float(finite)
        if self.dist.active:
            nonfinite_ranks = mean_over_ranks([nonfinite_ranks])[0]
        if nonfinite_ranks > 0:
            self.optimizer.zero_grad(set_to_none=True)
            totals["skipped"] = 1.0
            return totals
        self.optimizer.step()
        if self.ema is not None:
            update_ema(self.ema, self.model, train.ema_decay)
        totals.update({"grad_norm": grad_norm.detach(), "lr": lr})
        if self.bad_reads:
            totals["data/bad_reads"] = float(self.bad_reads)
        if config.rate.target_kbps is not None:
            totals["rate/target_kbps"] = config.rate.target_kbps
        return totals

    def _note_bad_reads(self, failed: list[str]) -> None:
        """Count crops whose file could not be read (each file named once in the log); stop the run when more
        than ``data.max_bad_reads`` of the training files have failed."""
        for path in failed:
            self.bad_reads += 1
            if path not in self.bad_files:
                self.bad_files.add(path)
                log.warning("%s: unreadable during training (gone or damaged since it was indexed); its crops are "
                            "drawn from other clips", path)
        if len(self.bad_files) > self.config.data.max_bad_reads * len(self.train_set):
            self.save()
            raise TrainingError(f"{len(self.bad_files)} of the {len(self.train_set)} training files became unreadable "
                                f"(more than data.max_bad_reads={self.config.data.max_bad_reads:g}); stopped at step "
                                f"{self.step} with a checkpoint; restore the files or re-index with `targetkl index`, "
                                "then run the same command")

    def _skip_noise(self, ranks: int) -> None:
        """Draw and drop ``ranks`` processes' worth of posterior noise, so that each rank samples its own
        slice of the noise one process would draw for the global batch."""
        per_frame = self.model.bottleneck.noise_values_per_frame
        if ranks <= 0 or per_frame == 0:
            return
        frames = self.config.segment_samples // self.model.hop
        torch.randn(ranks * self.config.train.batch_size * per_frame * frames, device=self.device)

    def _read_or_skip(self, index: int, start: int, length: int) -> np.ndarray | None:
        """A window of training clip ``index``, or ``None`` (counted as a bad read) when its file cannot be read."""
        try:
            return self.train_set.read(index, start, length)
        except DataError:
            self._note_bad_reads([self.train_set.entries[index].path])
            return None

    def _adversarial_terms(self, audio: torch.Tensor, decoded: torch.Tensor, terms: dict) -> torch.Tensor:
        """Update the discriminator on this micro-batch; return the generator's adversarial terms."""
        loss_config = self.config.loss
        real_scores, _ = self.discriminator(audio)
        fake_scores, _ = self.discriminator(decoded.detach())
        disc_loss = lsgan_discriminator_loss(real_scores, fake_scores)
        self.disc_optimizer.zero_grad(set_to_none=True)
        disc_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), self.config.train.grad_clip)
        self.disc_optimizer.step()
        fake_scores, fake_features = self.discriminator(decoded)
        with torch.no_grad():
            _, real_features = self.discriminator(audio)
        adversarial = lsgan_generator_loss(fake_scores)
        matching = feature_matching_loss(real_features, fake_features)
        terms.update({"discriminator": disc_loss.detach(), "adversarial": adversarial.detach(),
                      "feature_matching": matching.detach()})
        return loss_config.adversarial_weight * adversarial + loss_config.feature_matching_weight * matching

    # ------------------------------------------------------------- the loop
    def _stop_requested(self) -> bool:
        """Whether any process got SIGINT/SIGTERM: all ranks stop at the same step."""
        flag = 1.0 if self._stop_signal is not None else 0.0
        return (mean_over_ranks([flag])[0] if self.dist.active else flag) > 0

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def held_out_metrics(self) -> dict[str, float]:
        """Measured rate and mel distance on the held-out split (eval mode), for the log."""
        from targetkl.eval.measure import measure_rate_and_distortion

        if self.held_out_set is None:
            return {}
        model = self.ema if self.ema is not None else self.model
        result = measure_rate_and_distortion(model, self.held_out_set.clips, self.device,
                                             batch_size=self.config.train.batch_size)
        target = model.bottleneck.target_kbps(self.config.rate.target_kbps, result["rate_kbps"])
        if target is not None:
            result["target_kbps"] = target
        return {key: value for key, value in result.items() if isinstance(value, (int, float))}

    def checkpoint_media(self, logger, held_out: dict[str, float]) -> None:
        """Latent statistics of the weights just saved (``RUN/latent_stats.json``) and TensorBoard's audio,
        spectrograms and histograms (:mod:`targetkl.train.media`); rank 0, no draw from torch's generator."""
        from targetkl.latent_stats import run_statistics, write_run_statistics
        from targetkl.train.media import media_clips

        model = self.ema if self.ema is not None else self.model
        stats = run_statistics(model, self.train_set, self.config.train.seed)
        write_run_statistics(self.run_dir, self.step, stats)
        clips = media_clips(self.held_out_set, self.config.train.log_audio_clips) \
            if self.held_out_set is not None else []
        logger.media(self.step, model, clips, held_out.get("target_kbps"), stats)

    def run(self) -> TrainResult:
        """Train to ``train.steps`` (resuming from the run's checkpoint), holding the run folder's lock."""
        if self.dist.is_main:
            self.run_lock.acquire()
        try:
            return self._run()
        finally:
            self.run_lock.release()

    def _run(self) -> TrainResult:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
        barrier()
        logger = MetricLogger(self.run_dir) if self.dist.is_main else NullLogger()
        resumed = self.resume()
        if resumed:
            log.info("resuming %s from step %d", self.run_dir, self.step)
            logger.truncate_after(self.step)
        train = self.config.train
        if not resumed and self.dist.is_main:
            self.checkpoint_media(logger, {})
        if self.step < train.steps:  # a finished run trained further is trimmed again at its new end, not twice
            for model in (self.model, self.ema):
                if model is not None:
                    model.bottleneck.clear_trim()
        previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
        for signum in previous:
            signal.signal(signum, self._on_signal)
        last: dict[str, float] = {}
        held_out: dict[str, float] = {}
        bar = tqdm(total=train.steps, initial=self.step, desc=f"training {self.run_dir.name}",
                   disable=not self.progress, dynamic_ncols=True)
        started = time.time()
        self._batches = crop_loader(self.crop_batches, self.step * train.grad_accum, train.steps * train.grad_accum,
                                    self.workers, pin_memory=self.device.type == "cuda")
        try:
            while self.step < train.steps:
                scalars = self.train_step()
                if scalars.get("skipped"):
                    self.bad_steps += 1
                    log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", self.step,
                                self.bad_steps)
                    logger.log(self.step, {"skipped": 1.0, "loss": scalars["loss"]})
                    if self.bad_steps >= train.max_bad_steps:
                        self.save()
                        raise TrainingError(
                            f"{self.bad_steps} non-finite steps in a row at step {self.step}; stopped. The last good "
                            f"weights are in {self.run_dir / 'checkpoints'}; lower train.lr or check the data")
                    self.step += 1
                    bar.update(1)
                    continue
                self.bad_steps = 0
                self.step += 1
                scalars.update(self.calibration.calibrate(self.model, self.step))
                if self.step == train.steps:
                    scalars.update(self.calibration.trim(self.model, self.ema))
                bar.update(1)
                if self.step % train.log_every == 0 or self.step == train.steps:
                    scalars = last = host_floats(scalars, over_ranks=self.dist.active)
                    scalars["seconds"] = time.time() - started
                    scalars["time/calibration_share"] = self.calibration.seconds / max(scalars["seconds"], 1e-9)
                    scalars["time/data_wait_share"] = self.data_wait_seconds / max(scalars["seconds"], 1e-9)
                    logger.log(self.step, scalars)
                    bar.set_postfix(kbps=f"{scalars['rate/kbps']:.3f}", mel=f"{scalars['loss/mel']:.3f}")
                if (self.step % train.checkpoint_every == 0 or self.step == train.steps) and self.dist.is_main:
                    self.save()
                    held_out = self.held_out_metrics()
                    logger.log(self.step, held_out, split="held_out")
                    self.checkpoint_media(logger, held_out)
                    if self.step == train.steps and rate.off_target(held_out.get("rate_kbps"),
                                                                   held_out.get("target_kbps")):
                        log.warning("%s: %s", self.run_dir, rate.off_target_text(held_out["rate_kbps"],
                                                                                  held_out["target_kbps"]))
                if self._stop_requested():
                    self.save()
                    name = (signal.Signals(self._stop_signal).name if self._stop_signal
                            else "a stop signal on another rank")
                    log.warning("%s received: checkpoint written at step %d; run the same command to resume",
                                name, self.step)
                    return TrainResult(self.run_dir, self.step, True, last)
            if self.dist.is_main and latest_checkpoint(self.run_dir) is None:
                self.save()
                self.checkpoint_media(logger, {})
            barrier()
        finally:
            self._batches = None
            bar.close()
            logger.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return TrainResult(self.run_dir, self.step, False, last, held_out)
