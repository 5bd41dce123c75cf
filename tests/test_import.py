"""``targetkl import``: other tools' codecs as runs at step 0, checked against outputs their own packages computed
(fixtures written by ``tools/reference_check.py``), retargeted by ``train``, and written back for
stable-audio-tools."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import targetkl
from targetkl.cli import main
from targetkl.foreign.base import ForeignCheckpointError
from targetkl.foreign.importer import INITIAL_STD, import_codec
from targetkl.runs import load_run

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


@pytest.mark.parametrize("layout", ["tiny", "tiny-stereo-tanh"])
def test_stable_audio_tools_models_import_with_their_own_outputs(layout, tmp_path):
    """A bare autoencoder (.safetensors) and a whole model's pretransform (.ckpt, final tanh, stereo)."""
    run = tmp_path / "run"
    info = import_codec(FIXTURES / f"sat-{layout}", run)
    assert info["format"] == "stable-audio-tools" and info["bottleneck"] == "vae" and info["new"] == []
    reference = load_file(str(FIXTURES / f"sat-{layout}.safetensors"))
    model = load_run(run).model
    latent = model.latent_dim
    with torch.no_grad():
        h = model.encoder(reference["audio"][None])[0]
        encoded = model.encode(reference["audio"][None])
        decoded = targetkl.load(run).decode(reference["h"][None, :latent])[0]
    assert torch.allclose(h, reference["h"], atol=1e-4, rtol=0)
    assert torch.allclose(encoded.mean[0], reference["h"][:latent], atol=1e-4, rtol=0)
    std = torch.nn.functional.softplus(reference["h"][latent:]) + 1e-4  # stable-audio-tools' vae_sample
    assert torch.allclose(encoded.std[0], std, atol=1e-4, rtol=0)
    assert torch.allclose(decoded, reference["decoded"], atol=1e-4, rtol=0)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["oobleck"]["final_tanh"] == (layout == "tiny-stereo-tanh")
    assert config["model"]["audio_channels"] == reference["audio"].shape[0]


def test_a_diffusers_folder_imports_with_diffusers_own_outputs(tmp_path):
    import diffusers

    folder = FIXTURES / "diffusers-tiny"
    import_codec(folder, tmp_path / "run")
    reference = load_file(str(FIXTURES / "diffusers-tiny.safetensors"))
    ours = targetkl.load(tmp_path / "run")
    theirs = diffusers.AutoencoderOobleck.from_pretrained(str(folder)).eval()
    audio = reference["audio"][None]
    with torch.no_grad():
        encoded = ours.model.encode(audio)
        posterior = theirs.encode(audio).latent_dist
        decoded = ours.decode(reference["mean"][None])
    assert torch.allclose(encoded.mean[0], reference["mean"], atol=1e-4, rtol=0)
    assert torch.allclose(encoded.mean, posterior.mean, atol=1e-4) and torch.allclose(encoded.std, posterior.std,
                                                                                       atol=1e-4)
    assert torch.allclose(decoded[0], reference["decoded"], atol=1e-4, rtol=0)


