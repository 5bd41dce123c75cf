import dataclasses

import pytest
import torch

from targetkl.config import RateConfig as DefaultRateConfig
from targetkl.control import Capacity, Lagrange, PIController, build_controller

SHARED = {field.name for field in dataclasses.fields(DefaultRateConfig)}


def rate_config(**values) -> DefaultRateConfig:
    """Shared rate settings and the controller's own (``weight``, ``lr``, ...) from one list of keywords."""
    shared = {key: value for key, value in values.items() if key in SHARED}
    own = {key: value for key, value in values.items() if key not in SHARED}
    return DefaultRateConfig(**shared).with_settings(**own)


def RateConfig(**values) -> DefaultRateConfig:
    """Rate settings with the penalty at full weight from the first forward, for update-rule checks."""
    return rate_config(**{"free_steps": 0, "warmup_steps": 0, **values})


def test_pi_rule_integrates_and_clamps_without_windup():
    beta, integral = PIController.step_rule(0.5, 0.0, kp=0.1, ki=0.01, beta_min=0.0, beta_max=1.0)
    assert integral == pytest.approx(0.5) and beta == pytest.approx(0.05 + 0.005)
    # Saturated high with a positive error: the integral stops growing (anti-windup).
    beta, integral = PIController.step_rule(10.0, 200.0, kp=0.1, ki=0.01, beta_min=0.0, beta_max=1.0)
    assert beta == 1.0 and integral == 200.0
    # A negative error is still integrated while saturated high, so the output can come back.
    beta, integral = PIController.step_rule(-1.0, 200.0, kp=0.1, ki=0.01, beta_min=0.0, beta_max=1.0)
    assert integral == 199.0 and beta == 1.0
    # Saturated low with a negative error: no integration below the floor.
    beta, integral = PIController.step_rule(-1.0, 0.0, kp=0.1, ki=0.01, beta_min=0.0, beta_max=1.0)
    assert beta == 0.0 and integral == 0.0


def test_pi_controller_on_a_toy_sequence():
    controller = build_controller(RateConfig(controller="pi", kp=0.1, ki=0.05), target_nats=10.0).train()
    betas = []
    for kl in (20.0, 20.0, 15.0, 5.0):
        with torch.enable_grad():
            controller(torch.tensor([[kl]]))
        betas.append(float(controller.beta))
    # errors 1, 1, 0.5, -0.5 -> integrals 1, 2, 2.5, 2.0
    assert betas == pytest.approx([0.1 + 0.05, 0.1 + 0.1, 0.05 + 0.125, -0.05 + 0.1])


def test_lagrange_dual_ascent_and_penalty():
    assert Lagrange.step_rule(0.0, 12.0, 10.0, lr=0.5) == pytest.approx(0.1)
    # A batch 10x over target moves the multiplier by at most lr (the relative error is clipped to 1).
    assert Lagrange.step_rule(0.0, 100.0, 10.0, lr=0.5) == pytest.approx(0.5)
    assert Lagrange.step_rule(0.0, 0.0, 10.0, lr=0.5) == pytest.approx(-0.5)
    controller = build_controller(RateConfig(controller="lagrange", lr=0.5, weight=2.0), 10.0).train()
    kl = torch.tensor([[12.0]], requires_grad=True)
    penalty = controller(kl)
    squared = 0.5 * 2.0 * (2 / 10) ** 2  # weight/2 * (relative violation)^2
    assert float(penalty) == pytest.approx(0.0 * 2 + squared)  # multiplier was 0 when the penalty was taken
    assert float(controller.multiplier) == pytest.approx(0.1)
    penalty = controller(kl)
    assert float(penalty) == pytest.approx(0.1 * 2 + squared)


def test_capacity_anneals_and_clip_scope():
    controller = Capacity(RateConfig(controller="capacity", anneal_steps=4, weight=1.0), 8.0).train()
    assert controller.capacity() == 0.0
    with torch.enable_grad():
        controller(torch.tensor([[1.0], [3.0]]))
    assert controller.capacity() == pytest.approx(2.0)
    clip = build_controller(RateConfig(controller="target", scope="clip", weight=1.0), 2.0)
    batch = build_controller(RateConfig(controller="target", scope="batch", weight=1.0), 2.0)
    kl = torch.tensor([[1.0], [3.0]])
    assert float(clip(kl)) == pytest.approx(0.25)  # mean of ((1-2)/2)^2 and ((3-2)/2)^2
    assert float(batch(kl)) == pytest.approx(0.0)  # (mean 2 - 2)^2


