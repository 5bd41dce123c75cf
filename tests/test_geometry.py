"""The latent's geometry (targetkl.eval.geometry): closed forms where they exist, and decoders whose geometry is
known: one that ignores its latent is flat, one that passes its latent through grows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from targetkl.config import apply_overrides, preset
from targetkl.data.corpus import synthesize_clip
from targetkl.eval.geometry import (ACTIVE_NATS, GEOMETRY_KEYS, MAX_CONDITION, active_channels, conditioning,
                                    latent_geometry)
from targetkl.models.codec import build_codec


def test_conditioning_of_a_known_covariance():
    generator = torch.Generator().manual_seed(0)
    white = torch.randn(3, 200_000, generator=generator, dtype=torch.float64)
    latents = [(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)[:, None] * white).float()]  # variances 4, 1, 1/4
    measured = conditioning(latents)
    assert measured["latent_eigenvalues"] == pytest.approx([4.0, 1.0, 0.25], rel=0.02)
    assert measured["latent_condition_number"] == pytest.approx(16.0, rel=0.03)
    share = np.array([4.0, 1.0, 0.25]) / 5.25
    assert measured["latent_effective_dim"] == pytest.approx(math.exp(-(share * np.log(share)).sum()), rel=0.01)
    flat = conditioning([torch.randn(4, 100_000, generator=generator)])
    assert flat["latent_effective_dim"] == pytest.approx(4.0, rel=0.01)  # every direction alike: the channel count
    plane = torch.randn(2, 1000, generator=generator)
    singular = conditioning([torch.cat([plane, plane.sum(0, keepdim=True)])])  # 3 channels spanning 2 dimensions
    assert singular["latent_condition_number"] == MAX_CONDITION  # finite, so rd.json stays JSON


def test_active_channels_count_the_kl_each_channel_carries():
    mean = torch.zeros(3, 10)
    mean[0] = 1.0  # KL 0.5 nats per frame at std 1
    std = torch.ones(3, 10)
    std[1] = 0.5  # KL (0.25 - 1 - ln 0.25) / 2 = 0.318 nats
    measured = active_channels([mean], [std])
    assert measured["channel_kl_nats"] == pytest.approx([0.5, 0.5 * (0.25 - 1 - math.log(0.25)), 0.0])
    assert measured["active_channels"] == 2 and ACTIVE_NATS == 0.1
    assert math.isnan(active_channels([mean], [None])["active_channels"])  # no posterior: no KL per channel


def _clips() -> list[np.ndarray]:
    return [synthesize_clip(0, index, 0.5, 16000)[0] for index in range(4)]


def test_a_decoder_that_ignores_its_latent_is_flat_and_one_that_reads_it_grows():
    torch.manual_seed(0)
    reading = build_codec(apply_overrides(preset("tiny"), {"model": {"init": "scaled"}})).eval()
    grows = latent_geometry(reading, _clips())
    curve = grows["smoothness_curve"]["mel_distance"]
    assert all(later > earlier for earlier, later in zip(curve, curve[1:])) and grows["smoothness_slope"] > 0.1
    assert 1 / 8 <= grows["interp_max_jump"] < 1
    for key in ("smoothness_slope", "interp_max_jump"):
        assert grows[f"{key}_lo"] <= grows[key] <= grows[f"{key}_hi"], key  # the bootstrap interval of the mean
    assert set(GEOMETRY_KEYS) <= set(grows) and grows["geometry_clips"] == 4
    assert 1 <= grows["latent_effective_dim"] <= reading.latent_dim and grows["active_channels"] >= 1

    with torch.no_grad():
        reading.decoder.layers[0].weight_g.zero_()  # the first decoder layer no longer reads the latent
    flat = latent_geometry(reading, _clips())
    assert max(flat["smoothness_curve"]["mel_distance"]) < 1e-4 and abs(flat["smoothness_slope"]) < 1e-4
    assert math.isnan(flat["interp_max_jump"])  # every decode alike: a path of length 0 has no steps to compare
    assert flat["latent_condition_number"] == grows["latent_condition_number"]  # the encoder is untouched
