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


def test_three_targets_in_order_each_within_five_percent(runs):
    measured = [runs[t]["rate_kbps"] for t in TARGETS]
    print("targets", TARGETS, "measured", measured)
    assert measured == sorted(measured)
    for target, rate_kbps in zip(TARGETS, measured):
        assert abs(rate_kbps - target) / target < 0.05, (target, rate_kbps)