def test_controller_state_is_saved_with_the_model():
    controller = build_controller(RateConfig(controller="pi"), 10.0)
    assert {"beta", "integral"} <= set(controller.state_dict())
    with pytest.raises(ValueError, match="target_kbps"):
        build_controller(RateConfig(controller="target"), None)


def test_edge_frames_are_left_out_of_the_controlled_kl():
    kl = torch.tensor([[0.0, 10.0, 10.0, 10.0, 10.0, 0.0], [2.0, 4.0, 4.0, 4.0, 4.0, 2.0]])
    controller = build_controller(RateConfig(controller="target", scope="batch", weight=1.0, edge_frames=1), 7.0)
    assert controller.controlled_kl(kl).tolist() == [10.0, 4.0]
    assert float(controller(kl)) == pytest.approx(0.0)  # batch mean of the interiors is the target
    everything = build_controller(RateConfig(controller="target", scope="batch", weight=1.0, edge_frames=0), 7.0)
    assert everything.controlled_kl(kl).tolist() == pytest.approx([20 / 3, 10 / 3])
    # Too short to drop both edges: every frame counts.
    assert controller.controlled_kl(kl[:, :2]).tolist() == [5.0, 3.0]


def test_penalty_is_free_then_ramps_in_and_the_multiplier_waits_for_full_weight():
    controller = build_controller(rate_config(controller="lagrange", weight=2.0, lr=0.5, free_steps=2,
                                              warmup_steps=4, edge_frames=0), 10.0).train()
    assert controller.warmup == "weight"
    kl = torch.tensor([[12.0]], requires_grad=True)
    penalties, multipliers = [], []
    for _ in range(8):
        penalties.append(float(controller(kl)))
        multipliers.append(float(controller.multiplier))
    full = 0.5 * 2.0 * 0.2 ** 2  # weight/2 * ((12 - 10) / 10)^2
    assert penalties[:6] == pytest.approx([0, 0, 0, full / 4, full / 2, 3 * full / 4])
    assert multipliers[:6] == [0.0] * 6
    assert penalties[6] == pytest.approx(full) and multipliers[6] == pytest.approx(0.1)
    assert penalties[7] == pytest.approx(0.1 * 2 + full)
    controller.eval()
    with torch.no_grad():
        controller(kl)
    assert int(controller.forwards) == 8


def test_goal_warmup_starts_from_the_free_phase_kl_and_comes_down_geometrically():
    """Full weight right after the free phase, with the goal on the geometric path from the free phase's KL
    (a 0.9/0.1 moving average: 80 -> 80, 80) down to the 10-nat target; the multiplier waits for the target."""
    controller = build_controller(rate_config(controller="lagrange", weight=2.0, lr=0.5, free_steps=2,
                                              warmup_steps=4, edge_frames=0, warmup="goal"), 10.0).train()
    free = [float(controller(torch.tensor([[80.0]]))) for _ in range(2)]
    assert free == [0.0, 0.0] and float(controller.free_kl) == pytest.approx(80.0)
    goals, penalties = [], []
    for _ in range(5):
        goals.append(controller.goal())
        penalties.append(float(controller(torch.tensor([[40.0]]))))
    assert goals == pytest.approx([80.0, 80 * 0.125 ** 0.25, 80 * 0.125 ** 0.5, 80 * 0.125 ** 0.75, 10.0])
    # 40 nats against the goal 80: weight/2 * (40/80)^2 at full weight, relative to the goal while it is above 10.
    assert penalties[0] == pytest.approx(0.5 * 2.0 * 0.5 ** 2)
    assert penalties[2] == pytest.approx(0.5 * 2.0 * ((40 - goals[2]) / goals[2]) ** 2)
    assert float(controller.multiplier) == pytest.approx(0.5 * 1.0)  # one update, at the target: clip(3) = 1
    assert penalties[4] == pytest.approx(0.5 * 2.0 * 3.0 ** 2)  # penalty computed before that update


