"""The rate-distortion sweep: bitrate accounting of every baseline, resuming, and the report files."""

import csv
import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import chromium_dom, chromium_flags
from targetkl.config import resolve
from targetkl.cli import main as main_cli
from targetkl.eval.sweep import SweepError, architecture_flags, plan_sweep, run_sweep, rvq_layout
from targetkl.models.codec import build_codec

QUICK = ["train.steps=3", "train.batch_size=2", "train.checkpoint_every=2", "train.warmup_steps=1",
         "model.encoder_dim=4", "model.decoder_dim=8", "loss.mel_windows=[128,256]", "loss.stft_windows=[256]"]


@pytest.mark.parametrize("kbps, layout", [(0.5, (1, 1024)), (2.0, (4, 1024)), (8.0, (16, 1024)), (1.2, (3, 256)),
                                          (0.45, (1, 512)), (0.05, (1, 2))])
def test_rvq_layout_spends_exactly_the_target(kbps, layout):
    assert rvq_layout(kbps, 50.0) == layout
    codebooks, size = layout
    assert codebooks * np.log2(size) * 50.0 / 1000 == pytest.approx(kbps)


def test_rvq_model_built_from_the_plan_reports_the_target_rate():
    points = plan_sweep([1.0, 4.0], ["rvq"], 50.0)
    for point in [p for p in points if p.system == "rvq"]:
        config = resolve("tiny", flags=point.flags)
        model = build_codec(config).eval()
        with torch.no_grad():
            encoded = model.encode(torch.zeros(1, 1, 3200))
        measured = float(encoded.bits_per_frame.mean()) * config.model.frame_rate / 1000
        assert measured == pytest.approx(point.target_kbps)


def test_rate_no_codebook_layout_can_spend_is_refused():
    with pytest.raises(SweepError, match="whole number of bits per frame"):
        rvq_layout(0.33, 50.0)


def test_plan_lists_each_system_with_its_own_knob():
    points = plan_sweep([0.5, 2.0], ["rvq", "beta", "ae", "opus", "codec2"], 50.0, betas=(1e-3, 1e-1), ae_widths=(4,))
    names = [p.name for p in points]
    assert names[:4] == ["vae-0.5kbps", "vae-2kbps", "rvq-0.5kbps", "rvq-2kbps"]
    assert "beta-0.001" in names and "ae-width4" in names and "opus-6" in names and "codec2-700C" in names
    beta = next(p for p in points if p.name == "beta-0.1")
    assert beta.target_kbps is None and beta.flags["rate.controller"] == "fixed"
    assert beta.flags["rate.fixed.beta"] == 0.1
    assert next(p for p in points if p.name == "codec2-1300").target_kbps == pytest.approx(1.3)
    with pytest.raises(SweepError, match="unknown baseline flac"):
        plan_sweep([1.0], ["flac"], 50.0)
    with pytest.raises(SweepError, match="positive bitrates"):
        plan_sweep([0.0], [], 50.0)


