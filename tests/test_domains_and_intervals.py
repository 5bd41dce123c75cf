"""Every aggregate carries a 95% bootstrap interval over clips, and a source whose clips carry a ``domain`` gets
every metric per domain too: in ``eval``, in a sweep's rd.csv/rd.json/report and plot. The real-recordings corpus
script is checked on a small package it is handed."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from targetkl.cli import main
from targetkl.eval.metrics import aggregate_metrics

SMALL = ["train.batch_size=2", "model.encoder_dim=4", "model.decoder_dim=8", "model.latent_dim=4",
         "loss.mel_windows=[128,256]", "loss.stft_windows=[256]", "rate.free_steps=0", "rate.warmup_steps=0",
         "rate.calibrate_clips=2", "rate.trim_clips=4", "data.valid_percent=40"]


def test_intervals_hold_the_estimate_and_shrink_with_more_clips():
    rng = np.random.default_rng(1)
    few = aggregate_metrics([{"mel_distance": float(v)} for v in rng.normal(1.0, 0.2, 10)])
    many = aggregate_metrics([{"mel_distance": float(v)} for v in rng.normal(1.0, 0.2, 400)])
    for result in (few, many):
        assert result["mel_distance_lo"] < result["mel_distance"] < result["mel_distance_hi"]
    width = lambda r: r["mel_distance_hi"] - r["mel_distance_lo"]  # noqa: E731
    assert width(many) < 0.3 * width(few)  # about sqrt(10 / 400) = 0.16 of it
    assert width(many) == pytest.approx(2 * 1.96 * 0.2 / math.sqrt(400), rel=0.25)  # the normal approximation
    same = [{"mel_distance": float(v)} for v in np.linspace(0.5, 1.5, 10)]
    assert aggregate_metrics(same) == aggregate_metrics(same)  # the same clips, the same interval
    assert aggregate_metrics([{"mel_distance": 1.0}, {"mel_distance": 3.0}])["mel_distance_lo"] == 1.0
    assert math.isnan(aggregate_metrics([{"mel_distance": 1.0}])["mel_distance_lo"])  # none with one clip
    pooled = aggregate_metrics([{"wer_edits": 1, "wer_words": 4}, {"wer_edits": 3, "wer_words": 4}])
    assert pooled["wer"] == 0.5 and pooled["wer_lo"] == 0.25 and pooled["wer_hi"] == 0.75


@pytest.fixture(scope="module")
def domain_corpus(tmp_path_factory):
    from targetkl.data.corpus import write_corpus

    folder = write_corpus(tmp_path_factory.mktemp("domains"), clips=24, seconds=0.5, progress=False)
    lines = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    for number, line in enumerate(lines):
        line["domain"] = "music" if number % 2 else "effects"
    (folder / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_eval_reports_each_domain_with_intervals(domain_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(domain_corpus), "--out", str(run), "--steps", "2", "-q",
                 *[w for s in SMALL for w in ("--set", s)]]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--data", str(domain_corpus), "--fast", "-q", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["by_domain"]) == {"music", "effects"}
    assert sum(d["clips"] for d in result["by_domain"].values()) == result["clips"]
    for values in (result, *result["by_domain"].values()):
        assert values["rate_kbps_lo"] <= values["rate_kbps"] <= values["rate_kbps_hi"]
        assert values["mel_distance_lo"] <= values["mel_distance"] <= values["mel_distance_hi"]
    assert "music (" in printed and "effects (" in printed and "95% bootstrap interval" in printed


def test_a_sweep_writes_a_row_per_domain_and_error_bars(domain_corpus, tmp_path):
    from targetkl.eval.sweep import run_sweep
    from targetkl.gen.select import vae_rows

    quick = ["train.steps=2", "train.checkpoint_every=2", *SMALL]
    run_sweep(domain_corpus, tmp_path / "sweep", [1.0], ["codec2"], assignments=quick, perceptual=False,
              progress=False)
    with open(tmp_path / "sweep" / "rd.csv") as handle:
        table = list(csv.DictReader(handle))
    assert {(r["system"], r["domain"]) for r in table} >= {("vae", "all"), ("vae", "music"), ("vae", "effects"),
                                                          ("codec2", "all"), ("codec2", "music"), ("tkl", "effects")}
    for row in table:
        assert float(row["mel_distance_lo"]) <= float(row["mel_distance"]) <= float(row["mel_distance_hi"]), row
        assert float(row["rate_kbps_lo"]) <= float(row["rate_kbps"]) <= float(row["rate_kbps_hi"]), row
    saved = json.loads((tmp_path / "sweep" / "rd.json").read_text())
    assert [r["label"] for r in vae_rows(tmp_path / "sweep")] == ["1kbps"]  # the pooled row, not the domains'
    clips = {system: sum(r["clips"] for r in saved if r["system"] == system and r["label"] in ("1kbps", "1300")
                         and r["domain"] != "all") for system in ("vae", "tkl", "codec2")}
    assert len(set(clips.values())) == 1 and clips["vae"] >= 4  # every held-out clip in exactly one domain
    page = (tmp_path / "sweep" / "report.html").read_text()
    assert "Domain: music" in page and "Domain: effects" in page
    assert (tmp_path / "sweep" / "rd.png").read_bytes()[:4] == b"\x89PNG"


def _fake_package(folder: Path) -> Path:
    """A .deb laid out like hedgewars-data, with two tracks, two voice packs and two effects (short OGG files)."""
    root = folder / "package"
    data = root / "usr/share/games/hedgewars/Data"
    tone = 0.2 * np.sin(2 * np.pi * 330 * np.arange(8000) / 16000)
    for path in ("Music/Art.ogg", "Music/City.ogg", "Sounds/voices/Default/Amazing.ogg",
                 "Sounds/voices/HillBilly/Hello.ogg", "Sounds/CollectCrate.ogg", "Sounds/airmine_impact.ogg"):
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(data / path, tone, 16000, format="OGG", subtype="VORBIS")
    (root / "usr/share/doc/hedgewars-data").mkdir(parents=True)
    (root / "usr/share/doc/hedgewars-data/copyright").write_text("licenses of the game data\n")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text("Package: hedgewars-data\nVersion: 1.0-test\nArchitecture: all\n"
                                         "Maintainer: test <test@example.org>\nDescription: fake\n")
    deb = folder / "hedgewars-data_1.0-test_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb builds the package")
def test_the_real_corpus_script_lays_out_three_domains(tmp_path):
    deb = _fake_package(tmp_path)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "real_corpus.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "real"), "--deb", str(deb)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == {"music": 2, "speech": 2, "effects": 2}
    rows = [json.loads(line) for line in (tmp_path / "real" / "captions.jsonl").read_text().splitlines()]
    by_path = {row["path"]: row for row in rows}
    assert by_path["speech/HillBilly/Hello.ogg"] == {"path": "speech/HillBilly/Hello.ogg", "label": "HillBilly",
                                                     "caption": "hill billy voice saying hello", "domain": "speech"}
    assert by_path["effects/CollectCrate.ogg"]["caption"] == "sound effect, collect crate"
    assert (tmp_path / "real" / "copyright").read_text() == "licenses of the game data\n"
    from targetkl.data import load_folder

    clips = load_folder(tmp_path / "real", 16000, "all", progress=False).clips
    assert sorted(clip.domain for clip in clips) == ["effects", "effects", "music", "music", "speech", "speech"]
    broken = tmp_path / "broken.deb"
    broken.write_bytes(b"not a package")
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "other"), "--deb", str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_perceptual_metrics_of_a_long_clip_score_bounded_windows(monkeypatch):
    from targetkl.eval import metrics

    import dataclasses

    seen = []
    for metric, name in (("pesq", "pesq_score"), ("stoi", "stoi_score"), ("visqol", "visqol_score")):
        monkeypatch.setitem(metrics.METRICS, metric, dataclasses.replace(
            metrics.METRICS[metric], score=lambda reference, estimate, rate, name=name: seen.append(
                (name, len(reference))) or (2.0 if name == "pesq_score" else math.nan)))
    rate = 16000
    long_clip = np.random.default_rng(0).normal(0, 0.1, 125 * rate).astype(np.float32)
    values = metrics.clip_metrics(long_clip, long_clip, rate, perceptual=True)
    assert [length for name, length in seen if name == "pesq_score"] == [10 * rate] * 3  # three windows of 10 s
    assert values["pesq"] == 2.0 and math.isnan(values["visqol"])  # the mean of the windows that scored
    assert metrics.perceptual_windows(25 * rate, rate) == [(0, 10 * rate), (15 * rate, 25 * rate)]
    assert metrics.perceptual_windows(3 * rate, rate) == [(0, 3 * rate)]


def test_one_tally_scores_the_clips_of_eval_and_of_the_sweep():
    """eval's measure and the sweep's classic and .tkl rows take clips one at a time through the same tally."""
    from targetkl import rate
    from targetkl.data.audio import AudioClip
    from targetkl.data.corpus import synthesize_clip
    from targetkl.eval.measure import ClipTally, latent_use
    from targetkl.eval.metrics import mel_distance

    audios = [synthesize_clip(0, index, 0.25, 16000)[0] for index in range(6)]
    clips = [AudioClip(f"{i}.wav", audio, domain="music" if i % 2 else "speech") for i, audio in enumerate(audios)]
    decodes = [0.5 * audio + 0.01 * np.roll(audio, 7) for audio in audios]
    tally = ClipTally(16000, neighbours=True)
    for index, (clip, decode) in enumerate(zip(clips, decodes)):
        tally.add(clip, decode, bits=1000.0 * (index + 1), span=0.25)
    summary = tally.summary(rate.bps_to_kbps)
    assert summary["rate_kbps"] == pytest.approx(21000.0 / 1.5 / 1000)
    assert summary["rate_kbps_lo"] < summary["rate_kbps"] < summary["rate_kbps_hi"]
    assert summary["mel_distance"] == pytest.approx(np.mean([mel_distance(a, d, 16000)
                                                             for a, d in zip(audios, decodes)]), rel=1e-6)
    assert summary["latent_use"] == pytest.approx(latent_use(audios, decodes, 16000))
    assert {domain: part["clips"] for domain, part in summary["by_domain"].items()} == {"music": 3, "speech": 3}
    assert summary["by_domain"]["music"]["rate_kbps"] == pytest.approx((2000 + 4000 + 6000) / 0.75 / 1000)
    assert "latent_use" not in ClipTally(16000).summary()  # only where the decodes come from a latent
