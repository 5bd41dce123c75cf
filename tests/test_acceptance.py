"""Issue acceptance on the real demo corpus with the tiny preset and its default step count.

These train three tiny models (about three minutes each on two CPU cores); they are the checks that the
rate control works end to end, measured on held-out audio in eval mode.
"""

import pytest
import torch

from targetkl.config import resolve
from targetkl.eval.evaluate import evaluate_model, evaluate_run
from targetkl.models.codec import Codec
from targetkl.train.trainer import Trainer

TARGETS = (0.5, 2.0, 8.0)


@pytest.fixture(scope="module")
def runs(demo_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("acceptance")
    results = {}
    for target in TARGETS:
        config = resolve("tiny", flags={"rate.target_kbps": target})
        Trainer(config, demo_corpus, root / f"vae-{target:g}", progress=False).run()
        results[target] = evaluate_run(root / f"vae-{target:g}", demo_corpus, perceptual=False, progress=False)
    return results


def test_two_kbps_lands_within_five_percent_and_reconstructs(runs, demo_corpus):
    result = runs[2.0]
    assert result["target_kbps"] == 2.0
    assert abs(result["rate_kbps"] - 2.0) / 2.0 < 0.05, result
    config = resolve("tiny", flags={"rate.target_kbps": 2.0})
    torch.manual_seed(config.train.seed)
    untrained = evaluate_model(Codec(config).eval(), config, demo_corpus, perceptual=False, progress=False)
    print(f"2 kbps: measured {result['rate_kbps']:.4f} kbps, mel {result['mel_distance']:.3f} "
          f"vs untrained {untrained['mel_distance']:.3f}")
    assert result["mel_distance"] < 0.75 * untrained["mel_distance"]


def test_three_targets_in_order_and_two_and_eight_kbps_within_five_percent(runs):
    """0.5 kbps is not asserted within 5%: it is not robust yet (README, "Status"), so issue 2 stays open."""
    measured = [runs[t]["rate_kbps"] for t in TARGETS]
    print("targets", TARGETS, "measured", measured)
    assert measured == sorted(measured)
    for target in (2.0, 8.0):
        assert abs(runs[target]["rate_kbps"] - target) / target < 0.05, (target, runs[target]["rate_kbps"])


def test_tkl_files_are_the_size_the_kl_promised(runs, demo_corpus, tmp_path):
    """Issue 6: compress every held-out clip with each run; the payload rate is within 10% of the KL rate."""
    from targetkl.bitstream import compress_file
    from targetkl.data import load_folder
    from targetkl.runs import load_run

    held_out = load_folder(demo_corpus, 16000, "held_out", progress=False).clips
    for target in TARGETS:
        run = load_run(runs[target]["run"])
        reports = [compress_file(run.model, demo_corpus / clip.path, tmp_path / "clip.tkl", run.config.data.loudness_dbfs)
                   for clip in held_out]
        kl_kbps = sum(r["kl_kbps"] for r in reports) / len(reports)
        payload_kbps = sum(r["payload_kbps"] for r in reports) / len(reports)
        quantization_mel = sum(r["mel_distance_vs_mean_decode"] for r in reports) / len(reports)
        print(f"{target} kbps: KL {kl_kbps:.3f}, payload {payload_kbps:.3f} kbps, "
              f"mel distance to the plain decode {quantization_mel:.3f}")
        assert abs(kl_kbps - runs[target]["rate_kbps"]) / runs[target]["rate_kbps"] < 0.01
        assert abs(payload_kbps - kl_kbps) / kl_kbps < 0.10
        assert quantization_mel < 0.15
