import dataclasses
import json

import pytest

from targetkl.config import (ConfigError, apply_overrides, from_dict, load_override_file, load_run_config, preset,
                             resolve, validate)


def test_presets_resolve_and_validate():
    for name in ("tiny", "base-24k", "dac-44k"):
        config = preset(name)
        validate(config)
        assert config.segment_samples % config.model.hop == 0
    assert preset("dac-44k").model.hop == 512
    assert preset("base-24k").model.hop == 320


def test_unknown_preset_and_keys_fail_clearly():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="model.latent_dims"):
        apply_overrides(preset("tiny"), {"model": {"latent_dims": 3}})
    with pytest.raises(ConfigError, match="unknown section"):
        apply_overrides(preset("tiny"), {"modle": {}})


@pytest.mark.parametrize("flags,message", [
    ({"rate.target_kbps": -1.0}, "must be positive"),
    ({"rate.target_kbps": 0.0}, "must be positive"),
    ({"rate.target_kbps": 100.0}, "above what"),
    ({"data.segment_seconds": 0.33}, "multiple of the hop"),
    ({"train.lr": 0.0}, "learning rate"),
    ({"train.schedule": "exponential"}, "exponential schedule would set"),  # tiny's LR floor is 0
])
def test_impossible_values_fail_before_training(flags, message):
    with pytest.raises(ConfigError, match=message):
        resolve("tiny", flags=flags)


def test_override_files_and_assignments(tmp_path):
    yaml_file = tmp_path / "o.yaml"
    yaml_file.write_text("model:\n  latent_dim: 32\ntrain:\n  steps: 7\n")
    toml_file = tmp_path / "o.toml"
    toml_file.write_text("[rate]\ntarget_kbps = 4.5\n")
    config = resolve("tiny", [str(yaml_file), str(toml_file)], ["train.lr=3e-4", "model.strides=2,4,5,8"])
    assert config.model.latent_dim == 32 and config.train.steps == 7
    assert config.rate.target_kbps == 4.5 and config.train.lr == 3e-4
    assert config.model.strides == (2, 4, 5, 8)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_override_file(bad)
    with pytest.raises(ConfigError, match="section.key=value"):
        resolve("tiny", assignments=["steps=3"])


def test_target_nats_per_frame():
    config = resolve("tiny", flags={"rate.target_kbps": 2.0})
    assert config.target_nats_per_frame == pytest.approx(2000 * 0.6931471805599453 / 50)


def test_controllers_and_bottlenecks_have_their_own_sections(tmp_path):
    yaml_file = tmp_path / "o.yaml"
    yaml_file.write_text("rate:\n  lagrange:\n    lr: 0.004\nmodel:\n  rvq: {codebooks: 6}\n")
    config = resolve("tiny", [str(yaml_file)], ["rate.pi.kp=0.3", "model.vae.sigma_eps=1e-3"],
                     flags={"rate.target.kl_lambda": 2.0})
    assert config.rate.lagrange.lr == 0.004 and config.rate.lagrange.weight == 64.0
    assert config.rate.pi.kp == 0.3 and config.rate.target.kl_lambda == 2.0
    assert config.model.rvq.codebooks == 6 and config.model.vae.sigma_eps == 1e-3
    saved = config.to_dict()
    assert saved["rate"]["lagrange"] == {"weight": 64.0, "lr": 0.004}
    assert saved["model"]["rvq"]["codebooks"] == 6 and "rvq_codebooks" not in saved["model"]
    assert from_dict(saved) == config
    with pytest.raises(ConfigError, match=r"rate.lagrange.lr: expected a number"):
        resolve("tiny", assignments=["rate.lagrange.lr=fast"])
    with pytest.raises(ConfigError, match=r"unknown key rate.pi.gain"):
        resolve("tiny", assignments=["rate.pi.gain=1"])
    with pytest.raises(ConfigError, match=r"pi.beta_min=20.0 is above"):
        resolve("tiny", assignments=["rate.controller=pi", "rate.pi.beta_min=20"])
    with pytest.raises(ConfigError, match=r"model.rvq.codebooks must be >= 1"):
        resolve("tiny", assignments=["model.bottleneck=rvq", "model.rvq.codebooks=0"])


def test_a_config_json_with_the_old_flat_keys_loads_into_the_sections(tmp_path):
    """Runs saved before the sections existed kept every controller's and bottleneck's keys flat."""
    old = preset("tiny").to_dict()
    for section in ("rate", "model"):
        for name in ("fixed", "target", "capacity", "pi", "lagrange", "vae", "rvq"):
            old[section].pop(name, None)
    old["rate"].update(weight=9.0, beta=0.2, lagrange_lr=0.3, pi_kp=0.5, pi_ki=0.05, beta_min=0.1, beta_max=4.0,
                       capacity_anneal_steps=7, kl_lambda=2.0)
    old["model"].update(sigma_eps=1e-3, rvq_codebooks=2, rvq_codebook_size=256, rvq_codebook_dim=4,
                        quantizer_dropout=0.0, commitment_weight=0.5, codebook_weight=2.0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(old))
    config = load_run_config(run)
    rate, model = config.rate, config.model
    assert rate.lagrange.weight == rate.target.weight == rate.capacity.weight == 9.0
    assert (rate.fixed.beta, rate.lagrange.lr, rate.capacity.anneal_steps, rate.target.kl_lambda) == (0.2, 0.3, 7, 2.0)
    assert (rate.pi.kp, rate.pi.ki, rate.pi.beta_min, rate.pi.beta_max) == (0.5, 0.05, 0.1, 4.0)
    assert model.vae.sigma_eps == 1e-3
    assert dataclasses.asdict(model.rvq) == {"codebooks": 2, "codebook_size": 256, "codebook_dim": 4, "dropout": 0.0,
                                             "commitment_weight": 0.5, "codebook_weight": 2.0}
    with pytest.raises(ConfigError, match=r"rate.weight is now rate.target.weight / rate.capacity.weight / "
                                          r"rate.lagrange.weight"):
        resolve("tiny", assignments=["rate.weight=3"])
