"""The training state both loops share: checkpoints, the EMA and the settings a resumed run must match."""

import json

import pytest
import torch

from targetkl.train.state import TrainingError, TrainingState, update_ema, write_settings


def test_a_state_saved_and_resumed_restores_weights_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = TrainingState({"model": model, "ema": ema, "discriminator": None},
                          {"optimizer": optimizer, "disc_optimizer": None})
    folder = state.save(tmp_path, 7, {"bad_steps": 2})
    assert sorted(p.name for p in folder.iterdir()) == ["ema.safetensors", "model.safetensors", "state.pt"]
    expected_draw = torch.rand(3)

    torch.manual_seed(1)
    fresh, fresh_ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    again = TrainingState({"model": fresh, "ema": fresh_ema}, {"optimizer": fresh_optimizer, "disc_optimizer": None})
    saved = again.resume(tmp_path)
    assert saved["step"] == 7 and saved["bad_steps"] == 2 and saved["disc_optimizer"] == {}
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh_ema.bias, ema.bias)
    assert fresh_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG as it was when saved
    assert TrainingState({"model": fresh}, {}).resume(tmp_path / "empty") is None


def test_the_ema_moves_its_parameters_and_takes_the_buffers():
    model, ema = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.fill_(3.0)
        ema.weight.fill_(1.0)
        model.running_mean.fill_(5.0)
    update_ema(ema, model, decay=0.75)
    assert ema.weight.tolist() == [1.5, 1.5] and ema.running_mean.tolist() == [5.0, 5.0]


def test_settings_are_written_and_a_resume_with_other_fixed_settings_is_refused(tmp_path):
    path = tmp_path / "config.json"
    fixed = lambda settings: settings["model"]  # noqa: E731
    write_settings(path, {"model": {"strides": (2, 4)}, "train": {"steps": 5}}, fixed, "model settings")
    assert json.loads(path.read_text())["model"]["strides"] == [2, 4]
    # the same fixed part (a tuple reads back as a list) with other training settings: written
    write_settings(path, {"model": {"strides": (2, 4)}, "train": {"steps": 9}}, fixed, "model settings")
    assert json.loads(path.read_text())["train"]["steps"] == 9
    with pytest.raises(TrainingError, match="config.json: this run was started with other model settings"):
        write_settings(path, {"model": {"strides": (4, 4)}, "train": {"steps": 9}}, fixed, "model settings")
    assert json.loads(path.read_text())["train"]["steps"] == 9  # the refused settings wrote nothing
    path.write_text("{not json")
    write_settings(path, {"model": {"strides": (4, 4)}}, fixed, "model settings")  # unreadable: replaced
    assert json.loads(path.read_text()) == {"model": {"strides": [4, 4]}}
