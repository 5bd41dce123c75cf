import pytest

from targetkl.config import ConfigError, apply_overrides, load_override_file, preset, resolve, validate


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
