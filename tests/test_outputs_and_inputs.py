"""Outputs are whole or untouched and readable by others; odd inputs get one line, never a hang or a traceback;
a long run survives files that vanish under it. Each test runs the CLI (or the API) as a user would."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import quick_config
from targetkl.cli import main
from targetkl.data import ensure_index, load_folder
from targetkl.checkpoints import latest_checkpoint, load_tensors
from targetkl.train.trainer import Trainer, TrainingError

SMALL = ["train.batch_size=2", "model.encoder_dim=4", "model.decoder_dim=8", "model.latent_dim=4",
         "loss.mel_windows=[128,256]", "loss.stft_windows=[256]", "rate.free_steps=0", "rate.warmup_steps=0",
         "rate.calibrate_clips=2", "rate.trim_clips=4"]


def _sets(values: list[str]) -> list[str]:
    return [word for value in values for word in ("--set", value)]


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("outputs") / "run"
    assert main(["train", "--data", str(small_corpus), "--out", str(run), "--steps", "2", "-q", *_sets(SMALL)]) == 0
    return run


def _tone(path: Path, seconds: float = 0.5, frequency: float = 330.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * frequency * t), 16000)
    return path


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("command", ["decode", "decompress"])
def test_a_failing_decode_leaves_the_file_already_there_whole(trained, tmp_path, monkeypatch, capsys, command):
    from targetkl.inference import CodecRunner

    source = _tone(tmp_path / "in.wav", 65.0)  # three 30 s chunks: the failure comes after the first is written
    coded = tmp_path / ("in.safetensors" if command == "decode" else "in.tkl")
    assert main(["encode" if command == "decode" else "compress", str(trained), str(source), str(coded)]) == 0
    out = tmp_path / "out.wav"
    assert main([command, str(trained), str(coded), str(out)]) == 0
    before = out.read_bytes()
    real = CodecRunner.decode_pieces

    def fails_midway(self, *args, **kwargs):
        for number, piece in enumerate(real(self, *args, **kwargs)):
            yield piece
            if number == 0:
                raise OSError(5, "Input/output error")

    monkeypatch.setattr(CodecRunner, "decode_pieces", fails_midway)
    assert main([command, str(trained), str(coded), str(out)]) == 2
    assert out.read_bytes() == before and _leftovers(tmp_path) == []


def test_export_is_whole_or_absent_and_never_lands_on_other_files(trained, small_corpus, tmp_path, capsys,
                                                                   monkeypatch):
    export = tmp_path / "export"
    args = ["export", str(trained), str(export), "--data", str(small_corpus), "--format", "safetensors"]
    assert main(args) == 0
    first = (export / "model.safetensors").read_bytes()
    assert main(args) == 0  # again into its own earlier export: replaced
    assert main(["export", str(trained), str(trained), "--data", str(small_corpus), "--format", "safetensors"]) == 2
    assert "not an export of" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["export", str(trained), str(tmp_path / "other"), "--data", str(small_corpus),
                 "--format", "safetensors"]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    import targetkl.export as export_module

    def disk_fails(tensors, path, *rest, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "save_file", disk_fails)
    assert main(args) == 2
    assert (export / "model.safetensors").read_bytes() == first and _leftovers(tmp_path) == []
    assert main(["export", str(trained), str(tmp_path / "fresh"), "--data", str(small_corpus),
                 "--format", "safetensors"]) == 2
    assert not (tmp_path / "fresh").exists() and _leftovers(tmp_path) == []


def test_written_files_get_the_permissions_of_the_umask(trained, small_corpus, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        export = tmp_path / "export"
        assert main(["export", str(trained), str(export), "--data", str(small_corpus), "--format", "safetensors"]) == 0
        source = _tone(tmp_path / "in.wav")
        assert main(["encode", str(trained), str(source), str(tmp_path / "z.safetensors")]) == 0
        assert main(["decode", str(trained), str(tmp_path / "z.safetensors"), str(tmp_path / "out.wav")]) == 0
        assert main(["eval", str(trained), "--data", str(small_corpus), "--fast", "-q", "--json",
                     str(tmp_path / "eval.json")]) == 0
    finally:
        os.umask(old)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(export) == 0o755 and mode(latest_checkpoint(trained)) == 0o755
    for path in [*export.iterdir(), tmp_path / "z.safetensors", tmp_path / "out.wav", tmp_path / "eval.json"]:
        assert mode(path) == 0o644, path


def test_bad_export_settings_and_stats_and_latents_are_refused(trained, small_corpus, tmp_path, capsys):
    import targetkl
    from targetkl.api import LoadError

    for count in ("0", "-3"):
        assert main(["export", str(trained), str(tmp_path / f"e{count}"), "--data", str(small_corpus),
                     "--format", "safetensors", "--stats-clips", count]) == 2
        assert "--stats-clips" in capsys.readouterr().err
    export = tmp_path / "export"
    assert main(["export", str(trained), str(export), "--data", str(small_corpus), "--format", "safetensors"]) == 0
    info = json.loads((export / "targetkl.json").read_text())
    for broken in ({**info["latent_stats"], "std": [float("nan")] * 4}, {**info["latent_stats"], "mean": [0.0] * 3},
                   {**info["latent_stats"], "std": [0.0] * 4}):
        (export / "targetkl.json").write_text(json.dumps({**info, "latent_stats": broken}))
        with pytest.raises(LoadError, match="latent_stats"):
            targetkl.load(export)
    for text in ("not json", "[1, 2]", json.dumps({**info, "config": None})):
        (export / "targetkl.json").write_text(text)
        with pytest.raises(LoadError, match="targetkl.json"):
            targetkl.load(export)
    (export / "targetkl.json").write_text(json.dumps(info))
    weights = (export / "model.safetensors").read_bytes()
    (export / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(LoadError, match="model.safetensors"):
        targetkl.load(export)
    vae = targetkl.load(trained)
    with pytest.raises(ValueError, match="no samples"):
        vae.encode(np.zeros(0), 16000)
    with pytest.raises(ValueError, match="NaN"):
        vae.decode(torch.full((1, 4, 3), float("nan")))
    from safetensors.torch import load_file, save_file

    source = _tone(tmp_path / "in.wav")
    assert main(["encode", str(trained), str(source), str(tmp_path / "z.safetensors")]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "z.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(tmp_path / "z.safetensors"))
    tensors["latent"][0, 1] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=metadata)
    assert main(["decode", str(trained), str(tmp_path / "nan.safetensors"), str(tmp_path / "nan.wav")]) == 2
    assert "NaN" in capsys.readouterr().err and not (tmp_path / "nan.wav").exists()


def test_huge_or_negative_sizes_are_refused_before_anything_is_allocated(small_corpus, tmp_path, capsys):
    for assignment in ("model.latent_dim=1000000000", "model.decoder_dim=10000000", "model.strides=[2,-4,5,8]"):
        assert main(["train", "--data", str(small_corpus), "--out", str(tmp_path / "run"), "--steps", "1",
                     "--set", assignment]) == 2
        assert "model." in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_manifest_names_each_file_once_whatever_its_spelling(tmp_path, caplog):
    (tmp_path / "audio").mkdir()
    for i in range(6):
        _tone(tmp_path / "audio" / f"a{i}.wav", frequency=200 + 50 * i)
    os.symlink(tmp_path / "audio" / "a0.wav", tmp_path / "audio" / "link.wav")
    spellings = ["audio/a0.wav", "./audio/a0.wav", str(tmp_path / "audio" / "a0.wav"), "audio/link.wav"]
    rows = [{"path": p} for p in spellings] + [{"path": f"audio/a{i}.wav"} for i in range(1, 6)]
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = ensure_index(manifest, progress=False)
    assert [e.path for e in index.entries] == [f"audio/a{i}.wav" for i in range(6)]
    assert "listed 4 times" in caplog.text
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"path": f"./audio/a{i}.wav"}) + "\n" for i in range(6)))
    for split in ("train", "held_out"):
        assert [c.path for c in load_folder(manifest, 16000, split, progress=False).clips] == \
            [c.path for c in load_folder(plain, 16000, split, progress=False).clips]


def test_a_caption_that_is_not_text_keeps_its_audio_and_nothing_usable_is_an_error(tmp_path, capsys, caplog):
    (tmp_path / "audio").mkdir()
    rows = []
    for i in range(20):
        _tone(tmp_path / "audio" / f"a{i}.wav", 0.1)
        rows.append({"path": f"audio/a{i}.wav", "caption": ["a", "list"], "label": 3})
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["index", str(manifest), "-q"]) == 0
    assert "20 files" in capsys.readouterr().out and "caption is not text" in caplog.text
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"path": "audio/missing.wav"}) + "\n")
    assert main(["index", str(broken), "-q"]) == 2
    assert "no usable audio" in capsys.readouterr().err


def test_csv_manifests_with_nul_bytes_or_huge_fields_are_one_line(tmp_path, capsys):
    _tone(tmp_path / "a.wav")
    (tmp_path / "nul.csv").write_bytes(b"path,caption\na.wav,fine\n\0b.wav,x\n")
    (tmp_path / "huge.csv").write_text("path,caption\n" + "a.wav," + "x" * 200_000 + "\n")
    assert main(["index", str(tmp_path / "nul.csv"), "-q"]) == 0
    assert "1 files" in capsys.readouterr().out
    assert main(["index", str(tmp_path / "huge.csv"), "-q"]) == 2
    assert "no usable audio" in capsys.readouterr().err


def test_a_fifo_in_a_manifest_is_skipped_not_read(tmp_path):
    _tone(tmp_path / "a.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "list.jsonl").write_text('{"path": "a.wav"}\n{"path": "pipe.wav"}\n')
    result = subprocess.run([sys.executable, "-m", "targetkl.cli", "index", str(tmp_path / "list.jsonl")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 files" in result.stdout and "pipe.wav: not a regular file" in result.stdout


def test_a_folder_named_grammar_jsgf_is_an_error(tmp_path):
    from targetkl.eval.asr import RecognizerError, recognizer_for

    (tmp_path / "corpus.json").write_text(json.dumps({"kind": "speech"}))
    (tmp_path / "grammar.jsgf").mkdir()
    with pytest.raises(RecognizerError, match="grammar.jsgf: not a file"):
        recognizer_for(tmp_path)


def test_espeak_that_hangs_or_prints_junk_is_one_line(tmp_path, monkeypatch):
    from targetkl.data import speech

    fake = tmp_path / "espeak-ng"
    for body, message in (("echo junk", "no WAV audio"), ("sleep 30", "did not answer")):
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
        monkeypatch.setattr(speech, "ESPEAK_TIMEOUT_SECONDS", 1)
        with pytest.raises(speech.SpeechToolError, match=message):
            speech.speak("bin blue at one now", "en-us", 160, 50, 16000)


@pytest.mark.parametrize("name", ["mps", "xpu", "meta", "cuda:3"])
def test_a_device_that_is_not_here_is_one_line(trained, small_corpus, name, capsys):
    assert main(["eval", str(trained), "--data", str(small_corpus), "--fast", "--device", name]) == 2
    assert f"--device {name}" in capsys.readouterr().err


def test_damaged_sweep_caches_are_computed_again_and_a_damaged_rd_json_is_one_line(small_corpus, tmp_path, capsys):
    from targetkl.eval.sweep import run_sweep

    quick = ["train.steps=2", "train.checkpoint_every=2", *SMALL]
    rows, _ = run_sweep(small_corpus, tmp_path / "sweep", [1.0], [], assignments=quick, perceptual=False,
                        progress=False)
    cache = tmp_path / "sweep" / "runs" / "vae-1kbps" / "sweep_eval.json"
    for text in ("[]", '"text"', "{broken", json.dumps({"system": "vae"})):
        cache.write_text(text)
        again, sweep = run_sweep(small_corpus, tmp_path / "sweep", [1.0], [], assignments=quick, perceptual=False,
                                 progress=False)
        assert sweep.trained == [] and again[0]["rate_kbps"] == pytest.approx(rows[0]["rate_kbps"])
    (tmp_path / "sweep" / "rd.json").write_text('{"not": "a list"}')
    assert main(["select", "--sweep", str(tmp_path / "sweep")]) == 2
    assert "rd.json" in capsys.readouterr().err


def _stop_at(trainer: Trainer, step: int) -> None:
    """Make ``trainer`` stop (as on SIGTERM, with a checkpoint) after ``step``."""
    real = trainer.calibration.calibrate

    def calibrate_then_maybe_stop(model, at_step):
        if trainer.step == step:
            trainer._stop_signal = signal.SIGTERM
        return real(model, at_step)

    trainer.calibration.calibrate = calibrate_then_maybe_stop


def test_files_that_vanish_during_a_run_are_skipped_and_resume_stays_exact(small_corpus, tmp_path, caplog):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus, corpus)
    config = quick_config(train={"steps": 6, "checkpoint_every": 2, "batch_size": 4})
    straight = Trainer(config, corpus, tmp_path / "straight", progress=False)
    gone = straight.train_set.entries[0]
    # it fails to read after indexing, as on a network file system: same size and time, so the index keeps it
    status = os.stat(gone.file)
    Path(gone.file).write_bytes(bytes(status.st_size))
    os.utime(gone.file, ns=(status.st_atime_ns, status.st_mtime_ns))
    straight.run()
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert max(row.get("data/bad_reads", 0) for row in rows) > 0
    assert sum(gone.path in r.getMessage() and "unreadable during training" in r.getMessage()
               for r in caplog.records) == 1
    stopped = Trainer(config, corpus, tmp_path / "stopped", progress=False)
    _stop_at(stopped, 3)
    assert stopped.run().interrupted
    Trainer(config, corpus, tmp_path / "stopped", progress=False).run()
    a = load_tensors(latest_checkpoint(tmp_path / "straight") / "model.safetensors")
    b = load_tensors(latest_checkpoint(tmp_path / "stopped") / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    many = Trainer(quick_config(train={"steps": 6, "batch_size": 4}, data={"max_bad_reads": 0.05}), corpus,
                   tmp_path / "many", progress=False)
    for entry in many.train_set.entries[1:4]:
        Path(entry.file).unlink()  # gone after indexing
    with pytest.raises(TrainingError, match="max_bad_reads"):
        many.run()
    assert latest_checkpoint(tmp_path / "many") is not None


@pytest.mark.parametrize("assignment", ["rate.free_steps=-1", "rate.trim_clips=-1", "data.segment_seconds=1e9",
                                        "train.lr=inf", "data.max_bad_reads=-1", "model.latent_dim=0"])
def test_values_that_cannot_work_are_one_line_before_training(small_corpus, tmp_path, capsys, assignment):
    assert main(["train", "--data", str(small_corpus), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--set", assignment]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and assignment.split("=")[0].split(".")[1] in error


@pytest.mark.parametrize("argv", [["eval", "RUN", "--data", "DATA", "--batch-size", "0"],
                                  ["sanity", "--bits", "-1"], ["generate", "GEN", "a bell", "x.wav", "--cfg", "nan"],
                                  ["sweep", "--data", "DATA", "--out", "SWEEP", "--kbps", "0"]])
def test_counts_and_numbers_out_of_range_are_refused_by_the_parser(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own one-line usage error
        code = stop.code
    assert code == 2 and "Traceback" not in capsys.readouterr().err


def test_running_out_of_memory_is_one_line(small_corpus, tmp_path, capsys, monkeypatch):
    def too_big(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Trainer, "run", too_big)
    assert main(["train", "--data", str(small_corpus), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert "error: out of memory; lower --batch-size" in capsys.readouterr().err


def test_generator_sizes_and_lengths_out_of_range_are_config_errors():
    from types import SimpleNamespace

    from targetkl.config import ConfigError
    from targetkl.gen.sample import frames_for
    from targetkl.gen.train import gen_config

    for assignment in ("width=0", "depth=0", "lr=inf", "cond_drop=1.5"):
        with pytest.raises(ConfigError):
            gen_config(assignments=[assignment])
    generator = SimpleNamespace(description={"frames": 50, "latents_info": {"frame_rate": 50.0}})
    assert frames_for(generator, 2.0) == 100
    for seconds in (0.0, 0.001, 1e6):
        with pytest.raises(ConfigError, match="--seconds"):
            frames_for(generator, seconds)


def test_export_into_a_folder_that_refuses_writes_is_one_line(trained, small_corpus, tmp_path, capsys, monkeypatch):
    import tempfile

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", refused)  # what a read-only folder answers (root ignores chmod)
    assert main(["export", str(trained), str(tmp_path / "export"), "--data", str(small_corpus),
                 "--format", "safetensors"]) == 2
    error = capsys.readouterr().err
    assert error == f"error: {tmp_path}: Permission denied\n" and not (tmp_path / "export").exists()
