"""Stereo codecs (``model.audio_channels = 2``): the data path, training, evaluation, files, export and the API."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

import targetkl
from targetkl.cli import main

STEREO = ["--preset", "oobleck-tiny", "--steps", "3", "--batch-size", "2", "--set", "train.checkpoint_every=3",
          "--set", "rate.free_steps=0", "--set", "rate.warmup_steps=0", "--set", "model.audio_channels=2",
          "--set", "rate.calibrate_clips=2", "--set", "rate.calibrate_seconds=0.3"]


@pytest.fixture(scope="module")
def stereo_corpus(tmp_path_factory):
    from targetkl.data.corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("stereo_corpus"), clips=12, seconds=0.5, channels=2, progress=False)


@pytest.fixture(scope="module")
def stereo_run(stereo_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("stereo") / "run"
    assert main(["train", "--data", str(stereo_corpus), "--out", str(run), *STEREO, "-q"]) == 0
    return run


def test_the_stereo_corpus_pans_each_clip_and_keeps_the_mono_sound():
    from targetkl.data.corpus import pan_stereo, synthesize_clip

    mono, _, _ = synthesize_clip(0, 3, 0.5, 16000, float("inf"))
    stereo = pan_stereo(mono, 0, 3, 16000)
    assert stereo.shape == (2, len(mono))
    left, right = np.sum(stereo.astype(np.float64) ** 2, axis=1)
    assert left + right == pytest.approx(np.sum(mono.astype(np.float64) ** 2), rel=1e-3)  # constant power
    assert not np.allclose(stereo[0], stereo[1])


def test_windows_crops_and_clips_have_the_models_channels(stereo_corpus, small_corpus):
    from targetkl.data.audio import fit_channels, load_folder, random_crops

    two = load_folder(stereo_corpus, 16000, "all", progress=False, channels=2)
    one = load_folder(stereo_corpus, 16000, "all", progress=False)
    assert two.read(0, 100, 800).shape == (2, 800) and one.read(0, 100, 800).shape == (800,)
    np.testing.assert_allclose(two.read(0, 100, 800).mean(axis=0), one.read(0, 100, 800), atol=1e-6)
    assert two.clip(0).audio.shape == (2, two.length(0))
    assert random_crops(two, 3, 640, seed=0, step=0).shape == (3, 2, 640)
    from_mono = load_folder(small_corpus, 16000, "all", progress=False, channels=2).read(0, 0, 400)
    assert np.array_equal(from_mono[0], from_mono[1])  # a mono file fills both channels
    assert np.array_equal(random_crops(one, 3, 640, 0, 0), random_crops(
        load_folder(stereo_corpus, 16000, "all", progress=False, channels=1), 3, 640, 0, 0))
    frames = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert fit_channels(frames, 2).tolist() == frames[:, :2].tolist()  # the first channels of a wider file
    assert fit_channels(frames, 1).tolist() == frames.mean(axis=1).tolist()


def test_a_stereo_codec_trains_evaluates_and_measures_every_channel(stereo_run, stereo_corpus, tmp_path, capsys):
    from targetkl.eval.metrics import clip_metrics
    from targetkl.runs import load_run

    config = json.loads((stereo_run / "config.json").read_text())
    assert config["model"]["audio_channels"] == 2
    loaded = load_run(stereo_run, "cpu")
    assert loaded.model.encoder.conv1.in_channels == 2 and loaded.model.decoder.conv2.out_channels == 2
    assert main(["eval", str(stereo_run), "--data", str(stereo_corpus), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["rate_kbps"] > 0 and np.isfinite(result["mel_distance"])
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 8000)).astype(np.float32) * 0.1
    estimate = reference + rng.standard_normal((2, 8000)).astype(np.float32) * 0.01
    both = clip_metrics(reference, estimate, 16000, perceptual=False)
    each = [clip_metrics(reference[c], estimate[c], 16000, perceptual=False) for c in range(2)]
    for key in both:
        assert both[key] == pytest.approx((each[0][key] + each[1][key]) / 2)


def test_stereo_files_encode_decode_compress_and_decompress(stereo_run, stereo_corpus, tmp_path):
    source = sorted((stereo_corpus / "clips").glob("*.wav"))[0]
    frames = sf.info(source).frames
    assert main(["encode", str(stereo_run), str(source), str(tmp_path / "x.safetensors")]) == 0
    assert main(["decode", str(stereo_run), str(tmp_path / "x.safetensors"), str(tmp_path / "x.wav")]) == 0
    audio, rate = sf.read(tmp_path / "x.wav")
    assert audio.shape == (frames, 2) and rate == 16000
    assert main(["compress", str(stereo_run), str(source), str(tmp_path / "x.tkl")]) == 0
    assert main(["decompress", str(stereo_run), str(tmp_path / "x.tkl"), str(tmp_path / "y.wav")]) == 0
    assert sf.read(tmp_path / "y.wav")[0].shape == (frames, 2)


def test_the_api_and_the_diffusers_export_are_stereo(stereo_run, stereo_corpus, tmp_path, caplog):
    import diffusers

    vae = targetkl.load(stereo_run)
    assert vae.audio_channels == 2
    torch.manual_seed(0)
    stereo = 0.1 * torch.randn(2, 2, 8 * vae.hop)
    z = vae.encode(stereo, sample_rate=vae.sample_rate, normalize=False)
    assert z.shape == (2, vae.latent_dim, 8) and vae.decode(z).shape == (2, 2, 8 * vae.hop)
    with torch.no_grad():
        expected = vae.model.encode(stereo).mean
    assert torch.allclose(z, expected)
    mono = 0.1 * torch.randn(8 * vae.hop)
    duplicated = vae.encode(mono, sample_rate=vae.sample_rate, normalize=False)
    assert torch.allclose(duplicated, vae.encode(mono.expand(2, -1), sample_rate=vae.sample_rate, normalize=False))
    out = tmp_path / "export"
    assert main(["export", str(stereo_run), str(out), "--data", str(stereo_corpus), "--format", "diffusers"]) == 0
    assert json.loads((out / "config.json").read_text())["audio_channels"] == 2
    with caplog.at_level(logging.WARNING):
        reference = diffusers.AutoencoderOobleck.from_pretrained(str(out)).eval()
    assert not [r for r in caplog.records if "missing" in r.getMessage().lower()]
    with torch.no_grad():
        assert torch.allclose(reference.encode(stereo).latent_dist.mean, expected, atol=1e-4)
        assert torch.allclose(reference.decode(z).sample, vae.decode(z), atol=1e-4)


def test_a_stereo_sweep_refuses_the_mono_classic_codecs(stereo_corpus, tmp_path, capsys):
    assert main(["sweep", "--data", str(stereo_corpus), "--out", str(tmp_path / "s"), "--kbps", "1",
                 "--baselines", "opus", "--preset", "oobleck-tiny", "--set", "model.audio_channels=2"]) == 2
    assert "classic codecs are run on mono audio" in capsys.readouterr().err


def test_a_dac_style_stereo_codec_trains_with_the_discriminators(stereo_corpus, tmp_path):
    from conftest import quick_config
    from targetkl.models.codec import build_codec
    from targetkl.models.discriminators import build_discriminator
    from targetkl.train.trainer import Trainer

    config = quick_config(model={"audio_channels": 2}, train={"steps": 2, "checkpoint_every": 2},
                          loss={"adversarial": True, "discriminators": ("mpd", "mrsd", "cqt"),
                                "discriminator_periods": (2, 3), "discriminator_stft_windows": (512,)})
    codec = build_codec(config)
    audio = torch.randn(3, 2, 4 * codec.hop)
    assert codec(audio)[0].shape == audio.shape
    discriminator = build_discriminator(config.loss, 16000)
    scores, _ = discriminator(audio)
    one_by_one, _ = discriminator(audio.reshape(6, 1, -1))
    assert all(torch.equal(a, b) for a, b in zip(scores, one_by_one))  # each channel judged as a clip
    result = Trainer(config, stereo_corpus, tmp_path / "dac", progress=False).run()
    assert result.step == 2 and np.isfinite(result.last_metrics["loss"])


def test_a_stereo_sweep_measures_the_tkl_rate_over_seconds_not_channels(stereo_corpus, tmp_path):
    from targetkl.eval.sweep import run_sweep

    rows, _ = run_sweep(stereo_corpus, tmp_path / "s", [1.0], [], preset="oobleck-tiny", perceptual=False,
                        progress=False, assignments=["model.audio_channels=2", "train.steps=2",
                                                     "train.checkpoint_every=2", "rate.calibrate_clips=2"])
    vae, tkl = (next(r for r in rows if r["system"] == name) for name in ("vae", "tkl"))
    assert 0 < tkl["rate_kbps"] < 3 * vae["rate_kbps"]  # the .tkl payload of the KL rate, not 2x-per-channel off