def test_a_dac_file_imports_as_a_gaussian_posterior_around_dacs_latent_or_with_its_quantizer(tmp_path):
    reference = load_file(str(FIXTURES / "dac-tiny.safetensors"))
    audio = reference["audio"][None]
    info = import_codec(FIXTURES / "dac-tiny.pth", tmp_path / "vae")
    assert info["bottleneck"] == "vae" and len(info["new"]) == 1 and "raw scale" in info["new"][0]
    assert info["loaded_tensors"] == sum(  # DAC's encoder and decoder, not its quantizer
        1 for key in load_run(tmp_path / "vae").model.state_dict() if key.startswith(("encoder.", "decoder.")))
    model = load_run(tmp_path / "vae").model
    with torch.no_grad():
        encoded = model.encode(audio)
        decoded = targetkl.load(tmp_path / "vae").decode(reference["z"][None])[0]
    assert torch.allclose(encoded.mean[0], reference["z"], atol=1e-4, rtol=0)  # the mean is DAC's latent
    assert torch.allclose(encoded.std, torch.full_like(encoded.std, INITIAL_STD), atol=1e-6)
    assert torch.allclose(decoded, reference["decoded"], atol=1e-4, rtol=0)

    info = import_codec(FIXTURES / "dac-tiny.pth", tmp_path / "rvq", bottleneck="rvq")
    assert info["new"] == []
    run = load_run(tmp_path / "rvq")
    assert (run.config.model.rvq.codebooks, run.config.model.rvq.codebook_size) == (2, 16)
    assert run.config.rate.free_steps == 0 and run.config.rate.warmup_steps == 0
    with torch.no_grad():
        encoded = run.model.encode(audio)
    bits = 2 * math.log2(16)
    assert torch.allclose(encoded.bits_per_frame, torch.full_like(encoded.bits_per_frame, bits))
    with torch.no_grad():
        quantized = run.model.bottleneck(reference["z"][None])  # DAC's quantizer on DAC's latent, as DAC computed it
    assert torch.equal(quantized.codes[0], reference["codes"].to(quantized.codes.dtype))
    assert torch.allclose(quantized.z[0], reference["z_q"], atol=1e-4, rtol=0)
    for quantizer in run.model.bottleneck.quantizers:  # every code counts as used: no restart at the first step
        assert torch.allclose(quantizer.usage, torch.full_like(quantizer.usage, 1 / 16))


@pytest.fixture(scope="module")
def retargeted(demo_corpus, tmp_path_factory):
    """A DAC-format and a stable-audio-tools-format model, imported and trained to 2 kbps (shared by the tests)."""
    root = tmp_path_factory.mktemp("retargeted")
    runs = {}
    for name, source in (("dac", FIXTURES / "dac-tiny.pth"), ("sat", FIXTURES / "sat-tiny")):
        run = root / name
        assert main(["import", str(source), str(run)]) == 0
        assert main(["train", "--data", str(demo_corpus), "--out", str(run), "--target-kbps", "2", "--steps", "120",
                     "-q"]) == 0
        runs[name] = run
    return runs


@pytest.mark.parametrize("name", ["dac", "sat"])
def test_an_imported_codec_retargets_to_2_kbps_on_held_out_audio(name, retargeted, demo_corpus, tmp_path):
    run = retargeted[name]
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--data", str(demo_corpus), "--json", str(out), "--fast", "-q"]) == 0
    result = json.loads(out.read_text())
    assert result["target_kbps"] == 2
    assert abs(result["rate_kbps"] - 2) / 2 < 0.01
    wav = next(Path(demo_corpus).rglob("*.wav"))
    assert main(["compress", str(run), str(wav), str(tmp_path / "a.tkl")]) == 0
    assert main(["decompress", str(run), str(tmp_path / "a.tkl"), str(tmp_path / "a.wav")]) == 0
    assert (tmp_path / "a.wav").stat().st_size > 1000


