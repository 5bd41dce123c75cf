import math

import pytest
import torch

from targetkl.bottlenecks import BottleneckOutput, GaussianBottleneck, IdentityBottleneck, RVQBottleneck, gaussian_kl
from targetkl.config import RateConfig
from targetkl.control import build_controller


def test_kl_closed_form_against_monte_carlo():
    torch.manual_seed(0)
    mean = torch.randn(1, 4, 1) * 1.5
    std = torch.rand(1, 4, 1) * 1.5 + 0.2
    closed = float(gaussian_kl(mean, std))
    samples = mean + std * torch.randn(200000, 4, 1, dtype=torch.float64)
    log_q = torch.distributions.Normal(mean.double(), std.double()).log_prob(samples).sum(dim=1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(samples).sum(dim=1)
    monte_carlo = float((log_q - log_p).mean())
    assert closed == pytest.approx(monte_carlo, rel=0.01)


def test_kl_has_the_half_factor():
    # mean 1, std 1 in one channel: KL = 0.5 * 1 = 0.5 nats (not 1, as a KL without the 1/2 would say).
    assert float(gaussian_kl(torch.ones(1, 1, 1), torch.ones(1, 1, 1))) == pytest.approx(0.5)
    # std = e^-1, mean 0, 3 channels: 0.5 * 3 * (e^-2 + 2 - 1) nats.
    value = float(gaussian_kl(torch.zeros(1, 3, 1), torch.full((1, 3, 1), math.exp(-1.0))))
    assert value == pytest.approx(1.5 * (math.exp(-2) + 1))


def _gaussian(target_nats=10.0, controller="target"):
    config = RateConfig(controller=controller, scope="batch", edge_frames=1, free_steps=0, warmup_steps=0)
    return GaussianBottleneck(4, build_controller(config, target_nats), sigma_eps=1e-4)


def test_gaussian_contract_and_bits():
    torch.manual_seed(0)
    bottleneck = _gaussian().eval()
    h = torch.randn(2, 8, 5)
    out = bottleneck(h)
    assert isinstance(out, BottleneckOutput)
    assert out.z.shape == (2, 4, 5) and out.kl_nats_per_frame.shape == (2, 5)
    assert torch.allclose(out.bits_per_frame, out.kl_nats_per_frame / math.log(2))
    assert torch.equal(out.z, out.mean)  # eval decodes the mean
    assert out.codes is None
    expected_std = torch.nn.functional.softplus(h[:, 4:]) + 1e-4
    assert torch.allclose(out.std, expected_std)
    # target penalty: weight * ((batch-mean KL of the frames between the edge frames - target) / target)^2
    weight = RateConfig().target.weight
    expected = weight * ((float(out.kl_nats_per_frame[:, 1:4].mean()) - 10.0) / 10.0) ** 2
    assert float(out.penalty) == pytest.approx(expected, rel=1e-5)


def test_gaussian_samples_in_training():
    torch.manual_seed(0)
    bottleneck = _gaussian().train()
    out = bottleneck(torch.randn(2, 8, 5))
    assert not torch.equal(out.z, out.mean)


def test_rvq_bits_and_codes():
    torch.manual_seed(0)
    rvq = RVQBottleneck(latent_dim=6, n_codebooks=3, codebook_size=256, codebook_dim=4, quantizer_dropout=1.0,
                        commitment_weight=0.25, codebook_weight=1.0)
    rvq.eval()
    out = rvq(torch.randn(2, 6, 7))
    assert out.z.shape == (2, 6, 7)
    assert out.codes.shape == (2, 3, 7) and out.codes.dtype == torch.long
    assert torch.all(out.bits_per_frame == 24.0)  # 3 * log2(256)
    assert out.kl_nats_per_frame is None
    assert torch.allclose(rvq.decode_codes(out.codes), out.z, atol=1e-5)
    rvq.train()
    torch.manual_seed(1)
    out = rvq(torch.randn(16, 6, 7))
    per_clip = out.bits_per_frame[:, 0]
    assert set(per_clip.tolist()) <= {8.0, 16.0, 24.0}
    assert len(set(per_clip.tolist())) > 1  # quantizer dropout gives per-clip rates
    assert float(out.penalty) > 0


def test_identity_bits_are_float_storage():
    out = IdentityBottleneck(5)(torch.randn(1, 5, 3))
    assert torch.all(out.bits_per_frame == 160.0)
    assert float(out.penalty) == 0.0


def test_rvq_moves_dead_codes_onto_frames_of_the_batch():
    """A codebook whose entries all point one way sends every frame to one code; one training forward
    moves the unused codes onto projected frames of the batch, and the lookup then spreads out."""
    from targetkl.bottlenecks.rvq import DEAD_SHARE, VectorQuantizer

    torch.manual_seed(0)
    quantizer = VectorQuantizer(latent_dim=6, codebook_size=64, codebook_dim=4).train()
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.ones(64, 4))
    residual = torch.randn(8, 6, 16)
    with torch.no_grad():
        collapsed = quantizer.eval()(residual)[1]
    assert len(torch.unique(collapsed)) == 1
    quantizer.train()
    _, codes, _, _ = quantizer(residual)
    assert len(torch.unique(codes)) > 16
    frames = quantizer.in_proj(residual).detach().transpose(1, 2).reshape(-1, 4)
    distances = torch.cdist(quantizer.codebook.weight.detach(), frames).min(dim=1).values
    in_use = int(collapsed.flatten()[0])
    moved = torch.arange(64) != in_use
    assert float(distances[moved].max()) < 1e-3  # every unused code now sits on a frame of the batch
    assert torch.equal(quantizer.codebook.weight[in_use].detach(), torch.ones(4))  # the one in use stays
    assert torch.all(quantizer.usage >= DEAD_SHARE / 64)


