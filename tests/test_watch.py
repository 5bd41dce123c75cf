"""TensorBoard media read back from the event file, and the Python API's posterior, rate and .tkl bytes
against the CLI's numbers on the same clip."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import quick_config
from targetkl.checkpoints import latest_checkpoint
from targetkl.train.trainer import Trainer


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0, "images": 0,
                                                                            "histograms": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def watched_run(small_corpus, tmp_path_factory):
    """4 steps, checkpoints at 2 and 4, 2 held-out clips logged; then resumed to 6."""
    run = tmp_path_factory.mktemp("watched") / "run"
    Trainer(quick_config(train={"log_audio_clips": 2}), small_corpus, run, progress=False).run()
    Trainer(quick_config(train={"log_audio_clips": 2, "steps": 6}), small_corpus, run, progress=False).run()
    return run


def test_tensorboard_holds_audio_spectrograms_histograms_and_the_rate_chart(watched_run):
    events = _events(watched_run)
    tags = events.Tags()
    # 2 asked for, and the small corpus holds out 1 clip
    assert sorted(t for t in tags["tensors"] if t.startswith("audio/")) == ["audio/clip0/input",
                                                                           "audio/clip0/reconstruction"]
    steps = [e.step for e in events.Tensors("audio/clip0/reconstruction")]
    assert steps == [0, 2, 4, 6]  # step 0, every checkpoint, and the resumed run's checkpoint
    import io

    proto = events.Tensors("audio/clip0/reconstruction")[-1].tensor_proto
    wav, caption = proto.string_val
    audio, rate = sf.read(io.BytesIO(wav))
    assert rate == 16000 and len(audio) == 8000  # the 0.5 s clip, whole
    assert b"kbps" in caption and b"step 6" in caption and b"target" in caption
    texts = events.Tensors("caption/clip0/text_summary")
    assert [e.step for e in texts] == [0, 2, 4, 6] and texts[-1].tensor_proto.string_val[0] == caption
    assert "kbps" in events.SummaryMetadata("audio/clip0/reconstruction").summary_description
    inputs = [e.tensor_proto.string_val[0] for e in events.Tensors("audio/clip0/input")]
    assert len(set(inputs)) == 1  # the same clip at every checkpoint, also after the resume
    images = events.Images("spectrogram/clip0")
    assert [e.step for e in images] == [0, 2, 4, 6]
    assert images[-1].height == 80 and images[-1].width > 2 * 10
    histograms = {t for t in tags["histograms"]}
    assert {"latent/channel_mean", "latent/channel_std", "latent/posterior_std"} <= histograms
    assert events.Histograms("latent/channel_std")[-1].histogram_value.num == 8  # one value per latent channel
    assert {"held_out/rate_kbps", "held_out/target_kbps", "rate/kbps", "rate/target_kbps"} <= set(tags["scalars"])
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    chart = layout.category[0].chart[0]
    assert chart.multiline.tag == [r"^rate/kbps$", r"^rate/target_kbps$", r"^held_out/rate_kbps$",
                                   r"^held_out/target_kbps$"]


def test_logging_media_leaves_training_unchanged(small_corpus, tmp_path):
    for clips in (0, 3):
        Trainer(quick_config(train={"log_audio_clips": clips}), small_corpus, tmp_path / f"run{clips}",
                progress=False).run()
    from safetensors.torch import load_file

    a = load_file(latest_checkpoint(tmp_path / "run0") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "run3") / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "audio/clip0/input" not in _events(tmp_path / "run0").Tags()["tensors"]


def test_a_run_folder_carries_its_latent_statistics(watched_run):
    import targetkl

    stats = json.loads((watched_run / "latent_stats.json").read_text())
    assert stats["step"] == 6 and stats["clips"] >= 1 and len(stats["mean"]) == 8
    vae = targetkl.load(watched_run)
    assert vae.latent_mean.shape == (8,) and torch.all(vae.latent_std > 0)
    assert torch.allclose(vae.latent_std, torch.tensor(stats["std"]))


@pytest.fixture(scope="module")
def clip_file(watched_run, tmp_path_factory):
    """A 0.7 s clip at the model's rate, at a level away from the training loudness."""
    t = np.arange(11200) / 16000
    audio = 0.05 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * np.sin(2 * np.pi * 2000 * t)
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, audio.astype(np.float32), 16000, subtype="FLOAT")
    return path


def test_api_rate_and_bytes_match_the_cli(watched_run, clip_file, tmp_path):
    import targetkl

    vae = targetkl.load(watched_run)
    audio, sample_rate = sf.read(clip_file, dtype="float32")
    tkl = tmp_path / "clip.tkl"
    subprocess.run([sys.executable, "-m", "targetkl.cli", "compress", str(watched_run), str(clip_file), str(tkl),
                    "--json", str(tmp_path / "report.json")], capture_output=True, check=True)
    report = json.loads((tmp_path / "report.json").read_text())
    assert vae.rate(audio, sample_rate) == pytest.approx(report["kl_kbps"], rel=1e-4)
    data = vae.compress(audio, sample_rate)
    assert data == tkl.read_bytes()
    decoded = vae.decompress(data)
    out = tmp_path / "clip.wav"
    subprocess.run([sys.executable, "-m", "targetkl.cli", "decompress", str(watched_run), str(tkl), str(out)],
                   capture_output=True, check=True)
    cli_audio, _ = sf.read(out, dtype="float32")
    assert decoded.shape == (1, len(audio))
    assert np.abs(decoded[0].numpy() - cli_audio).max() < 2 / 32768  # the CLI's file is 16-bit


def test_api_posterior_gives_the_kl_that_rate_reports(watched_run, clip_file):
    import targetkl
    from targetkl.bottlenecks.gaussian import gaussian_kl_per_value

    vae = targetkl.load(watched_run)
    audio, sample_rate = sf.read(clip_file, dtype="float32")
    mean, std = vae.posterior(audio, sample_rate)
    assert mean.shape == std.shape == (1, 8, 35) and torch.all(std > 0)
    assert torch.allclose(mean, vae.encode(audio, sample_rate))
    nats = gaussian_kl_per_value(mean.double(), std.double()).sum(dim=1).mean()
    assert vae.rate(audio, sample_rate) == pytest.approx(float(nats) / np.log(2) * vae.frame_rate / 1000, rel=1e-3)
    with pytest.raises(ValueError, match="one clip at a time"):
        vae.compress(np.stack([audio, audio])[:, None], sample_rate)
