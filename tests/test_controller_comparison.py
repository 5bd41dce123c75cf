"""`targetkl controllers`: settling steps from a rate series, and the comparison files."""

import json

from targetkl.cli import main
from targetkl.eval.controllers import settled_step

QUICK = ["train.steps=3", "train.batch_size=2", "train.checkpoint_every=3", "train.warmup_steps=1",
         "model.encoder_dim=4", "model.decoder_dim=8", "loss.mel_windows=[128,256]", "loss.stft_windows=[256]",
         "rate.free_steps=0", "rate.warmup_steps=0", "rate.calibrate_every=1", "rate.calibrate_clips=2"]


def test_settled_step_is_the_first_step_that_stays_within_two_percent():
    series = [(10, 3.0), (20, 2.03), (30, 1.99), (40, 2.1), (50, 2.01), (60, 1.97), (70, 2.0)]
    assert settled_step(series, 2.0) == 50
    assert settled_step(series[:4], 2.0) is None
    assert settled_step([(10, 2.0)], 2.0) == 10


def test_command_writes_table_csv_and_plot(small_corpus, tmp_path, capsys):
    args = ["controllers", "--data", str(small_corpus), "--out", str(tmp_path), "--kbps", "1",
            "--controllers", "target,lagrange", "-q"]
    for assignment in QUICK:
        args += ["--set", assignment]
    assert main(args) == 0
    rows = json.loads((tmp_path / "controllers.json").read_text())
    assert [r["controller"] for r in rows] == ["target", "lagrange"]
    for row in rows:
        assert row["target_kbps"] == 1.0 and row["rate_kbps"] > 0
        assert abs(row["rate_error_percent"] - 100 * (row["rate_kbps"] - 1.0)) < 1e-9
    assert (tmp_path / "controllers.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "controllers.csv").read_text().startswith("controller,target_kbps,rate_kbps")
    assert "settled" in capsys.readouterr().out
