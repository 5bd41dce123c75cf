import math

import numpy as np
import pytest
import torch

from targetkl.config import ConfigError, LossConfig, resolve
from targetkl.models.discriminators import (DISCRIMINATORS, ConstantQTransform, SubBandCQTDiscriminator,
                                            build_discriminator, octaves_below_nyquist)


def test_cqt_puts_a_sinusoid_in_its_bin_at_half_its_amplitude():
    sample_rate, fmin, bins = 16000, 65.4, 24
    transform = ConstantQTransform(sample_rate, hop=256, fmin=fmin, octaves=6, bins_per_octave=bins)
    for k in (5, 40, 100, 140):  # one bin in the lowest, two middle and the top octave
        frequency = fmin * 2 ** (k / bins)
        t = torch.arange(2 * sample_rate) / sample_rate
        spectrum = transform((0.8 * torch.sin(2 * math.pi * frequency * t))[None])
        assert spectrum.shape == (1, 2, 2 * sample_rate // 256, 6 * bins)
        magnitude = spectrum[0, :, 40:-40].pow(2).sum(dim=0).sqrt().mean(dim=0)  # away from the edges
        assert int(magnitude.argmax()) == k
        assert float(magnitude[k]) == pytest.approx(0.4, rel=0.05)


@pytest.mark.parametrize("sample_rate", [16000, 24000, 44100, 48000])
def test_cqt_discriminator_shapes_at_several_rates(sample_rate):
    loss = LossConfig(discriminators=("cqt",))
    octaves = octaves_below_nyquist(sample_rate, loss.discriminator_cqt_fmin, loss.discriminator_cqt_octaves)
    assert octaves == (7 if sample_rate == 16000 else 8 if sample_rate == 24000 else 9)
    discriminator = build_discriminator(loss, sample_rate)
    assert len(discriminator.members) == 3
    audio = torch.randn(2, 1, sample_rate // 2)
    scores, features = discriminator(audio)
    for score, feats, hop, bins in zip(scores, features, loss.discriminator_cqt_hops, loss.discriminator_cqt_bins):
        # frames every hop samples; frequency halved by each of the three strided convs
        assert score.shape == (2, 1, math.ceil(sample_rate // 2 / hop), math.ceil(octaves * bins / 8))
        assert len(feats) == 6 and feats[-1] is score


def test_cqt_discriminator_gradients_reach_the_generator():
    torch.manual_seed(0)
    member = SubBandCQTDiscriminator(16000, hop=256, bins_per_octave=24, octaves=7, fmin=32.7)
    generated = torch.randn(2, 1, 8000, requires_grad=True)
    score, _ = member(generated)
    ((1 - score) ** 2).mean().backward()
    assert generated.grad is not None and float(generated.grad.abs().sum()) > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in member.parameters())


def test_discriminator_names_are_validated():
    assert set(DISCRIMINATORS) == {"mpd", "mrsd", "cqt"}
    config = resolve("tiny", assignments=["loss.discriminators=mpd,mrsd,cqt"])
    assert config.loss.discriminators == ("mpd", "mrsd", "cqt")
    with pytest.raises(ConfigError, match="choose from mpd, mrsd, cqt"):
        resolve("tiny", assignments=["loss.discriminators=mpd,wave"])
    with pytest.raises(ConfigError, match="multiple of 2"):
        resolve("tiny", assignments=["loss.discriminators=cqt", "loss.discriminator_cqt_hops=100,256,256"])
    with pytest.raises(ConfigError, match="one value per CQT scale"):
        resolve("tiny", assignments=["loss.discriminators=cqt", "loss.discriminator_cqt_bins=24,36"])


def test_default_ensemble_keeps_its_checkpoint_layout():
    # mpd then mrsd, as before the registry: old runs' discriminator.safetensors still load
    discriminator = build_discriminator(LossConfig(), 16000)
    assert [type(m).__name__ for m in discriminator.members] == ["PeriodDiscriminator"] * 5 + ["STFTDiscriminator"] * 3


def test_two_training_steps_with_the_cqt_discriminator(small_corpus, tmp_path):
    from conftest import quick_config
    from targetkl.train.trainer import Trainer

    config = quick_config(loss={"adversarial": True, "discriminators": ("mpd", "cqt"),
                                "discriminator_cqt_hops": (256, 128), "discriminator_cqt_bins": (12, 24)},
                          train={"steps": 2, "checkpoint_every": 2})
    trainer = Trainer(config, small_corpus, tmp_path / "run", progress=False)
    trainer.run()
    rows = [row for row in map(eval_json, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
            if row.get("split") == "train"]
    assert [row["step"] for row in rows] == [1, 2]
    assert all(np.isfinite(row["loss/adversarial"]) and np.isfinite(row["loss/discriminator"]) for row in rows)
    assert len(trainer.discriminator.members) == 5 + 2


def eval_json(line):
    import json

    return json.loads(line)
