"""The Shannon-limit check: reverse water-filling by hand, and every controller on the Gaussian source."""

import json

import pytest

from targetkl.cli import main
from targetkl.sanity import SanityConfig, reverse_water_filling, run_sanity


def test_reverse_water_filling_matches_hand_values():
    # variances 4 and 1: at 1 bit only the first component is coded (theta = 1), D = 1 + 1
    assert reverse_water_filling([4.0, 1.0], 1.0) == pytest.approx((2.0, 1.0))
    # at 2 bits both are coded: 0.5*log2(4/theta) + 0.5*log2(1/theta) = 2 -> theta = 0.5, D = 2 * 0.5
    assert reverse_water_filling([4.0, 1.0], 2.0) == pytest.approx((1.0, 0.5))
    # nothing spent: the variances themselves
    assert reverse_water_filling([4.0, 1.0], 0.0)[0] == pytest.approx(5.0)
    # one component: D = sigma^2 * 2^(-2R)
    assert reverse_water_filling([3.0], 2.5)[0] == pytest.approx(3.0 * 2 ** -5)
    # equal variances share the bits: 4 components at 4 bits -> 1 bit each -> D = 4 * 2 * 2^-2
    assert reverse_water_filling([2.0] * 4, 4.0)[0] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def rows():
    return run_sanity(["target", "capacity", "pi", "lagrange", "fixed"], [2.0, 6.0, 12.0], SanityConfig(),
                      progress=False)


def test_controllers_reach_their_targets_and_the_best_is_near_shannon(rows):
    for row in rows:
        assert row["distortion"] >= row["shannon_distortion"] * 10 ** (-0.05)  # never below the limit
        if row["controller"] != "fixed":
            assert abs(row["reached_bits"] - row["target_bits"]) / row["target_bits"] < 0.01, row
    for target in (2.0, 6.0, 12.0):
        best = min(r["gap_db"] for r in rows if r["target_bits"] == target and r["controller"] != "fixed")
        assert best < 0.5, (target, best)
    fixed = [r["reached_bits"] for r in rows if r["controller"] == "fixed"]
    assert max(fixed) - min(fixed) < 0.05  # a fixed beta lands where it lands, whatever the target


def test_sanity_command_writes_the_json_rows(tmp_path, capsys):
    out = tmp_path / "sanity.json"
    command = ["sanity", "--controllers", "lagrange", "--bits", "4", "--steps", "1500", "--json", str(out), "-q"]
    assert main(command) == 0
    saved = json.loads(out.read_text())
    assert len(saved) == 1
    columns = {"controller", "target_bits", "reached_bits", "distortion", "shannon_distortion", "gap_db"}
    assert columns <= saved[0].keys()
    assert abs(saved[0]["reached_bits"] - 4.0) < 0.1
    assert "gap" in capsys.readouterr().out
