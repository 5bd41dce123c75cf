"""Text-to-sound stage: shapes, sampler determinism, guidance, standardization, metrics, and
pre-encode -> gen-train -> generate through the command line."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import chromium_dom
from targetkl.cli import main
from targetkl.gen.dataset import LatentSet, latent_batch, load_latent_set
from targetkl.gen.evaluate import frechet_distance, kernel_audio_distance
from targetkl.gen.flow import guided_velocity, sample
from targetkl.gen.model import LatentDiT
from targetkl.gen.train import GenTrainer, gen_config, latent_statistics, load_generator


def tiny_dit(latent_dim=6, text_dim=10, seed=0):
    torch.manual_seed(seed)
    model = LatentDiT(latent_dim, text_dim, width=32, depth=2, heads=4).eval()
    with torch.no_grad():  # adaLN-Zero starts at zero output; give every layer weights so tests see them act
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        model.null_text.normal_()
    return model


def test_dit_shapes_and_any_length():
    model = tiny_dit()
    for frames in (1, 7, 50):
        out = model(torch.randn(3, 6, frames), torch.rand(3), torch.randn(3, 10))
        assert out.shape == (3, 6, frames)
    assert sample(model, torch.randn(2, 10), frames=9, steps=4).shape == (2, 6, 9)


def test_sampler_is_deterministic_given_the_seed():
    model, text = tiny_dit(), torch.randn(2, 10)
    first = sample(model, text, frames=8, steps=5, cfg=3.0, seed=11)
    again = sample(model, text, frames=8, steps=5, cfg=3.0, seed=11)
    other = sample(model, text, frames=8, steps=5, cfg=3.0, seed=12)
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.1


def test_guidance_at_scale_one_is_the_conditional_model():
    model, text = tiny_dit(), torch.randn(3, 10)
    x, t = torch.randn(3, 6, 8), torch.full((3,), 0.4)
    assert torch.equal(guided_velocity(model, x, t, text, 1.0), model(x, t, text))
    conditional, unconditional = model(x, t, text), model(x, t, text, torch.ones(3, dtype=torch.bool))
    assert not torch.allclose(conditional, unconditional)
    torch.testing.assert_close(guided_velocity(model, x, t, text, 2.5),
                               unconditional + 2.5 * (conditional - unconditional), rtol=1e-4, atol=1e-5)
    # the whole sampler at cfg 1 is plain Euler integration of the conditional velocity
    generator = torch.Generator().manual_seed(5)
    z = torch.randn((3, 6, 8), generator=generator)
    for t_now, t_next in zip(torch.linspace(1, 0, 5)[:-1], torch.linspace(1, 0, 5)[1:]):
        z = z + float(t_next - t_now) * model(z, torch.full((3,), float(t_now)), text)
    torch.testing.assert_close(sample(model, text, frames=8, steps=4, cfg=1.0, seed=5), model.unstandardize(z))


def test_standardization_round_trip_and_statistics():
    means = [torch.tensor([[1.0, 3.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]]), torch.tensor([[1.0, 3.0], [0.0, 0.0]])]
    stds = [torch.full((2, 4), 0.5), torch.full((2, 2), 0.5)]
    latents = LatentSet(None, {"latent_dim": 2}, means, stds, ["a", "b"], [None, None], ["train", "train"], ["x", "y"])
    mean, std = latent_statistics(latents, [0, 1], sample_posterior=True)
    torch.testing.assert_close(mean, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(std, torch.tensor([math.sqrt(1 + 0.25), 0.5]))  # var of means + mean posterior var
    _, std_of_means = latent_statistics(latents, [0, 1], sample_posterior=False)
    # a constant channel is floored, not divided by 0
    torch.testing.assert_close(std_of_means, torch.tensor([1.0, 1e-3]))
    model = LatentDiT(2, 4, width=16, depth=1, heads=2)
    model.latent_mean.copy_(mean)
    model.latent_std.copy_(std)
    z = torch.randn(3, 2, 5) * 4 + 1
    torch.testing.assert_close(model.unstandardize(model.standardize(z)), z)
    standardized = model.standardize(latent_batch(latents, [0] * 4000, 4, np.random.default_rng(0)))
    assert abs(float(standardized[:, 0].mean())) < 0.05 and abs(float(standardized[:, 0].std()) - 1) < 0.05


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 2))
    b = rng.standard_normal((20000, 2)) * np.array([2.0, 1.0]) + np.array([3.0, 0.0])
    # (3 - 0)^2 + (1 - 2)^2 + 0 for two Gaussians with diagonal covariances: |dm|^2 + sum (s1 - s2)^2
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)


def test_kernel_audio_distance_by_hand():
    # x = {0, 1, 3}, y = {0, 2}: the median distance within x is 2, so k(a, b) = exp(-(a - b)^2 / 8).
    # within x: (e^-1/8 + e^-9/8 + e^-4/8) / 3 = 0.6045600; within y: e^-4/8 = 0.6065307;
    # between: (1 + e^-4/8 + 3 e^-1/8 + e^-9/8) / 6 = 0.7631123; MMD^2 = 0.6045600 + 0.6065307 - 2 * 0.7631123
    x, y = np.array([[0.0], [1.0], [3.0]]), np.array([[0.0], [2.0]])
    assert kernel_audio_distance(x, y) == pytest.approx(100 * -0.3151339, abs=1e-4)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 4)), rng.standard_normal((400, 4))
    assert abs(kernel_audio_distance(a, b)) < 0.5  # unbiased: about 0 for two samples of one distribution
    assert kernel_audio_distance(a, b + 1.0) > 10 * abs(kernel_audio_distance(a, b))
    with pytest.raises(ValueError):
        kernel_audio_distance(x[:1], y)


def test_minilm_text_embeddings():
    from targetkl.gen.text import load_text_encoder

    encoder = load_text_encoder("minilm")
    vectors = encoder.encode(["a low plucked string note", "a high plucked string note", "a snare drum hit"])
    assert vectors.shape == (3, 384) and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


@pytest.fixture(scope="module")
def vae_run(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("gen") / "vae"
    assert main(["train", "--data", str(small_corpus), "--out", str(run), "--steps", "3", "--batch-size", "2",
                 "--set", "train.checkpoint_every=3", "--set", "model.decoder_dim=16", "-q"]) == 0
    return run


@pytest.fixture(scope="module")
def latents_dir(vae_run, small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "latents"
    assert main(["pre-encode", str(vae_run), "--data", str(small_corpus), "--out", str(out), "-q"]) == 0
    return out


def test_pre_encode_stores_means_stds_captions_and_the_measured_rate(latents_dir, vae_run):
    from targetkl.eval.measure import measure_rate_and_distortion
    from targetkl.data import load_folder
    from targetkl.runs import load_run

    latents = load_latent_set(latents_dir)
    info = latents.info
    assert info["clips"] == 28 and info["captioned"] == 28 and info["frame_rate"] == 50
    assert set(latents.splits) == {"train", "held_out"}
    assert all(m.shape == (16, 25) and s.shape == (16, 25) for m, s in zip(latents.means, latents.stds))
    assert all(float(s.min()) > 0 for s in latents.stds)
    loaded = load_run(vae_run)
    held_out = load_folder(info["data"], 16000, "held_out", progress=False).clips
    measured = measure_rate_and_distortion(loaded.model, held_out)
    assert info["rate_kbps"] == pytest.approx(measured["rate_kbps"], rel=1e-6)
    first = latents.indices("held_out")[0]
    encoded = loaded.model.encode(loaded.model.pad(torch.from_numpy(held_out[0].audio)[None, None]))
    torch.testing.assert_close(latents.means[first], encoded.mean[0])


def test_gen_train_resumes_exactly_and_generate_writes_audio(latents_dir, tmp_path, capsys):
    settings = ["--set", "width=32", "--set", "depth=2", "--set", "batch_size=4", "--set", "checkpoint_every=3",
                "--set", "validate_every=3", "-q"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["gen-train", "--latents", str(latents_dir), "--out", str(straight), "--steps", "6", *settings]) == 0
    assert main(["gen-train", "--latents", str(latents_dir), "--out", str(resumed), "--steps", "3", *settings]) == 0
    assert main(["gen-train", "--latents", str(latents_dir), "--out", str(resumed), "--steps", "6", *settings]) == 0
    a, b = load_generator(straight), load_generator(resumed)
    assert a.step == b.step == 6
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    out = tmp_path / "note.wav"
    assert main(["generate", str(straight), "a low plucked string note", str(out), "--steps", "4", "--seed", "3"]) == 0
    audio, rate = sf.read(out)
    assert rate == 16000 and len(audio) == 25 * 320 and np.isfinite(audio).all()
    longer = tmp_path / "long.wav"
    assert main(["generate", str(straight), "a snare drum hit", str(longer), "--steps", "2", "--seconds", "1.2"]) == 0
    assert len(sf.read(longer)[0]) == 60 * 320
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "nothing"), "x", str(tmp_path / "x.wav")]) == 2
    assert "gen_config.json" in capsys.readouterr().err


def test_validation_loss_is_deterministic_and_falls_with_training(latents_dir, tmp_path):
    config = gen_config(assignments=["width=32", "depth=2", "batch_size=16", "lr=2e-3", "warmup_steps=0",
                                     "ema_decay=0"], steps=0)
    trainer = GenTrainer(config, latents_dir, tmp_path / "g", progress=False)
    before = trainer.held_out_loss()
    assert before == trainer.held_out_loss()
    for _ in range(200):
        trainer.train_step()
    assert trainer.held_out_loss() < 0.85 * before


def test_missing_latents_are_a_one_line_error(tmp_path, capsys):
    assert main(["gen-train", "--latents", str(tmp_path / "none"), "--out", str(tmp_path / "g"), "-q"]) == 2
    assert "targetkl pre-encode" in capsys.readouterr().err


def test_select_over_a_sweep_writes_its_outputs_and_reuses_everything(vae_run, small_corpus, tmp_path):
    """Plumbing on a stand-in sweep (two points sharing one quick run); the acceptance test runs the real one."""
    from targetkl.eval.report import write_report
    from targetkl.gen.select import run_select

    sweep = tmp_path / "sweep"
    rows = [{"system": "vae", "label": label, "target_kbps": kbps, "rate_kbps": kbps * 1.01, "mel_distance": 1.0,
             "run": str(vae_run)} for label, kbps in (("1kbps", 1.0), ("4kbps", 4.0))]
    write_report(sweep, rows, [], preset="tiny", data=str(small_corpus))
    config = gen_config(assignments=["width=32", "depth=2", "batch_size=4", "validate_every=2"], steps=2)
    result = run_select(sweep, config=config, repeats=3, sample_steps=2, judge_steps=5, progress=False)
    saved = json.loads((sweep / "generation.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["best_kbps"] in {1.01, 4.04}
    for row in saved["rows"]:
        for key in ("rate_kbps", "text_match", "text_match_random_latents", "frechet_distance", "kad", "val_loss"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (key, row)
        assert 0 <= row["text_match"] <= 1 and 0 <= row["text_match_random_latents"] <= 1
        assert len(row["audio"]) == len(row["prompts"]) >= 1
        assert all(sf.read(path)[0].shape == (25 * 320,) for path in row["audio"])
        assert row["sensitivity_1"] >= row["sensitivity_0.1"] >= 0
    assert (sweep / "generation.csv").read_text().count("\n") == 3
    assert (sweep / "generation.png").stat().st_size > 1000
    page = (sweep / "report.html").read_text()
    assert "which bitrate" in page and "gen-1kbps/clip0.wav" in page and "generation.png" in page
    dom = chromium_dom(sweep / "report.html")
    assert 'data-plot="loaded"' in dom and 'data-plots="2"' in dom  # rd.png and generation.png
    stamps = {p: p.stat().st_mtime_ns for p in sweep.rglob("*.safetensors")}
    run_select(sweep, config=config, repeats=3, sample_steps=2, judge_steps=5, progress=False)
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("*.safetensors")} == stamps


def test_frechet_embedding_is_pluggable(vae_run, small_corpus, tmp_path):
    """A registered embedder replaces the judge's embedding in the Frechet distance (here: two numbers
    per clip, RMS and peak level, whose distances are far below the judge's 32-feature ones)."""
    from targetkl.eval.report import write_report
    from targetkl.eval.sweep import SweepError
    from targetkl.gen.evaluate import EMBEDDERS, register_audio_embedder
    from targetkl.gen.select import run_select

    calls = []

    def level_embedder(judge):
        def embed(clips):
            calls.append(len(clips))
            return np.array([[np.sqrt(np.mean(c ** 2)), np.abs(c).max()] for c in clips])
        return embed

    register_audio_embedder("level", level_embedder)
    try:
        sweep = tmp_path / "sweep"
        rows = [{"system": "vae", "label": "1kbps", "target_kbps": 1.0, "rate_kbps": 1.0, "mel_distance": 1.0,
                 "run": str(vae_run)}]
        write_report(sweep, rows, [], preset="tiny", data=str(small_corpus))
        config = gen_config(assignments=["width=32", "depth=2", "batch_size=4"], steps=1)
        result = run_select(sweep, config=config, repeats=3, sample_steps=1, judge_steps=2, embedding="level",
                            progress=False)
        assert len(calls) == 3 and calls[0] == 28  # real clips, generated, random latents
        assert result["frechet_reference"].startswith("level embeddings of all 28 real clips")
        assert result["rows"][0]["frechet_distance"] < 1.0  # two small level numbers, not 32 judge features
        with pytest.raises(SweepError, match="unknown"):
            run_select(sweep, config=config, embedding="nonesuch", progress=False)
    finally:
        EMBEDDERS.pop("level")


def test_the_generator_config_is_read_like_the_codec_config():
    from targetkl.config import ConfigError
    from targetkl.gen.train import gen_config

    assert gen_config(assignments=["gen.width=32", "depth=2"], steps=7) == gen_config(
        assignments=["width=32", "gen.depth=2", "steps=3"], steps=7)
    config = gen_config("base", ["gen.lr=2e-4"])
    assert (config.width, config.lr, config.preset) == (512, 2e-4, "base")
    with pytest.raises(ConfigError, match="unknown key gen.wdth; known keys: .*width"):
        gen_config(assignments=["wdth=32"])
    with pytest.raises(ConfigError, match="gen.depth"):
        gen_config(assignments=["depth=two"])