@pytest.fixture(scope="module")
def small_sweep(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    rows, sweep = run_sweep(small_corpus, out, [1.0], ["rvq", "beta", "ae", "codec2"], assignments=QUICK,
                            betas=(1e-2,), ae_widths=(4,), perceptual=False, progress=False)
    return out, rows, sweep


def test_sweep_writes_rows_for_every_system(small_sweep):
    out, rows, sweep = small_sweep
    assert sorted(sweep.trained) == ["ae-width4", "beta-0.01", "rvq-1kbps", "vae-1kbps"]
    by_name = {f"{r['system']}-{r['label']}": r for r in rows}
    assert by_name["rvq-1kbps"]["rate_kbps"] == pytest.approx(1.0)
    assert by_name["ae-width4"]["rate_kbps"] is None
    assert by_name["ae-width4"]["latent_values_per_second"] == pytest.approx(4 * 50.0)
    assert by_name["beta-0.01"]["target_kbps"] is None and by_name["beta-0.01"]["rate_kbps"] > 0
    tkl = by_name["tkl-1kbps"]
    assert tkl["run"] == by_name["vae-1kbps"]["run"] and 0 < tkl["rate_kbps"] < tkl["file_kbps"]
    # 12 whole 40 ms frames per 0.5 s clip
    assert by_name["codec2-1300"]["rate_kbps"] == pytest.approx(8 * 7 * 12 / 0.5 / 1000)
    saved = json.loads((out / "rd.json").read_text())
    assert [r["system"] for r in saved] == [r["system"] for r in rows]
    for row in saved:
        assert {"system", "target_kbps", "rate_kbps", "mel_distance", "stft_distance", "si_sdr"} <= row.keys()
    with open(out / "rd.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) and table[0]["system"] == "vae"
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Plain autoencoders" in (out / "report.html").read_text()


def test_resumed_sweep_retrains_nothing_and_extends_only_new_points(small_sweep, small_corpus):
    out, rows, _ = small_sweep
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoints/*/model.safetensors")}
    again, sweep = run_sweep(small_corpus, out, [1.0], ["rvq", "beta", "ae", "codec2"], assignments=QUICK,
                             betas=(1e-2,), ae_widths=(4,), perceptual=False, progress=False)
    assert sweep.trained == []
    assert [r["rate_kbps"] for r in again] == [r["rate_kbps"] for r in rows]
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoints/*/model.safetensors")}
    extended, sweep = run_sweep(small_corpus, out, [1.0, 2.0], ["rvq"], assignments=QUICK, perceptual=False,
                                progress=False)
    assert sorted(sweep.trained) == ["rvq-2kbps", "vae-2kbps"]
    assert [f"{r['system']}-{r['label']}" for r in extended] == ["vae-1kbps", "tkl-1kbps", "vae-2kbps", "tkl-2kbps",
                                                                  "rvq-1kbps", "rvq-2kbps"]


def test_every_trained_point_carries_its_latent_geometry(small_sweep, small_corpus):
    """rd.json/rd.csv carry the geometry of every trained codec (targetkl.eval.geometry); a row cached before the
    geometry existed gets it on the next run without retraining."""
    from targetkl.eval.geometry import GEOMETRY_COLUMNS, GEOMETRY_KEYS, SMOOTHNESS_LEVELS

    out, rows, _ = small_sweep
    by_name = {f"{r['system']}-{r['label']}": json.loads(json.dumps(r)) for r in rows}  # as rd.json has them
    for name in ("vae-1kbps", "rvq-1kbps", "beta-0.01", "ae-width4"):
        row = by_name[name]
        assert row["smoothness_curve"]["levels"] == list(SMOOTHNESS_LEVELS), name
        assert row["smoothness_slope"] > 0 and row["geometry_clips"] == 1, name  # this corpus holds one clip out
        assert math.isnan(row["interp_max_jump"]), name  # which leaves no pair to interpolate between
        assert row["latent_condition_number"] >= 1 and 1 <= row["latent_effective_dim"] <= 16, name
    assert 0 <= by_name["vae-1kbps"]["active_channels"] <= 16 and math.isnan(by_name["rvq-1kbps"]["active_channels"])
    assert "smoothness_slope" not in by_name["codec2-1300"] and "smoothness_slope" not in by_name["tkl-1kbps"]
    json.loads((out / "rd.json").read_text(), parse_constant=lambda name: pytest.fail(f"rd.json holds {name}"))
    header = (out / "rd.csv").read_text().splitlines()[0].split(",")
    assert set(GEOMETRY_KEYS) < set(GEOMETRY_COLUMNS) <= set(header)
    cache = out / "runs" / "vae-1kbps" / "sweep_eval.json"
    cached = json.loads(cache.read_text())
    old = {k: v for k, v in cached.items() if k not in GEOMETRY_COLUMNS and k != "smoothness_curve"}
    cache.write_text(json.dumps(old))
    again, sweep = run_sweep(small_corpus, out, [1.0], [], assignments=QUICK, perceptual=False, progress=False)
    assert sweep.trained == [] and again[0]["smoothness_slope"] == pytest.approx(cached["smoothness_slope"])


def test_interrupted_point_is_resumed_not_restarted(small_sweep, small_corpus):
    out, _, _ = small_sweep
    run = out / "runs" / "vae-1kbps"
    shutil.rmtree(run / "checkpoints" / "step-00000003")
    (run / "checkpoints" / "latest").write_text("step-00000002\n")
    (run / "sweep_eval.json").unlink()
    kept = run / "checkpoints" / "step-00000002" / "model.safetensors"
    stamp = kept.stat().st_mtime_ns
    _, sweep = run_sweep(small_corpus, out, [1.0], [], assignments=QUICK, perceptual=False, progress=False)
    assert sweep.trained == ["vae-1kbps"]
    assert kept.stat().st_mtime_ns == stamp
    assert (run / "checkpoints" / "step-00000003" / "model.safetensors").is_file()


def test_report_page_renders_in_headless_chromium_and_its_audio_decodes(small_sweep, tmp_path):
    out = small_sweep[0]
    rows = json.loads((out / "rd.json").read_text())
    page = out / "report.html"
    text = page.read_text()
    assert "rd.png" in text
    flags = chromium_flags()
    dom = chromium_dom(page)
    assert 'data-plot="loaded"' in dom and 'data-plots="2"' in dom  # rd.png and geometry.png
    assert "<h2>Latent geometry</h2>" in text and (out / "geometry.png").is_file()
    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (1600, 1200)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::97], axis=0)) > 20
    sources = [s.split('"')[0] for s in text.split('<audio controls preload="metadata" src="')[1:]]
    assert len(sources) == len(rows[0]["audio"]) * (1 + len(rows)) > 0
    for source in sources:
        audio, rate = sf.read(str(out / source))
        assert rate == 16000 and len(audio) > 0


