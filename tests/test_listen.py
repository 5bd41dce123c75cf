"""The listening test: the page driven in headless Chromium (play, sliders, save, reload), and the
aggregation of ratings with listener screening."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import Chromium, write_fake_sweep
from targetkl.cli import main
from targetkl.eval.listen import ListeningTestError, aggregate, low_pass_anchor, write_test

RATE = 16000


@pytest.fixture
def fake_sweep(tmp_path):
    return write_fake_sweep(tmp_path / "sweep", clips=2)


def test_the_anchor_is_the_reference_low_passed_at_3_5_khz():
    t = np.arange(RATE) / RATE
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    anchored = low_pass_anchor(low + high, RATE)
    assert np.abs(anchored - low)[1000:-1000].max() < 0.02  # 1 kHz kept, 6 kHz gone


def test_page_in_headless_chromium_plays_rates_saves_and_keeps_ratings(fake_sweep, tmp_path, capsys):
    assert main(["listen", str(fake_sweep), "--out", str(tmp_path / "test"), "--clips", "2"]) == 0
    page = tmp_path / "test" / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched from a network
    test = json.loads((tmp_path / "test" / "test.json").read_text())
    assert [s["system"] for s in test["stimuli"]] == ["reference", "anchor", "vae", "rvq", "opus"]
    browser = Chromium(tmp_path / "browser")
    try:
        browser.open(page)
        assert browser.evaluate("document.getElementById('position').textContent") == "Trial 1 of 2"
        orders = []
        browser.type_text("#listener", "Ada Lovelace")
        for trial in range(2):
            order = browser.evaluate("Array.prototype.map.call(document.querySelectorAll('.stimulus'), "
                                     "function (e) { return e.dataset.stimulus; })")
            assert sorted(order) == ["s0", "s1", "s2", "s3", "s4"]
            orders.append(order)
            browser.click("#reference")
            playing = browser.wait_for("window.nowPlaying() && window.nowPlaying().time > 0.05 && window.nowPlaying()")
            assert not playing["paused"] and playing["loop"]
            for index, stimulus in enumerate(order):
                browser.click(f".stimulus[data-stimulus='{stimulus}'] button.play")
                browser.wait_for("window.nowPlaying() && !window.nowPlaying().paused")
                # a vertical slider: the top is 100, the bottom 0
                wanted = {"s0": 0.02, "s1": 0.9}.get(stimulus, 0.3 + 0.1 * index)
                browser.click(f".stimulus[data-stimulus='{stimulus}'] input[type=range]", fraction_y=wanted)
            browser.click("#stop")
            assert browser.evaluate("window.nowPlaying()") is None
            if trial == 0:
                browser.click("#next")
        values = browser.evaluate("Array.prototype.map.call(document.querySelectorAll('.stimulus'), function (e) "
                                  "{ return [e.dataset.stimulus, Number(e.querySelector('input').value)]; })")
        assert dict(values)["s0"] >= 95 and dict(values)["s1"] <= 15
        browser.screenshot(tmp_path / "page.png")
        browser.click("#save")
        browser.wait_for("document.body.dataset.state === 'saved'")
        import time

        saved = browser.downloads / "ratings-Ada_Lovelace.json"
        deadline = time.time() + 30
        while not saved.is_file() and time.time() < deadline:
            time.sleep(0.1)
        ratings = json.loads(saved.read_text())
        # closed midway and opened again: the name and the ratings are still there
        browser.open(page)
        assert browser.evaluate("document.getElementById('listener').value") == "Ada Lovelace"
        assert browser.evaluate("document.getElementById('position').textContent") == "Trial 2 of 2"
        kept = browser.evaluate("Array.prototype.map.call(document.querySelectorAll('.stimulus'), function (e) "
                                "{ return [e.dataset.stimulus, Number(e.querySelector('input').value)]; })")
        assert kept == values
    finally:
        browser.close()
    assert ratings["format"] == "targetkl-listening-ratings" and ratings["listener"] == "Ada Lovelace"
    assert ratings["test_id"] == test["test_id"] and len(ratings["trials"]) == 2
    assert [t["order"] for t in ratings["trials"]] == orders
    for trial in ratings["trials"]:
        assert set(trial["ratings"]) == {"s0", "s1", "s2", "s3", "s4"} and all(trial["played"].values())
        assert trial["ratings"]["s0"] >= 95 and trial["ratings"]["s1"] <= 15
    import matplotlib.image

    pixels = matplotlib.image.imread(str(tmp_path / "page.png"))
    assert pixels.shape[1] == 1200 and pixels.shape[0] > 1000
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::53], axis=0)) > 5
    # the results, into the test folder and the sweep's report
    ratings_folder = tmp_path / "test" / "ratings"
    ratings_folder.mkdir()
    (ratings_folder / saved.name).write_text(saved.read_text())
    capsys.readouterr()
    assert main(["listen", "--results", str(ratings_folder / saved.name)]) == 0
    printed = capsys.readouterr().out
    assert "1 of 1 listeners kept" in printed
    results = json.loads((tmp_path / "test" / "listening.json").read_text())
    assert json.loads((fake_sweep / "listening.json").read_text()) == results
    by_system = {r["system"]: r for r in results["rows"]}
    assert by_system["reference"]["score"] >= 95 and by_system["reference"]["ratings"] == 2
    assert (fake_sweep / "listening.png").read_bytes()[:4] == b"\x89PNG"
    report = (fake_sweep / "report.html").read_text()
    assert "Listening test (MUSHRA-style)" in report and "listening.png" in report


def _ratings_file(path, listener: str, trials: list[dict], test_id: str = "t1") -> str:
    stimuli = [{"id": "s0", "kind": "reference", "system": "reference", "label": "", "rate_kbps": None},
               {"id": "s1", "kind": "anchor", "system": "anchor", "label": "low-pass 3.5 kHz", "rate_kbps": None},
               {"id": "s2", "kind": "system", "system": "vae", "label": "2kbps", "rate_kbps": 1.98}]
    path.write_text(json.dumps({"format": "targetkl-listening-ratings", "test_id": test_id, "sweep": None,
                                "listener": listener, "stimuli": stimuli,
                                "trials": [{"clip": i, "order": ["s0", "s1", "s2"], "ratings": r}
                                           for i, r in enumerate(trials)]}))
    return str(path)


def test_aggregate_gives_means_t_intervals_and_screens_listeners(tmp_path):
    good = _ratings_file(tmp_path / "a.json", "a", [{"s0": 100, "s1": 20, "s2": 60}, {"s0": 95, "s1": 10, "s2": 70}])
    fair = _ratings_file(tmp_path / "b.json", "b", [{"s0": 90, "s1": 30, "s2": 80}, {"s0": 100, "s1": 20, "s2": 90}])
    # misses the hidden reference in 1 of 2 trials (50% > 15%): left out of the means
    careless = _ratings_file(tmp_path / "c.json", "c", [{"s0": 40, "s1": 90, "s2": 100}, {"s0": 100, "s2": 0}])
    results = aggregate([good, fair, careless])
    assert [(e["listener"], e["missed_reference"], e["kept"]) for e in results["listeners"]] == [
        ("a", 0, True), ("b", 0, True), ("c", 1, False)]
    assert results["kept_listeners"] == 2 and results["missed_reference_share"] == pytest.approx(1 / 6)
    vae = next(r for r in results["rows"] if r["system"] == "vae")
    scores = np.array([60, 70, 80, 90.0])
    half = 3.182446305284263 * scores.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert vae["score"] == pytest.approx(75.0) and vae["ratings"] == 4
    assert (vae["score_lo"], vae["score_hi"]) == pytest.approx((75 - half, 75 + half))
    with pytest.raises(ListeningTestError, match="2 different tests"):
        aggregate([good, _ratings_file(tmp_path / "d.json", "d", [{"s0": 100}], test_id="other")])
    (tmp_path / "bad.json").write_text("{\"format\": \"something else\"}")
    with pytest.raises(ListeningTestError, match="bad.json: not a ratings file"):
        aggregate([str(tmp_path / "bad.json")])


def test_bad_choices_get_one_line(fake_sweep, tmp_path, capsys):
    assert main(["listen", str(fake_sweep), "--clips", "3"]) == 2
    assert "holds 2 example clips" in capsys.readouterr().err
    assert main(["listen", str(fake_sweep), "--systems", "vae,flac"]) == 2
    assert "--systems flac: not in" in capsys.readouterr().err
    assert main(["listen", str(tmp_path)]) == 2
    assert "not a finished sweep folder" in capsys.readouterr().err
    assert main(["listen"]) == 2
    assert "name a sweep folder" in capsys.readouterr().err
    test = write_test(fake_sweep, tmp_path / "only-vae", clips=1, systems=["vae-1kbps", "opus"])
    assert [s["system"] for s in test["stimuli"]] == ["reference", "anchor", "vae", "opus"] and test["clips"] == 1
