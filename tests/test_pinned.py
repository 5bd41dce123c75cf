"""Today's training behaviour, pinned: the loss and the weights after 30 tiny steps of each bottleneck.

A refactor that should change nothing (registries, a new home for rate control, fewer device syncs)
must leave these numbers alone. Tolerances allow float rounding across CPUs, not a changed computation.
"""

import json

import pytest
import torch

from conftest import quick_config
from targetkl.train.trainer import Trainer

PINNED = {"vae": (23.302350997924805, 4041.069217239411), "rvq": (26.97635841369629, 10229.02180685076),
          "ae": (23.41790199279785, 3975.590474948064)}  # measured at 7eaa7ec+ (session 25), CPU, seed 0


@pytest.mark.parametrize("bottleneck", ["vae", "rvq", "ae"])
def test_thirty_steps_match_the_pinned_loss_and_weights(bottleneck, small_corpus, tmp_path):
    config = quick_config(model={"bottleneck": bottleneck},
                          train={"steps": 30, "log_every": 30, "checkpoint_every": 30})
    trainer = Trainer(config, small_corpus, tmp_path / bottleneck, progress=False)
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / bottleneck / "metrics.jsonl").read_text().splitlines()]
    loss = [row for row in rows if row["split"] == "train"][-1]["loss"]
    with torch.no_grad():
        weights = sum(float(p.double().abs().sum()) for p in trainer.model.parameters())
    pinned_loss, pinned_weights = PINNED[bottleneck]
    assert loss == pytest.approx(pinned_loss, rel=1e-3)
    assert weights == pytest.approx(pinned_weights, rel=1e-4)
