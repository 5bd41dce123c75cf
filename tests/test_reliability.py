"""Odd data, crashes and untrusted files lose nothing and let nothing in.

Fault injection kills a real `targetkl train` subprocess with SIGKILL at random moments and checks that
every kill leaves a loadable checkpoint and that the finished run equals an uninterrupted one; the fuzz
tests feed random bytes as audio, checkpoints, latents and .tkl files and accept only clean errors.
"""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from targetkl.bitstream import BitstreamError, decompress
from targetkl.data import DataError, load_folder
from targetkl.data.corpus import write_corpus
from targetkl.latents import LatentFileError, read_latent_file
from targetkl.runs import load_run
from targetkl.checkpoints import CheckpointError, checkpoint_step, latest_checkpoint, load_tensors
from targetkl.train.trainer import Trainer, TrainingError

from conftest import quick_config

QUICK = ["train.batch_size=2", "train.warmup_steps=1", "train.log_every=1", "model.encoder_dim=4",
         "model.decoder_dim=8", "model.latent_dim=4", "loss.mel_windows=[128,256]", "loss.stft_windows=[256]",
         "rate.free_steps=0", "rate.warmup_steps=0", "rate.calibrate_every=2", "rate.calibrate_clips=2"]


def test_odd_files_are_handled_or_skipped_with_a_reason(tmp_path, caplog):
    root = tmp_path / "data"
    write_corpus(root, clips=4, seconds=0.25, progress=False)
    clips = root / "clips"
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate // 2) / rate)
    sf.write(clips / "stereo.wav", np.stack([tone, -tone * 0.5], axis=1), rate)
    sf.write(clips / "rate44k.flac", 0.3 * np.sin(2 * np.pi * 440 * np.arange(22050) / 44100), 44100)
    sf.write(clips / "silent.wav", np.zeros(rate // 4), rate)
    sf.write(clips / "long.wav", np.tile(tone, 8), rate)
    sf.write(clips / "nan.wav", np.where(np.arange(rate // 4) == 100, np.nan, 0.1).astype(np.float32), rate,
             subtype="FLOAT")
    sf.write(clips / "inf.wav", np.where(np.arange(rate // 4) == 7, np.inf, 0.1).astype(np.float32), rate,
             subtype="FLOAT")
    good = (clips / "stereo.wav").read_bytes()
    (clips / "truncated.wav").write_bytes(good[: len(good) // 2])
    (clips / "zero.wav").write_bytes(b"")
    (clips / "text.mp3").write_bytes(b"this is not audio at all")
    (clips / "wav_named.ogg").write_bytes((clips / "silent.wav").read_bytes())
    with open(root / "captions.jsonl", "a") as handle:
        handle.write("{not json\n")
        handle.write('{"path": 3}\n')
    with caplog.at_level(logging.WARNING):
        audio_set = load_folder(root, rate, "all", progress=False, max_seconds=2.0)
    assert set(audio_set.skipped) == {"clips/nan.wav", "clips/inf.wav", "clips/zero.wav", "clips/text.mp3"}
    assert audio_set.skipped["clips/nan.wav"].startswith("non-finite")
    by_path = {clip.path: clip.audio for clip in audio_set.clips}
    assert len(by_path["clips/stereo.wav"]) == rate // 2 and by_path["clips/stereo.wav"].ndim == 1
    assert len(by_path["clips/rate44k.flac"]) == rate // 2
    assert np.all(by_path["clips/silent.wav"] == 0)
    assert len(by_path["clips/long.wav"]) == 2 * rate and audio_set.cropped == ["clips/long.wav"]
    assert 0 < len(by_path["clips/truncated.wav"]) < rate // 2
    assert "clips/wav_named.ogg" in by_path  # read by its content, whatever the name says
    assert "captions.jsonl:5: bad caption line" in caplog.text and "captions.jsonl:6" in caplog.text
    assert "skipped 4" in audio_set.summary() and "1 longer than the limit" in audio_set.summary()
    for problem in ("nan.wav", "inf.wav", "zero.wav", "text.mp3"):
        assert sum(problem in record.getMessage() for record in caplog.records) == 1


def test_nothing_usable_is_an_error_before_training(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match="none of the 1 audio files"):
        Trainer(quick_config(), tmp_path, tmp_path / "run", progress=False)


def test_non_finite_steps_are_skipped_then_stop_with_a_good_checkpoint(small_corpus, tmp_path, monkeypatch):
    config = quick_config(train={"steps": 40, "max_bad_steps": 3})
    trainer = Trainer(config, small_corpus, tmp_path / "run", progress=False)
    real = trainer.reconstruction.forward
    calls = {"n": 0}

    def sometimes_nan(decoded, audio):
        calls["n"] += 1
        loss, terms = real(decoded, audio)
        return (loss * float("nan"), terms) if calls["n"] > 2 else (loss, terms)

    monkeypatch.setattr(trainer.reconstruction, "forward", sometimes_nan)
    with pytest.raises(TrainingError, match="3 non-finite steps in a row"):
        trainer.run()
    run = load_run(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert run.step == 4  # stopped at the third bad step in a row
    after_good = load_tensors(tmp_path / "run" / "checkpoints" / "step-00000002" / "model.safetensors")
    at_stop = load_tensors(tmp_path / "run" / "checkpoints" / "step-00000004" / "model.safetensors")
    weights = [k for k in at_stop if ".controller." not in k]
    assert weights and all(torch.equal(after_good[k], at_stop[k]) for k in weights)  # skipped steps changed nothing


def _train_command(data, run, steps):
    command = [sys.executable, "-m", "targetkl.cli", "train", "--data", str(data), "--out", str(run), "--steps",
               str(steps), "-q", "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=2"]
    for assignment in QUICK:
        command += ["--set", assignment]
    return command


def _logged_step(run) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def test_sigkill_at_random_moments_never_corrupts_and_resume_matches(small_corpus, tmp_path):
    steps = 20
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_command(small_corpus, tmp_path / "straight", steps), check=True, env=environment,
                   capture_output=True)
    run = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for attempt in range(5):
        process = subprocess.Popen(_train_command(small_corpus, run, steps), env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_after = min(steps - 1, _logged_step(run) + rng.randint(1, 3))
        deadline = time.time() + 300
        while process.poll() is None and _logged_step(run) < kill_after and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next step or checkpoint write
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        if latest_checkpoint(run) is not None:
            loaded = load_run(run)  # every kill leaves a complete, loadable checkpoint
            assert 0 < loaded.step <= steps
        for folder in (run / "checkpoints").glob("step-*") if run.is_dir() else []:
            load_tensors(folder / "model.safetensors")  # a complete folder never holds a half-written file
            assert (folder / "state.pt").is_file()
    assert kills >= 3
    subprocess.run(_train_command(small_corpus, run, steps), check=True, env=environment, capture_output=True)
    a = load_tensors(latest_checkpoint(tmp_path / "straight") / "model.safetensors")
    b = load_tensors(latest_checkpoint(run) / "model.safetensors")
    assert load_run(run).step == steps
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train"]
    assert logged == list(range(1, steps + 1))


def test_a_crash_inside_prune_or_replace_leaves_only_complete_step_folders(tmp_path, monkeypatch):
    """A kill inside ``shutil.rmtree`` once left ``step-*`` folders without ``model.safetensors``; a kill
    between moving a same-step checkpoint aside and renaming its replacement in left ``latest`` naming
    nothing. Both windows are forced here by making the second operation raise."""
    import shutil

    from targetkl import checkpoints as checkpoint

    def save(step, value):
        return checkpoint.save_checkpoint(tmp_path, step, {"model": {"w": torch.full((3,), float(value))}},
                                          {"step": step}, keep=2)

    save(1, 1.0)
    save(2, 2.0)
    real_rmtree = shutil.rmtree

    def dies_halfway(path, *args, **kwargs):
        for child in sorted(Path(path).rglob("*.safetensors")):
            child.unlink()
        raise KeyboardInterrupt  # the process dies with the folder half removed

    monkeypatch.setattr(checkpoint.shutil, "rmtree", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save(3, 3.0)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    root = checkpoint.checkpoint_root(tmp_path)
    for folder in root.glob("step-*"):
        assert load_tensors(folder / "model.safetensors")["w"][0] == checkpoint_step(folder)
    assert latest_checkpoint(tmp_path).name == "step-00000003"

    real_rename = checkpoint.os.rename
    calls = []

    def dies_after_moving_aside(source, destination):
        calls.append(source)
        real_rename(source, destination)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the same step's old checkpoint is aside, the new one not yet in

    monkeypatch.setattr(checkpoint.os, "rename", dies_after_moving_aside)
    with pytest.raises(KeyboardInterrupt):
        save(3, 30.0)
    monkeypatch.setattr(checkpoint.os, "rename", real_rename)
    assert not (root / "step-00000003").exists()
    restored = latest_checkpoint(tmp_path)
    assert restored.name == "step-00000003"
    assert load_tensors(restored / "model.safetensors")["w"][0] == 3.0
    save(3, 30.0)
    assert load_tensors(latest_checkpoint(tmp_path) / "model.safetensors")["w"][0] == 30.0
    assert not list(root.glob(".old-*")) and not list(root.glob(".tmp-*"))


def test_a_second_training_on_a_busy_run_folder_is_refused(small_corpus, tmp_path):
    """Two processes on one --out must not mix their metrics or delete each other's checkpoint
    folders. The second is refused at once, naming the folder and the first's pid; the first finishes
    undisturbed (and equals a run that trained alone). A killed holder leaves no stale lock: the SIGKILL
    test resumes after every kill."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    run, steps = tmp_path / "busy", 100
    first = subprocess.Popen(_train_command(small_corpus, run, steps), env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while first.poll() is None and _logged_step(run) < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first training ended before the second could try"
    second = subprocess.run(_train_command(small_corpus, run, steps), env=environment, capture_output=True, text=True)
    assert first.poll() is None, "the first training ended before the second was answered; give it more steps"
    first_output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_output
    assert second.returncode == 2
    message = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "Traceback" not in second.stderr
    assert str(run) in message[0] and f"pid {first.pid}" in message[0]
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train"]
    assert logged == list(range(1, steps + 1))
    subprocess.run(_train_command(small_corpus, tmp_path / "alone", steps), check=True, env=environment,
                   capture_output=True)
    a = load_tensors(latest_checkpoint(tmp_path / "alone") / "model.safetensors")
    b = load_tensors(latest_checkpoint(run) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_run_lock_is_held_while_training_and_given_back(tmp_path):
    from targetkl.train.runlock import RunFolderError, RunLock

    held = RunLock(tmp_path / "run").acquire()
    with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path / "run").acquire()
    held.release()
    RunLock(tmp_path / "run").acquire().release()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is not a folder"):
        RunLock(tmp_path / "file").check()


def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_same_command_resumes(small_corpus, tmp_path,
                                                                                  monkeypatch):
    """ENOSPC while writing a checkpoint: a CheckpointError saying so, the partial checkpoint
    removed (the space given back), the last complete one intact; once there is room the same training
    resumes from it and ends equal to a run that never ran out of space."""
    import errno

    from targetkl import checkpoints as checkpoint

    config = quick_config(train={"steps": 6, "checkpoint_every": 2})
    Trainer(config, small_corpus, tmp_path / "roomy", progress=False).run()
    real_save = checkpoint.torch.save
    calls = {"n": 0}

    class FullDisk:
        """A file that takes a few bytes, then fails as a full disk does (what torch.save meets on a full
        tmpfs: it lets the OSError through when it writes to a file object)."""

        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            if self.handle.tell() > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    def fills_the_disk(obj, handle, *args, **kwargs):
        calls["n"] += 1
        return real_save(obj, FullDisk(handle) if calls["n"] == 2 else handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", fills_the_disk)
    with pytest.raises(CheckpointError, match="no space left on the device while writing step-00000004"):
        Trainer(config, small_corpus, tmp_path / "full", progress=False).run()
    root = tmp_path / "full" / "checkpoints"
    assert not list(root.glob(".tmp-*"))
    assert latest_checkpoint(tmp_path / "full").name == "step-00000002"
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    Trainer(config, small_corpus, tmp_path / "full", progress=False).run()
    a = load_tensors(latest_checkpoint(tmp_path / "roomy") / "model.safetensors")
    b = load_tensors(latest_checkpoint(tmp_path / "full") / "model.safetensors")
    assert load_run(tmp_path / "full").step == 6 and all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(small_corpus, tmp_path):
    run = tmp_path / "run"
    command = _train_command(small_corpus, run, 400)
    command[command.index("train.checkpoint_every=1")] = "train.checkpoint_every=1000"
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").is_file():
        time.sleep(0.2)
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "interrupted at step" in output
    step = load_run(run).step
    assert 0 < step < 400


@pytest.mark.parametrize("seed", range(12))
def test_random_bytes_give_only_clean_errors(small_corpus, tmp_path, seed):
    rng = np.random.default_rng(seed)
    junk = rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
    header_like = [b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b""][seed % 6]
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for extension in (".wav", ".flac", ".ogg", ".mp3"):
        (audio_dir / f"junk{extension}").write_bytes(header_like + junk)
    with pytest.raises(DataError):
        load_folder(audio_dir, 16000, progress=False)

    config = quick_config(train={"steps": 1, "checkpoint_every": 1})
    run = tmp_path / "run"
    Trainer(config, small_corpus, run, progress=False).run()
    folder = latest_checkpoint(run)
    target = folder / ("model.safetensors" if seed % 2 else "state.pt")
    target.write_bytes(junk)
    with pytest.raises(CheckpointError):
        if seed % 2:
            load_run(run)
        else:
            Trainer(config, small_corpus, run, progress=False).run()

    latent = tmp_path / "latent.safetensors"
    latent.write_bytes(junk)
    with pytest.raises(LatentFileError):
        read_latent_file(latent)
    model = load_run(tmp_path / "run").model if seed % 2 == 0 else None
    if model is not None:
        with pytest.raises(BitstreamError):
            decompress(model, b"TKL1" + junk)
        with pytest.raises(BitstreamError):
            decompress(model, junk)
