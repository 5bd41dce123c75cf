"""A measurement must mean what it says: short runs still control their rate, a rate that misses its target is
flagged wherever it is reported, and every path in a cache or result file names the same file from any
working folder."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from targetkl import rate
from targetkl.cli import main
from targetkl.config import resolve
from targetkl.data import ensure_index, load_folder
from targetkl.models.codec import build_codec

SMALL = ["model.encoder_dim=4", "model.decoder_dim=16", "model.latent_dim=8", "loss.mel_windows=[128,256]",
         "loss.stft_windows=[256]", "train.batch_size=4", "train.log_every=10", "rate.calibrate_clips=8"]


def _sets(values: list[str]) -> list[str]:
    return [word for value in values for word in ("--set", value)]


@pytest.mark.parametrize("steps, accum, free, warmup, expected", [
    (1000, 1, 300, 200, (300, 200)),  # the tiny preset's own run: half of it free start and warmup, unchanged
    (200, 1, 300, 200, (60, 40)),     # a short run: both scaled to half of it, in proportion
    (200, 2, 300, 200, (120, 80)),    # counted in training forwards (steps x micro-batches)
    (30, 1, 0, 0, (0, 0)),
    (1, 1, 300, 200, (0, 0)),
])
def test_the_free_start_and_warmup_fit_into_half_a_run(steps, accum, free, warmup, expected):
    config = resolve("tiny", assignments=[f"train.steps={steps}", f"train.grad_accum={accum}",
                                          f"rate.free_steps={free}", f"rate.warmup_steps={warmup}"])
    assert config.rate_schedule() == expected
    assert (config.rate.free_steps, config.rate.warmup_steps) == (free, warmup)  # the config keeps what was asked
    controller = build_codec(config).bottleneck.controller
    assert (controller.free_steps, controller.warmup_steps) == expected
    rvq = build_codec(resolve("tiny", assignments=[f"train.steps={steps}", f"train.grad_accum={accum}",
                                                   f"rate.free_steps={free}", f"rate.warmup_steps={warmup}",
                                                   "model.bottleneck=rvq"])).bottleneck
    assert (rvq.free_steps, rvq.warmup_steps) == expected


def test_a_short_run_with_the_presets_schedule_lands_on_its_target(small_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_corpus), "--out", str(run), "--steps", "60", "--target-kbps", "1",
                 "-q", *_sets(SMALL)]) == 0
    printed = capsys.readouterr().out
    held_out = [row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if row["split"] == "held_out"][-1]
    assert held_out["step"] == 60
    assert held_out["rate_kbps"] == pytest.approx(1.0, rel=rate.OFF_TARGET_PERCENT / 100)
    assert f"held-out rate {held_out['rate_kbps']:.4f} kbps (target 1 kbps" in printed
    assert "OFF TARGET" not in printed


def test_a_rate_that_misses_its_target_is_flagged(small_corpus, tmp_path, capsys, caplog):
    run = tmp_path / "missed"
    # four steps, no calibration and no trim: nothing brings the rate to 4 kbps
    assert main(["train", "--data", str(small_corpus), "--out", str(run), "--steps", "4", "--target-kbps", "4",
                 "-q", *_sets(SMALL + ["rate.calibrate_every=0", "rate.trim_clips=0", "rate.free_steps=0",
                                       "rate.warmup_steps=0"])]) == 0
    assert "OFF TARGET" in capsys.readouterr().out
    assert any("off target" in record.getMessage() for record in caplog.records)
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--data", str(small_corpus), "--fast", "-q", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["off_target"] is True
    assert abs(result["rate_error_percent"]) > rate.OFF_TARGET_PERCENT
    assert "warning: off target" in capsys.readouterr().out


@pytest.mark.parametrize("measured, target, flagged", [(1.049, 1.0, False), (1.051, 1.0, True), (0.94, 1.0, True),
                                                        (3.0, None, False), (None, 1.0, False)])
def test_off_target_means_more_than_five_percent_away(measured, target, flagged):
    assert rate.off_target(measured, target) is flagged


def _tones(folder: Path, frequency: float) -> None:
    folder.mkdir(parents=True)
    t = np.arange(8000) / 16000
    for i in range(4):
        sf.write(folder / f"clip{i}.wav", 0.3 * np.sin(2 * np.pi * (frequency + 10 * i) * t), 16000)


def test_the_index_names_the_same_files_from_any_working_folder(tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    _tones(first / "corpus", 220.0)
    _tones(second / "corpus", 880.0)  # the same names, other sounds
    monkeypatch.chdir(first)
    relative = ensure_index("corpus", progress=False)
    assert all(Path(e.file).is_absolute() and Path(e.file).is_relative_to(first) for e in relative.entries)
    expected = [clip.audio for clip in load_folder("corpus", 16000, "all", progress=False).clips]
    monkeypatch.chdir(second)
    absolute = ensure_index(str(first / "corpus"), progress=False)
    assert absolute.cache_file == relative.cache_file
    assert all(Path(e.file).is_relative_to(first) for e in absolute.entries)
    for clip, audio in zip(load_folder(first / "corpus", 16000, "all", progress=False).clips, expected):
        assert np.array_equal(clip.audio, audio)
    # the same-named folder here is another source, with a cache of its own
    assert ensure_index("corpus", progress=False).cache_file != relative.cache_file
    assert main(["index", str(first / "corpus"), "-q"]) == 0
    assert "4 files" in capsys.readouterr().out


def test_shard_members_are_named_below_their_folder_however_the_pattern_is_spelled(tmp_path, monkeypatch):
    _tones(tmp_path / "audio", 300.0)
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "train-000000.tar", "w") as tar:
        for i in range(4):
            tar.add(tmp_path / "audio" / f"clip{i}.wav", arcname=f"{i:06d}.wav")
    monkeypatch.chdir(tmp_path)
    relative = ensure_index("shards/train-{000000..000000}.tar", progress=False)
    absolute = ensure_index(str(tmp_path / "shards" / "train-{000000..000000}.tar"), progress=False)
    assert [e.path for e in relative.entries] == [e.path for e in absolute.entries] == \
        [f"train-000000.tar#{i:06d}.wav" for i in range(4)]
    assert all(Path(e.file).is_absolute() for e in relative.entries)


def test_select_finds_the_sweeps_runs_from_an_older_relative_rd_json(tmp_path, monkeypatch):
    from targetkl.gen.select import vae_rows

    sweep = tmp_path / "sweep"
    (sweep / "runs" / "vae-2kbps").mkdir(parents=True)
    (sweep / "rd.json").write_text(json.dumps([{"system": "vae", "label": "2kbps", "rate_kbps": 2.0,
                                                "run": "elsewhere/runs/vae-2kbps"}]))
    monkeypatch.chdir(tmp_path)
    assert vae_rows(Path("sweep"))[0]["run"] == str(sweep / "runs" / "vae-2kbps")


def test_sweep_rows_name_absolute_paths_and_flag_missed_targets(small_corpus, tmp_path, monkeypatch):
    from targetkl.eval.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    quick = ["train.steps=3", "train.batch_size=2", "train.checkpoint_every=3", "model.encoder_dim=4",
             "model.decoder_dim=8", "loss.mel_windows=[128,256]", "loss.stft_windows=[256]", "rate.trim_clips=0"]
    rows, _ = run_sweep(small_corpus, "sweep", [4.0], [], assignments=quick, perceptual=False, progress=False)
    for row in json.loads((tmp_path / "sweep" / "rd.json").read_text()):
        assert Path(row["run"]).is_absolute() and Path(row["run"]).is_dir()
        assert row["audio"] and all(Path(p).is_absolute() and Path(p).is_file() for p in row["audio"])
        assert row["off_target"] == (abs(row["rate_error_percent"]) > rate.OFF_TARGET_PERCENT)
    assert any(row["off_target"] for row in rows)  # three steps do not reach 4 kbps
    with open(tmp_path / "sweep" / "rd.csv") as handle:
        assert {row["off_target"] for row in csv.DictReader(handle)} <= {"True", "False"}
    assert "<th>off_target</th>" in (tmp_path / "sweep" / "report.html").read_text()
