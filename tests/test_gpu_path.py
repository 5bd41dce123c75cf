"""The GPU path as far as a CPU can check it: ``train.compile`` and bf16 autocast train, and give what eager
float32 training gives (to compiler and bf16 rounding)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import quick_config
from targetkl.checkpoints import latest_checkpoint
from targetkl.train.trainer import Trainer


def _losses(run) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train" and "loss" in r]


def _weights(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(latest_checkpoint(run) / "model.safetensors")


def test_compiled_training_matches_eager_and_saves_the_same_weights(small_corpus, tmp_path, monkeypatch):
    """Dynamo's graphs and AOT autograd's backward, as on a GPU; the kernels come from the ``aot_eager`` backend
    instead of inductor's generated C++ (90 s of compiling on two cores, for no check more)."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    eager = Trainer(quick_config(train={"steps": 2}), small_corpus, tmp_path / "eager", progress=False)
    eager.run()
    compiled = Trainer(quick_config(train={"steps": 2, "compile": True}), small_corpus, tmp_path / "compiled",
                       progress=False)
    compiled.run()
    assert compiled.model.__dict__.get("_compiled_networks") is not None
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4)
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    assert a.keys() == b.keys()  # the compiled networks stay out of the checkpoint
    difference = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a) ** 0.5
    size = sum(float(a[k].double().pow(2).sum()) for k in a) ** 0.5
    assert difference / size < 1e-4
    # Adam moves a weight by at most about lr per step: rounding can flip the sign of a near-zero gradient (the
    # 1x1x1 weight-norm directions), never more
    lr = quick_config().train.lr
    assert all(float((a[k].double() - b[k].double()).abs().max()) <= 2 * lr for k in a)
    import targetkl

    assert targetkl.load(tmp_path / "compiled").encode(torch.zeros(8000), 16000).shape == (1, 8, 25)


def test_bf16_autocast_trains_with_the_adversarial_losses(small_corpus, tmp_path, monkeypatch):
    """On CUDA the trainer runs its forward under bf16 autocast; here the same forward runs under the CPU's."""
    settings = {"train": {"steps": 2}, "loss": {"adversarial": True}}
    Trainer(quick_config(**settings), small_corpus, tmp_path / "float32", progress=False).run()
    monkeypatch.setattr(Trainer, "_autocast", lambda self: torch.autocast("cpu", dtype=torch.bfloat16))
    trainer = Trainer(quick_config(**settings), small_corpus, tmp_path / "bf16", progress=False)
    entered = []
    original = trainer.model.decoder.forward

    def decoder_forward(*args, **kwargs):
        entered.append(torch.is_autocast_enabled("cpu"))
        return original(*args, **kwargs)

    trainer.model.decoder.forward = decoder_forward
    trainer.run()
    assert sum(entered) == 2  # both training forwards ran under autocast (evaluation does not)
    float32, bf16 = _losses(tmp_path / "float32"), _losses(tmp_path / "bf16")
    assert bf16 == pytest.approx(float32, rel=0.05)
    weights = _weights(tmp_path / "bf16")
    assert all(w.dtype != torch.bfloat16 and torch.isfinite(w.double()).all() for w in weights.values())