def test_a_retargeted_oobleck_goes_back_to_stable_audio_tools_format(retargeted, demo_corpus, tmp_path):
    run = retargeted["sat"]
    out = tmp_path / "sat"
    assert main(["export", str(run), str(out), "--data", str(demo_corpus), "--format", "stable-audio-tools"]) == 0
    exported = load_file(str(out / "model.safetensors"))
    theirs = load_file(str(FIXTURES / "sat-tiny" / "model.safetensors"))  # stable-audio-tools' own state dict
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    config = json.loads((out / "model_config.json").read_text())
    source = json.loads((FIXTURES / "sat-tiny" / "model_config.json").read_text())
    assert config["model"]["encoder"] == source["model"]["encoder"]
    assert config["model"]["decoder"] == source["model"]["decoder"]
    pretransform = json.loads((out / "pretransform.json").read_text())
    info = json.loads((out / "targetkl.json").read_text())
    stats = info["latent_stats"]
    rms = math.sqrt(sum(s * s + m * m for s, m in zip(stats["std"], stats["mean"])) / len(stats["std"]))
    assert pretransform["type"] == "autoencoder" and pretransform["config"] == config["model"]
    assert math.isclose(pretransform["scale"], rms, rel_tol=1e-5)
    # read back by targetkl.load and by the importer: the same codec, posterior std included (the trim is folded in)
    original = targetkl.load(run)
    again = tmp_path / "again"
    import_codec(out, again)
    audio = 0.1 * torch.randn(1, 1, 64 * original.hop, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = original.model.encode(audio)
        for model in (targetkl.load(out).model, load_run(again).model):
            encoded = model.encode(audio)
            assert torch.allclose(encoded.mean, expected.mean, atol=1e-5)
            assert torch.allclose(encoded.std, expected.std, atol=1e-5)
            assert torch.allclose(model.decode(expected.mean), original.model.decode(expected.mean), atol=1e-5)


def test_a_run_at_step_0_takes_a_new_rate_and_a_trained_one_does_not(retargeted, demo_corpus, tmp_path, capsys):
    assert main(["train", "--data", str(demo_corpus), "--out", str(retargeted["dac"]), "--target-kbps", "1",
                 "--steps", "121", "-q"]) == 2
    assert "other model or rate settings" in capsys.readouterr().err
    # a trained run is retargeted by importing it: its weights, a fresh controller, step 0
    again = tmp_path / "again"
    assert main(["import", str(retargeted["dac"]), str(again)]) == 0
    info = json.loads((again / "imported.json").read_text())
    assert info["format"] == "targetkl" and info["bottleneck"] == "vae"
    before, after = load_run(retargeted["dac"]).model.state_dict(), load_run(again).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("bottleneck."))
    assert main(["train", "--data", str(demo_corpus), "--out", str(again), "--target-kbps", "1", "--steps", "2",
                 "-q"]) == 0


def test_bad_sources_get_one_line_and_leave_no_run_folder(tmp_path, capsys):
    sources = tmp_path / "sources"
    sources.mkdir()
    text = sources / "notes.pth"
    text.write_text("not a checkpoint")
    wrong = sources / "wrong"
    wrong.mkdir()
    (wrong / "model_config.json").write_text(json.dumps({"model_type": "autoencoder", "sample_rate": 16000, "model": {
        "encoder": {"type": "seanet", "config": {}}, "decoder": {"type": "oobleck", "config": {}}}}))
    (wrong / "model.safetensors").write_bytes((FIXTURES / "sat-tiny" / "model.safetensors").read_bytes())
    mismatched = sources / "mismatched"
    mismatched.mkdir()
    config = json.loads((FIXTURES / "sat-tiny" / "model_config.json").read_text())
    config["model"]["decoder"]["config"]["channels"] = 8  # the weights were made with 6
    (mismatched / "model_config.json").write_text(json.dumps(config))
    (mismatched / "model.safetensors").write_bytes((FIXTURES / "sat-tiny" / "model.safetensors").read_bytes())
    truncated = sources / "truncated"
    truncated.mkdir()
    (truncated / "model_config.json").write_bytes((FIXTURES / "sat-tiny" / "model_config.json").read_bytes())
    (truncated / "model.safetensors").write_bytes((FIXTURES / "sat-tiny" / "model.safetensors").read_bytes()[:500])
    elsewhere = sources / "plain"
    elsewhere.mkdir()
    (elsewhere / "readme.txt").write_text("hello")
    cases = [(text, "weights-only"), (wrong, "seanet"), (mismatched, "shape"), (truncated, "safetensors"),
             (elsewhere, "not a checkpoint this toolkit can import"), (tmp_path / "missing.pth", "not found")]
    for source, expected in cases:
        run = tmp_path / f"run-{source.name}"
        assert main(["import", str(source), str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and str(source) in err and len(err.splitlines()) == 1, err
        assert not run.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sources"]  # no temporary folder left either
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("keep")
    assert main(["import", str(FIXTURES / "dac-tiny.pth"), str(taken)]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (taken / "x").read_text() == "keep"
    with pytest.raises(ForeignCheckpointError, match="ELU"):
        config = json.loads((FIXTURES / "sat-tiny" / "model_config.json").read_text())
        config["model"]["encoder"]["config"]["use_snake"] = False
        (mismatched / "model_config.json").write_text(json.dumps(config))
        import_codec(mismatched, tmp_path / "elu")