def test_a_stop_signal_stops_the_whole_sweep_and_keeps_the_checkpoint(small_corpus, tmp_path, monkeypatch, capsys):
    """SIGTERM during one point's training ends the sweep (exit 130) instead of evaluating a half-trained
    model and training the next point; running again continues from the checkpoint."""
    import signal

    from targetkl.cli import main
    from targetkl.train.trainer import Trainer

    original_step = Trainer.train_step

    def step_then_signal(self):
        scalars = original_step(self)
        self._on_signal(signal.SIGTERM, None)
        return scalars

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    args = ["sweep", "--data", str(small_corpus), "--out", str(tmp_path), "--kbps", "1,2", "--baselines", "", "--fast",
            "-q"]
    for assignment in QUICK:
        args += ["--set", assignment]
    assert main(args) == 130
    assert "interrupted at step 1" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["vae-1kbps"]
    assert (tmp_path / "runs" / "vae-1kbps" / "checkpoints" / "latest").read_text().strip() == "step-00000001"
    assert not (tmp_path / "rd.csv").exists()
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert main(args) == 0
    assert (tmp_path / "runs" / "vae-1kbps" / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    assert (tmp_path / "rd.csv").is_file()


def test_sweep_draws_a_target_kl_line_per_architecture(small_corpus, tmp_path):
    out = tmp_path / "arch"
    assert main_cli(["sweep", "--data", str(small_corpus), "--out", str(out), "--kbps", "1,2", "--baselines", "",
                     "--architectures", "dac,oobleck", "--fast", "-q", *[f"--set={a}" for a in QUICK]]) == 0
    rows = json.loads((out / "rd.json").read_text())
    lines = {row["system"]: [] for row in rows}
    for row in rows:
        lines[row["system"]].append(row["target_kbps"])
    assert lines == {"vae": [1.0, 2.0], "tkl": [1.0, 2.0], "vae-oobleck": [1.0, 2.0]}
    oobleck = json.loads((out / "runs" / "vae-oobleck-1kbps" / "config.json").read_text())["model"]
    assert oobleck["architecture"] == "oobleck" and oobleck["strides"] == [2, 4, 4, 10]
    assert "target-KL VAE, Oobleck" in (out / "report.html").read_text()
    with pytest.raises(SweepError, match="no oobleck counterpart"):
        architecture_flags("base-24k", "oobleck")


def test_listen_writes_a_test_page_for_a_real_sweep(small_sweep, tmp_path):
    from targetkl.cli import main

    out = small_sweep[0]  # other tests of this module rewrite its rd.json: read what it holds now
    points = [r for r in json.loads((out / "rd.json").read_text()) if r["system"] == "vae" and r.get("audio")]
    assert main(["listen", str(out), "--out", str(tmp_path / "test"), "--systems", "vae"]) == 0
    test = json.loads((tmp_path / "test" / "test.json").read_text())
    assert [(s["system"], s["label"]) for s in test["stimuli"]] == [
        ("reference", ""), ("anchor", "low-pass 3.5 kHz"), *[("vae", r["label"]) for r in points]]
    assert test["sweep"] == str(out.resolve()) and test["clips"] == len(json.loads((out / "sweep.json").read_text())
                                                                          ["originals"])
    page = (tmp_path / "test" / "index.html").read_text()
    assert page.count("data:audio/wav;base64,") == test["clips"] * (1 + len(test["stimuli"]))


def test_a_target_the_codec_cannot_carry_fails_before_any_point_trains(small_corpus, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main_cli(["sweep", "--data", str(small_corpus), "--out", str(out), "--kbps", "1,16", "--baselines", "",
                     "--set", "train.steps=2", "--fast", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "rate.target_kbps=16.0 is above what" in error
    assert not (out / "runs").exists()  # the 1 kbps point did not train first