def test_runs_saved_before_the_goal_warmup_still_load():
    controller = build_controller(DefaultRateConfig(controller="lagrange"), 10.0)
    state = {k: v for k, v in controller.state_dict().items() if k != "free_kl"}
    controller.free_kl.fill_(5.0)
    controller.load_state_dict(state, strict=True)
    assert float(controller.free_kl) == 0.0


def test_calibration_moves_the_crop_goal_until_whole_clips_meet_the_target():
    controller = build_controller(RateConfig(controller="target", weight=1.0, edge_frames=0), 10.0).train()
    controller.calibrate(whole_clip_kl=12.0, gain=0.5)
    assert float(controller.offset) == pytest.approx(-1.0) and controller.goal() == pytest.approx(9.0)
    assert float(controller(torch.tensor([[9.0]]))) == pytest.approx(0.0)  # crops are now steered to 9 nats
    controller.calibrate(whole_clip_kl=8.0, gain=0.5)
    assert controller.goal() == pytest.approx(10.0)
    controller.calibrate(whole_clip_kl=100.0, gain=0.5)
    assert controller.goal() == pytest.approx(5.0)  # bounded to half the target
    ramping = build_controller(DefaultRateConfig(controller="lagrange", free_steps=5), 10.0)
    ramping.calibrate(whole_clip_kl=20.0, gain=0.5)
    assert float(ramping.offset) == 0.0  # nothing moves before the penalty is at full weight
    fixed = build_controller(RateConfig(controller="fixed"), 10.0)
    fixed.calibrate(whole_clip_kl=20.0, gain=0.5)
    assert float(fixed.offset) == 0.0


def test_a_registered_toy_controller_trains_without_touching_trainer_config_or_cli(small_corpus, tmp_path):
    import json

    from conftest import quick_config
    from targetkl.config import ENTRY_SETTINGS, ConfigError, load_run_config, resolve
    from targetkl.control import CONTROLLERS, KLController, register_controller
    from targetkl.train.trainer import Trainer

    @register_controller
    class HalfDistance(KLController):
        """scale * |KL - goal|: a controller no module of the package knows, with a setting of its own."""

        name = "toy-half-distance"

        @dataclasses.dataclass
        class Settings:
            scale: float = 0.5

            def check(self, path):
                if not self.scale > 0:
                    raise ConfigError(f"{path}.scale must be positive")

        def penalty(self, kl):
            return self.settings.scale * (kl - self.goal()).abs().mean()

    try:
        resolved = resolve("tiny", assignments=["rate.toy-half-distance.scale=3"])
        assert resolved.rate.entries[HalfDistance.name].scale == 3
        with pytest.raises(ConfigError, match="toy-half-distance.scale must be positive"):
            resolve("tiny", assignments=["rate.controller=toy-half-distance", "rate.toy-half-distance.scale=0"])
        config = quick_config(rate={"controller": "toy-half-distance", "toy-half-distance": {"scale": 0.25}},
                              train={"steps": 2, "checkpoint_every": 2})
        trainer = Trainer(config, small_corpus, tmp_path / "toy", progress=False)
        assert isinstance(trainer.model.bottleneck.rate_controller, HalfDistance)
        assert trainer.model.bottleneck.rate_controller.settings.scale == 0.25
        trainer.run()
        rows = [json.loads(line) for line in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
        train_rows = [row for row in rows if row["split"] == "train"]
        assert [row["step"] for row in train_rows] == [1, 2]
        assert all(row["loss/rate_penalty"] > 0 for row in train_rows)  # quick_config has no free start
        saved = json.loads((tmp_path / "toy" / "config.json").read_text())
        assert saved["rate"]["toy-half-distance"] == {"scale": 0.25}
        assert load_run_config(tmp_path / "toy").rate.entries[HalfDistance.name].scale == 0.25
    finally:
        CONTROLLERS.pop("toy-half-distance")
        ENTRY_SETTINGS["rate"].pop("toy-half-distance")


def test_unknown_controller_and_bottleneck_list_the_registry():
    from targetkl.config import ConfigError, resolve

    with pytest.raises(ConfigError, match="choose one of .*lagrange"):
        resolve("tiny", assignments=["rate.controller=nope"])
    with pytest.raises(ConfigError, match="choose one of vae, rvq, ae"):
        resolve("tiny", assignments=["model.bottleneck=nope"])
