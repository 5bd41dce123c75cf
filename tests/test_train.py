import json
import os
import sys

import pytest
import torch

from targetkl.checkpoints import CheckpointError, latest_checkpoint, load_tensors
from targetkl.train.logger import read_metrics
from targetkl.train.trainer import Trainer, learning_rate

from conftest import quick_config


def _losses(run_dir):
    return {row["step"]: row["loss"] for row in read_metrics(run_dir)}


@pytest.mark.parametrize("bottleneck,controller", [("vae", "target"), ("vae", "pi"), ("rvq", "target")])
def test_resume_gives_the_same_next_loss(small_corpus, tmp_path, bottleneck, controller):
    full = quick_config(model={"bottleneck": bottleneck}, rate={"controller": controller})
    Trainer(full, small_corpus, tmp_path / "straight", progress=False).run()
    first_half = quick_config(model={"bottleneck": bottleneck}, rate={"controller": controller},
                              train={"steps": 2})
    Trainer(first_half, small_corpus, tmp_path / "resumed", progress=False).run()
    trainer = Trainer(full, small_corpus, tmp_path / "resumed", progress=False)
    trainer.run()
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(straight) == sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == straight[step]
    a = load_tensors(latest_checkpoint(tmp_path / "straight") / "model.safetensors")
    b = load_tensors(latest_checkpoint(tmp_path / "resumed") / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_writes_config_metrics_and_atomic_checkpoints(small_corpus, tmp_path):
    config = quick_config(train={"steps": 6, "keep_checkpoints": 2, "ema_decay": 0.5})
    Trainer(config, small_corpus, tmp_path / "run", progress=False).run()
    run = tmp_path / "run"
    saved = json.loads((run / "config.json").read_text())
    assert saved["rate"]["target_kbps"] == 2.0 and saved["train"]["steps"] == 6
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints == ["step-00000004", "step-00000006"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000006"
    assert (run / "checkpoints" / "step-00000006" / "ema.safetensors").is_file()
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss/mel", "loss/stft", "loss/waveform", "rate/kbps", "rate/target_kbps", "latent/std", "grad_norm",
                "rate/calibration_kbps", "control/offset_nats"):
        assert key in rows[-1]
    held_out = read_metrics(run, "held_out")
    assert [r["step"] for r in held_out] == [2, 4, 6] and held_out[-1]["rate_kbps"] > 0
    assert any(p.name.startswith("events") for p in (run / "tensorboard").iterdir())


def test_changed_model_settings_refuse_to_resume(small_corpus, tmp_path):
    from targetkl.train.trainer import TrainingError

    Trainer(quick_config(train={"steps": 2}), small_corpus, tmp_path / "run", progress=False).run()
    with pytest.raises(TrainingError, match="other model or rate settings"):
        Trainer(quick_config(rate={"target_kbps": 4.0}), small_corpus, tmp_path / "run", progress=False).run()


def test_damaged_checkpoint_is_a_clear_error(small_corpus, tmp_path):
    run = tmp_path / "run"
    Trainer(quick_config(train={"steps": 2}), small_corpus, run, progress=False).run()
    model_file = latest_checkpoint(run) / "model.safetensors"
    model_file.write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Trainer(quick_config(), small_corpus, run, progress=False).run()


def test_learning_rate_schedule():
    config = quick_config(train={"steps": 100, "warmup_steps": 10, "lr": 1e-3, "min_lr_ratio": 0.1})
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 10) == pytest.approx(1e-3)
    assert learning_rate(config, 100) == pytest.approx(1e-4)
    assert learning_rate(config, 55) == pytest.approx(1e-4 + 0.5 * 9e-4)


def test_adversarial_training_step(small_corpus, tmp_path):
    config = quick_config(loss={"adversarial": True, "discriminator_periods": (2, 3),
                                "discriminator_stft_windows": (256,)}, train={"steps": 2})
    Trainer(config, small_corpus, tmp_path / "gan", progress=False).run()
    row = read_metrics(tmp_path / "gan")[-1]
    assert row["loss/discriminator"] > 0 and row["loss/feature_matching"] > 0
    assert (latest_checkpoint(tmp_path / "gan") / "discriminator.safetensors").is_file()


HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@pytest.mark.parametrize("bottleneck,controller,reads_per_step", [
    ("vae", "target", 1), ("vae", "capacity", 1), ("vae", "lagrange", 1), ("vae", "pi", 3), ("rvq", "target", 1),
    ("ae", "target", 1)])
def test_a_training_step_reads_the_device_once_or_as_its_controller_needs(small_corpus, tmp_path, monkeypatch,
                                                                          bottleneck, controller, reads_per_step):
    """Between logged steps, the only device-to-host read in this package's code during a step is its
    finite-loss check, plus the batch KL of each forward for a feedback controller that reads it on the host
    (``pi``, two micro-batches). Reads inside
    torch's C++ (RVQ's dead-code search) are not counted here; ``benchmarks/gpu_check.py`` reports those."""
    config = quick_config(model={"bottleneck": bottleneck}, rate={"controller": controller, "free_steps": 2,
                                                                  "warmup_steps": 2, "calibrate_every": 0},
                          train={"steps": 8, "log_every": 100, "grad_accum": 2})
    trainer = Trainer(config, small_corpus, tmp_path / "run", progress=False)
    for _ in range(3):  # through the free phase and the warmup (2 + 2 forwards)
        trainer.train_step()
        trainer.step += 1
    reads = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}targetkl{os.sep}" in caller:  # torch's own reads (Adam's CPU step counter) are not ours
                reads.append(f"{_name} at {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    per_step = []
    for _ in range(4):
        before = len(reads)
        scalars = trainer.train_step()
        trainer.step += 1
        assert not scalars.get("skipped")
        per_step.append(len(reads) - before)
    monkeypatch.undo()
    assert per_step == [reads_per_step] * 4, reads


def test_the_final_trim_lands_the_trim_clips_on_the_target_and_is_saved(small_corpus, tmp_path):
    import math

    from targetkl import rate
    from targetkl.inference import CodecRunner
    from targetkl.runs import load_run

    config = quick_config(train={"steps": 2, "checkpoint_every": 2, "ema_decay": 0.5}, rate={"trim_clips": 6})
    trainer = Trainer(config, small_corpus, tmp_path / "run", progress=False)
    trainer.run()
    trainer.model.bottleneck.controller.offset.fill_(0.125)  # the live weights' controller state is theirs
    windows = list(trainer.calibration.trim_windows())
    assert len(windows) == 6 and [w.shape for w in windows] == [w.shape for w in trainer.calibration.trim_windows()]

    def whole_clip_kl():
        encoded = CodecRunner(trainer.ema).encode(windows)  # the trim is measured on the evaluated weights
        return sum(float(e.kl_nats.sum()) for e in encoded) / sum(e.frames for e in encoded)

    measured = whole_clip_kl()
    goal = 0.98 * measured
    config.rate.target_kbps = rate.bits_per_frame_to_kbps(goal / math.log(2), trainer.model.frame_rate)
    trimmed = trainer.calibration.trim(trainer.model, trainer.ema)
    assert trimmed["rate/trim_before_kl"] == pytest.approx(measured, rel=1e-5)
    assert whole_clip_kl() == pytest.approx(goal, rel=1e-4)
    assert float(trainer.model.bottleneck.scale_shift) == pytest.approx(trimmed["rate/trim_shift"]) != 0
    assert float(trainer.ema.bottleneck.scale_shift) == float(trainer.model.bottleneck.scale_shift)
    assert float(trainer.model.bottleneck.controller.offset) == 0.125  # one scalar moved, no buffers copied
    trainer.save()
    assert float(load_run(tmp_path / "run").model.bottleneck.scale_shift) == pytest.approx(trimmed["rate/trim_shift"])
