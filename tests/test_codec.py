import pytest
import torch

from targetkl.config import apply_overrides, preset
from targetkl.models.codec import Codec, model_fingerprint


@pytest.mark.parametrize("name", ["tiny", "base-24k", "dac-44k"])
@pytest.mark.parametrize("bottleneck", ["vae", "rvq", "ae"])
def test_shape_round_trip(name, bottleneck):
    config = apply_overrides(preset(name), {"model": {"bottleneck": bottleneck}})
    torch.manual_seed(0)
    model = Codec(config).eval()
    frames = 3
    audio = torch.randn(2, 1, model.hop * frames) * 0.1
    with torch.no_grad():
        encoded = model.encode(audio)
        decoded = model.decode(encoded.z)
    assert encoded.z.shape == (2, config.model.latent_dim, frames)
    assert encoded.bits_per_frame.shape == (2, frames)
    assert decoded.shape == audio.shape
    assert decoded.abs().max() <= 1.0


def test_pad_to_hop_and_fingerprint():
    config = preset("tiny")
    torch.manual_seed(0)
    model = Codec(config)
    assert model.pad(torch.zeros(1, 1, 321)).shape[-1] == 640
    first = model_fingerprint(model)
    torch.manual_seed(1)
    assert model_fingerprint(Codec(config)) != first
    assert model_fingerprint(model) == first
