"""Oobleck codecs, export to diffusers and safetensors, and the Python API (``targetkl.load``)."""

import json
import logging

import numpy as np
import pytest
import torch

import targetkl
from targetkl.cli import main

OOBLECK = ["--preset", "oobleck-tiny", "--steps", "3", "--batch-size", "2", "--set", "train.checkpoint_every=3",
           "--set", "rate.free_steps=0", "--set", "rate.warmup_steps=0"]


@pytest.fixture(scope="module")
def oobleck_run(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("oobleck") / "run"
    assert main(["train", "--data", str(small_corpus), "--out", str(run), *OOBLECK, "-q"]) == 0
    return run


def test_oobleck_codec_shapes_and_preset():
    from targetkl.config import resolve
    from targetkl.models.codec import build_codec

    config = resolve("oobleck-44k")
    assert config.model.hop == 2048 and config.model.latent_dim == 64 and config.model.sample_rate == 44100
    small = resolve("oobleck-tiny")
    codec = build_codec(small).eval()
    audio = torch.randn(2, 1, 4 * small.model.hop)
    decoded, encoded = codec(audio)
    assert encoded.z.shape == (2, 16, 4) and decoded.shape == audio.shape


@pytest.mark.parametrize("bottleneck", ["rvq", "ae"])
def test_oobleck_trains_with_the_other_bottlenecks(bottleneck, small_corpus, tmp_path):
    run = tmp_path / bottleneck
    assert main(["train", "--data", str(small_corpus), "--out", str(run), *OOBLECK, "--bottleneck", bottleneck,
                 "--set", "model.rvq.codebooks=2", "-q"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics if row["split"] == "train"][-1] == 3


def test_diffusers_loads_the_export_and_agrees_on_encode_and_decode(oobleck_run, small_corpus, tmp_path, caplog):
    import diffusers
    out = tmp_path / "export"
    assert main(["export", str(oobleck_run), str(out), "--data", str(small_corpus), "--format", "diffusers"]) == 0
    with caplog.at_level(logging.WARNING):
        reference = diffusers.AutoencoderOobleck.from_pretrained(str(out)).eval()
    assert not [r for r in caplog.records if "missing" in r.getMessage().lower()
                or "unexpected" in r.getMessage().lower() or "not initialized" in r.getMessage().lower()]
    ours = targetkl.load(out)
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(2, 1, 8 * ours.hop)
    latents = torch.randn(2, ours.latent_dim, 8)
    with torch.no_grad():
        assert torch.allclose(reference.decode(latents).sample, ours.decode(latents), atol=1e-4)
        posterior = reference.encode(audio).latent_dist
        encoded = ours.model.encode(audio)
    assert torch.allclose(posterior.mean, encoded.mean, atol=1e-4)
    assert torch.allclose(posterior.std, encoded.std, atol=1e-4)
    info = json.loads((out / "targetkl.json").read_text())
    assert len(info["latent_stats"]["mean"]) == len(info["latent_stats"]["std"]) == ours.latent_dim
    assert info["latent_stats"]["clips"] > 0 and all(s > 0 for s in info["latent_stats"]["std"])
    assert info["rate_kbps"] > 0 and ours.rate_kbps == info["rate_kbps"]


def test_a_dac_run_refuses_the_diffusers_format(small_corpus, tmp_path, capsys):
    run = tmp_path / "dac"
    assert main(["train", "--data", str(small_corpus), "--out", str(run), "--steps", "1", "--batch-size", "2",
                 "--set", "model.decoder_dim=16", "-q"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "x"), "--data", str(small_corpus)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "oobleck-tiny" in error and "--format safetensors" in error
    out = tmp_path / "plain"
    assert main(["export", str(run), str(out), "--data", str(small_corpus), "--format", "safetensors"]) == 0
    from_run, from_export = targetkl.load(run), targetkl.load(out)
    audio = np.sin(np.arange(22050) / 22050 * 2 * np.pi * 440) * 0.3
    z_run, z_export = from_run.encode(audio, 22050), from_export.encode(audio, 22050)
    assert torch.equal(z_run, z_export) and z_run.shape == (1, 16, 50)  # 1 s at 16 kHz, hop 320 -> 50 frames
    assert torch.equal(from_run.decode(z_run), from_export.decode(z_export))


def test_load_round_trips_a_run_and_its_export_identically(oobleck_run, small_corpus, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(oobleck_run), str(out), "--data", str(small_corpus)]) == 0
    run, export = targetkl.load(oobleck_run), targetkl.load(out)
    assert (run.sample_rate, run.frame_rate, run.latent_dim) == (export.sample_rate, export.frame_rate, 16)
    stereo = np.random.default_rng(0).standard_normal((2, 2, 48000)) * 0.1  # (batch, channels, samples) at 48 kHz
    z_run, z_export = run.encode(stereo, 48000), export.encode(stereo, 48000)
    assert z_run.shape == (2, 16, 50) and torch.equal(z_run, z_export)
    assert torch.equal(run.decode(z_run), export.decode(z_export))
    assert run.decode(z_run).shape == (2, 1, 16000)
    drawn = export.encode(stereo, 48000, sample=True, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == z_export.shape and not torch.equal(drawn, z_export)
    assert export.latent_mean.shape == (16,)
    # the run measured its statistics on the same 27 training clips at its last checkpoint
    assert torch.allclose(run.latent_mean, export.latent_mean, atol=1e-5)
    assert torch.allclose(run.latent_std, export.latent_std, atol=1e-5)


def test_a_run_saved_before_the_architecture_setting_resumes(small_corpus, tmp_path):
    run = tmp_path / "old"
    args = ["train", "--data", str(small_corpus), "--out", str(run), "--batch-size", "2", "--set",
            "model.decoder_dim=16", "--set", "train.checkpoint_every=1", "-q"]
    assert main([*args, "--steps", "1"]) == 0
    saved = json.loads((run / "config.json").read_text())
    del saved["model"]["architecture"]
    del saved["model"]["oobleck"]
    (run / "config.json").write_text(json.dumps(saved))
    assert main([*args, "--steps", "2"]) == 0


def test_the_final_rate_trim_goes_into_the_diffusers_export(oobleck_run, small_corpus, tmp_path):
    """diffusers has no shift on the posterior's raw scale: the export folds it into the encoder's last bias."""
    import shutil

    import diffusers
    from safetensors.torch import load_file, save_file

    run = tmp_path / "trimmed"
    shutil.copytree(oobleck_run, run)
    for weights in run.glob("checkpoints/*/model.safetensors"):
        tensors = load_file(str(weights))
        tensors["bottleneck.scale_shift"] = torch.tensor(0.3)
        save_file(tensors, str(weights))
    ours = targetkl.load(run)
    assert float(ours.model.bottleneck.scale_shift) == pytest.approx(0.3)
    out = tmp_path / "export"
    assert main(["export", str(run), str(out), "--data", str(small_corpus), "--format", "diffusers"]) == 0
    reference = diffusers.AutoencoderOobleck.from_pretrained(str(out)).eval()
    audio = 0.1 * torch.randn(1, 1, 8 * ours.hop, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        posterior, encoded = reference.encode(audio).latent_dist, ours.model.encode(audio)
        untrimmed = targetkl.load(oobleck_run).model.encode(audio)
    assert torch.allclose(posterior.std, encoded.std, atol=1e-4)
    assert torch.allclose(posterior.mean, encoded.mean, atol=1e-4)
    assert not torch.allclose(encoded.std, untrimmed.std, atol=1e-3)