def test_rvq_quantization_fades_in_after_the_free_steps():
    torch.manual_seed(0)
    rvq = RVQBottleneck(latent_dim=6, n_codebooks=2, codebook_size=16, codebook_dim=4, quantizer_dropout=0.0,
                        commitment_weight=0.25, codebook_weight=1.0, free_steps=2, warmup_steps=2).train()
    h = torch.randn(2, 6, 5)
    weights = []
    for _ in range(5):
        weights.append(rvq.quantization_weight())
        out = rvq(h)
        if weights[-1] == 0.0:
            assert torch.equal(out.z, h)  # the decoder sees the unquantized latent
    assert weights == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert int(rvq.forwards) == 5
    rvq.eval()
    assert rvq.quantization_weight() == 1.0
    out = rvq(h)
    assert torch.allclose(rvq.decode_codes(out.codes), out.z, atol=1e-5)


def test_the_final_trim_brings_the_kl_of_the_given_posteriors_to_the_target():
    torch.manual_seed(0)
    bottleneck = _gaussian().eval()
    clips = [torch.cat([torch.randn(1, 4, n), torch.randn(1, 4, n) * 0.5 - 3], dim=1) for n in (7, 12)]  # std ~0.05
    posteriors = [tuple(t[0] for t in bottleneck.posterior(h)) for h in clips]
    before = sum(float(gaussian_kl(m[None], s[None]).sum()) for m, s in posteriors) / 19
    trimmed = bottleneck.trim_rate(posteriors, target_nats=0.97 * before)
    assert trimmed["rate/trim_before_kl"] == pytest.approx(before)
    assert trimmed["rate/trim_shift"] == pytest.approx(float(bottleneck.scale_shift))
    after = sum(float(bottleneck(h).kl_nats_per_frame.sum()) for h in clips) / 19  # the bottleneck's own KL now
    assert after == pytest.approx(0.97 * before, rel=1e-5)
    means = [bottleneck(h).z for h in clips]
    assert all(torch.equal(z, m[None]) for z, (m, _) in zip(means, posteriors))  # the decoded mean is unchanged
    assert bottleneck.trim_rate(posteriors, target_nats=100 * before) is None  # out of reach: nothing changes
    assert float(bottleneck.scale_shift) == pytest.approx(trimmed["rate/trim_shift"])
