"""A blind listening test of a sweep (MUSHRA-style, after ITU-R BS.1534-3), and its results.

``write_test(SWEEP, OUT)`` writes ``OUT/index.html``: one self-contained page (every sound embedded as a
WAV data URI, no server, no network) with one trial per example clip of the sweep. Each trial holds the
open reference, a hidden reference, a 3.5 kHz low-pass anchor and every chosen system's decode of that
clip, in an order shuffled per trial and per listener; a 0-100 slider each, play/stop, loop, and the
listener's name. "Save ratings" downloads ``ratings-<name>.json``; ratings are also kept in the browser's
local storage, so a page closed midway opens where it was left. ``OUT/test.json`` describes the test.

``aggregate(files)`` reads saved ratings: per system and rate, the mean score with its 95% interval
(Student's t over the kept listeners' ratings), and listener screening as BS.1534-3 post-screens: a
trial *misses* the hidden reference when it is rated below 90, and a listener who misses it in more
than 15% of their trials is left out of the means (the counts are reported either way).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf

from targetkl.errors import UserError
from targetkl.fileio import write_bytes_atomic, write_text_atomic

ANCHOR_HZ = 3500.0
REFERENCE_FOUND_SCORE = 90.0   # a hidden reference rated below this was not found
MAX_MISSED_SHARE = 0.15        # listeners who miss it more often are screened out
RATINGS_FORMAT = "targetkl-listening-ratings"
HIDDEN_REFERENCE, ANCHOR = "reference", "anchor"


class ListeningTestError(UserError, ValueError):
    """A sweep without examples, a bad choice of systems or clips, or a ratings file that is not one."""


def _wav_uri(audio: np.ndarray, sample_rate: int) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def low_pass_anchor(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(samples[, channels])`` -> the same low-passed at :data:`ANCHOR_HZ` (8th-order Butterworth, zero phase)."""
    from scipy.signal import butter, sosfiltfilt

    if sample_rate <= 2 * ANCHOR_HZ:
        return audio.copy()
    sos = butter(8, ANCHOR_HZ, fs=sample_rate, output="sos")
    return sosfiltfilt(sos, audio, axis=0) if len(audio) > 27 else audio.copy()


def _read(path: str, where: Path) -> tuple[np.ndarray, int]:
    try:
        return sf.read(path, dtype="float64", always_2d=False)
    except (OSError, RuntimeError, sf.LibsndfileError) as error:
        raise ListeningTestError(f"{path}: cannot read this example of {where} ({error}); run the sweep again to "
                                 "write it") from None


def _sweep_rows(sweep: Path) -> tuple[list[dict], list[str]]:
    try:
        rows = json.loads((sweep / "rd.json").read_text())
        originals = json.loads((sweep / "sweep.json").read_text())["originals"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ListeningTestError(f"{sweep}: not a finished sweep folder (rd.json and sweep.json: {error}); run "
                                 "`targetkl sweep` first") from None
    rows = [r for r in rows if r.get("domain", "all") == "all" and r.get("audio")]
    return rows, originals


def write_test(sweep: str | Path, out: str | Path, clips: int | None = None, systems: list[str] | None = None) -> dict:
    """Write ``out/index.html`` and ``out/test.json`` for the sweep folder ``sweep``; returns the test's
    description. ``clips``: the first N example clips (default: all the sweep wrote); ``systems``: names
    of systems (``vae``, ``rvq``, ``opus``...) or points (``vae-2kbps``), default every point with audio."""
    sweep, out = Path(sweep).resolve(), Path(out)
    rows, originals = _sweep_rows(sweep)
    if not originals or not rows:
        raise ListeningTestError(f"{sweep}: the sweep wrote no example clips to listen to")
    if systems:
        known = {r["system"] for r in rows} | {f"{r['system']}-{r['label']}" for r in rows}
        unknown = [s for s in systems if s not in known]
        if unknown:
            raise ListeningTestError(f"--systems {','.join(unknown)}: not in {sweep}; choose from "
                                     f"{', '.join(sorted(known))}")
        rows = [r for r in rows if r["system"] in systems or f"{r['system']}-{r['label']}" in systems]
    count = len(originals) if clips is None else clips
    if not 1 <= count <= len(originals):
        raise ListeningTestError(f"--clips {count}: {sweep} holds {len(originals)} example clips; ask for 1 to "
                                 f"{len(originals)} (sweep writes its first held-out clips as examples)")
    stimuli = [{"id": "s0", "kind": HIDDEN_REFERENCE, "system": HIDDEN_REFERENCE, "label": "", "rate_kbps": None},
               {"id": "s1", "kind": ANCHOR, "system": ANCHOR, "label": f"low-pass {ANCHOR_HZ / 1000:g} kHz",
                "rate_kbps": None}]
    for index, row in enumerate(rows):
        stimuli.append({"id": f"s{index + 2}", "kind": "system", "system": row["system"], "label": row["label"],
                        "rate_kbps": row.get("rate_kbps")})
    trials = []
    for clip in range(count):
        reference, sample_rate = _read(originals[clip], sweep)
        sounds = {"s0": reference, "s1": low_pass_anchor(reference, sample_rate)}
        for index, row in enumerate(rows):
            decoded, rate_of = _read(row["audio"][clip], sweep)
            if rate_of != sample_rate:
                raise ListeningTestError(f"{row['audio'][clip]}: {rate_of} Hz, the original is {sample_rate} Hz")
            fitted = np.zeros_like(reference)
            length = min(len(decoded), len(reference))
            fitted[:length] = decoded[:length] if decoded.ndim == reference.ndim else \
                np.asarray(decoded[:length]).reshape(length, *reference.shape[1:])
            sounds[f"s{index + 2}"] = fitted
        trials.append({"clip": clip, "reference": _wav_uri(reference, sample_rate),
                       "stimuli": {key: _wav_uri(audio, sample_rate) for key, audio in sounds.items()}})
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    test_id = f"{sweep.name}-{hashlib.sha256(f'{sweep} {Path(out).resolve()} {created}'.encode()).hexdigest()[:10]}"
    description = {"test_id": test_id, "sweep": str(sweep), "created": created, "clips": count,
                   "stimuli": stimuli, "anchor_hz": ANCHOR_HZ}
    out.mkdir(parents=True, exist_ok=True)
    page = PAGE.replace("__TEST__", json.dumps({**description, "trials": trials}).replace("</", "<\\/"))
    write_text_atomic(out / "index.html", page)
    write_text_atomic(out / "test.json", json.dumps(description, indent=2) + "\n")
    return description


# ---------------------------------------------------------------------------------------------- results
def _load_ratings(path: Path) -> dict:
    try:
        ratings = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ListeningTestError(f"{path}: not a readable ratings file ({error})") from None
    if not isinstance(ratings, dict) or ratings.get("format") != RATINGS_FORMAT \
            or not isinstance(ratings.get("trials"), list) or not isinstance(ratings.get("stimuli"), list):
        raise ListeningTestError(f"{path}: not a ratings file saved by a targetkl listening test page "
                                 "(its 'format', 'trials' and 'stimuli' are missing)")
    return ratings


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% Student-t interval, cut to the scale's 0-100 (the mean twice for a single value)."""
    from scipy.stats import t

    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, mean, mean
    half = float(t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return mean, max(mean - half, 0.0), min(mean + half, 100.0)  # the scale ends at 0 and 100


def aggregate(files: list[str | Path]) -> dict:
    """Ratings files (all of one test) -> ``{"test_id", "sweep", "listeners": [...], "rows": [...]}``: one
    row per stimulus (hidden reference, anchor, each system) with ``score``, ``score_lo``, ``score_hi`` and
    ``ratings`` over the kept listeners; each listener with ``trials``, ``missed_reference`` and ``kept``."""
    if not files:
        raise ListeningTestError("--results: name at least one ratings file (ratings-<name>.json)")
    loaded = [(Path(f), _load_ratings(Path(f))) for f in files]
    test_ids = {r.get("test_id") for _, r in loaded}
    if len(test_ids) != 1:
        raise ListeningTestError(f"{', '.join(str(f) for f, _ in loaded)}: ratings of {len(test_ids)} different "
                                 "tests; aggregate each test's files on their own")
    stimuli = {s["id"]: s for s in loaded[0][1]["stimuli"]}
    listeners, scores = [], {key: [] for key in stimuli}
    for path, ratings in loaded:
        trials = [t for t in ratings["trials"] if isinstance(t, dict) and isinstance(t.get("ratings"), dict)]
        rated = [t for t in trials if t["ratings"]]
        missed = sum(1 for t in rated if float(t["ratings"].get("s0", 0)) < REFERENCE_FOUND_SCORE)
        share = missed / len(rated) if rated else 1.0
        listener = {"listener": str(ratings.get("listener") or path.stem), "file": str(path.resolve()),
                    "trials": len(rated), "missed_reference": missed, "missed_share": share,
                    "kept": bool(rated) and share <= MAX_MISSED_SHARE}
        listeners.append(listener)
        listener["_rated"] = rated
    kept = [entry for entry in listeners if entry["kept"]]
    used = kept or listeners
    for entry in used:
        for trial in entry["_rated"]:
            for key, value in trial["ratings"].items():
                if key in scores and isinstance(value, (int, float)) and 0 <= value <= 100:
                    scores[key].append(float(value))
    rows = []
    for key, stimulus in stimuli.items():
        if not scores[key]:
            continue
        mean, low, high = _interval(scores[key])
        rows.append({"system": stimulus["system"], "label": stimulus["label"], "kind": stimulus["kind"],
                     "rate_kbps": stimulus.get("rate_kbps"), "score": mean, "score_lo": low, "score_hi": high,
                     "ratings": len(scores[key])})
    for entry in listeners:
        del entry["_rated"]
    trials = sum(entry["trials"] for entry in listeners)
    return {"test_id": test_ids.pop(), "sweep": loaded[0][1].get("sweep"), "listeners": listeners,
            "kept_listeners": len(kept), "screening": "" if kept else "no listener passed the screening: the "
            "means use every listener", "missed_reference_share":
            sum(e["missed_reference"] for e in listeners) / trials if trials else None, "rows": rows,
            "reference_found_score": REFERENCE_FOUND_SCORE, "max_missed_share": MAX_MISSED_SHARE}


def plot_results(results: dict) -> bytes:
    """Mean score with its 95% interval against measured kbps, one line per system; the hidden reference
    and the anchor as horizontal bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from targetkl.eval.report import SYSTEM_NAMES, figure_png

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in results["rows"]:
        if row["kind"] != "system":
            style = {"color": "black", "linestyle": "--"} if row["kind"] == HIDDEN_REFERENCE else \
                {"color": "gray", "linestyle": ":"}
            axis.axhspan(row["score_lo"], row["score_hi"], alpha=0.08, color=style["color"])
            axis.axhline(row["score"], **style, label=f"hidden {row['kind']}" if row["kind"] == HIDDEN_REFERENCE
                         else f"anchor ({row['label']})")
    systems = dict.fromkeys(r["system"] for r in results["rows"] if r["kind"] == "system")
    for system in systems:
        points = sorted((r for r in results["rows"] if r["system"] == system and r["rate_kbps"] is not None),
                        key=lambda r: r["rate_kbps"])
        if not points:
            continue
        x = [p["rate_kbps"] for p in points]
        y = [p["score"] for p in points]
        errors = [[p["score"] - p["score_lo"] for p in points], [p["score_hi"] - p["score"] for p in points]]
        axis.errorbar(x, y, yerr=errors, marker="o", capsize=3, label=SYSTEM_NAMES.get(system, system))
    axis.set_xscale("log")
    from matplotlib.ticker import ScalarFormatter

    for formatter in (axis.xaxis.set_major_formatter, axis.xaxis.set_minor_formatter):
        formatter(ScalarFormatter())
    axis.set_ylim(0, 100)
    axis.set_xlabel("measured rate (kbps)")
    axis.set_ylabel("MUSHRA score (mean, 95% interval)")
    axis.set_title(f"listening test: {results['kept_listeners']} of {len(results['listeners'])} listeners kept")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figure_png(figure)


def write_results(files: list[str | Path], out: str | Path | None = None) -> tuple[dict, Path]:
    """Aggregate ``files`` into ``out/listening.json`` and ``out/listening.png`` (``out``: the test folder
    above the ratings, else the ratings' folder); when the test's sweep folder exists, into it too, with a
    section in its ``report.html``. Returns the results and the folder written."""
    results = aggregate(files)
    if out is None:
        first = Path(files[0]).resolve().parent
        out = first.parent if (first.parent / "test.json").is_file() else first
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text, image = json.dumps(results, indent=2) + "\n", plot_results(results)
    folders = [out]
    sweep = Path(results["sweep"]) if results.get("sweep") else None
    if sweep is not None and (sweep / "rd.json").is_file() and (sweep / "sweep.json").is_file():
        folders.append(sweep)
    for folder in folders:
        write_text_atomic(folder / "listening.json", text)
        write_bytes_atomic(folder / "listening.png", image)
    if len(folders) > 1:
        from targetkl.eval.report import refresh_report

        refresh_report(sweep)
    return results, out


def format_results(results: dict) -> str:
    lines = [f"{'system':<12} {'point':<18} {'kbps':>7} {'score':>6} {'95% interval':>15} {'n':>4}"]
    for row in results["rows"]:
        kbps = f"{row['rate_kbps']:.3f}" if row["rate_kbps"] is not None else ""
        lines.append(f"{row['system']:<12} {row['label']:<18} {kbps:>7} {row['score']:>6.1f} "
                     f"{'[' + format(row['score_lo'], '.1f') + ', ' + format(row['score_hi'], '.1f') + ']':>15} "
                     f"{row['ratings']:>4}")
    missed = results["missed_reference_share"]
    lines.append(f"{results['kept_listeners']} of {len(results['listeners'])} listeners kept (hidden reference "
                 f"rated below {REFERENCE_FOUND_SCORE:g} in at most {MAX_MISSED_SHARE:.0%} of trials); hidden "
                 f"reference missed in {missed:.0%} of all trials" if missed is not None else "no rated trials")
    if results["screening"]:
        lines.append(results["screening"])
    return "\n".join(lines)


def results_section(results: dict) -> str:
    """The listening test's section of ``report.html``."""
    rows = "".join(
        f"<tr><td>{html.escape(r['system'])}</td><td>{html.escape(r['label'])}</td>"
        f"<td>{'' if r['rate_kbps'] is None else format(r['rate_kbps'], '.3f')}</td><td>{r['score']:.1f}</td>"
        f"<td>[{r['score_lo']:.1f}, {r['score_hi']:.1f}]</td><td>{r['ratings']}</td></tr>" for r in results["rows"])
    missed = results.get("missed_reference_share")
    return "\n".join([
        "<h2>Listening test (MUSHRA-style)</h2>",
        f"<p>{results['kept_listeners']} of {len(results['listeners'])} listeners kept: a listener who rated the "
        f"hidden reference below {REFERENCE_FOUND_SCORE:g} in more than {MAX_MISSED_SHARE:.0%} of trials is left "
        f"out (ITU-R BS.1534-3 post-screening). Hidden reference missed in "
        f"{'-' if missed is None else format(missed, '.0%')} of all trials. {html.escape(results['screening'])} "
        "Two systems whose intervals overlap are not called better or worse.</p>",
        "<img id='listening' src='listening.png' alt='listening test scores'>",
        "<table><thead><tr><th>system</th><th>point</th><th>kbps</th><th>score</th><th>95% interval</th>"
        f"<th>ratings</th></tr></thead><tbody>{rows}</tbody></table>"])


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Listening test</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:1100px}
.stimuli{display:flex;gap:14px;flex-wrap:wrap;margin:1em 0}
.stimulus{border:1px solid #ccc;border-radius:6px;padding:8px;width:90px;text-align:center}
.stimulus.playing,.reference.playing{background:#e8f0ff;border-color:#36c}
.stimulus input[type=range]{writing-mode:vertical-lr;direction:rtl;height:220px;width:30px}
.scale{font-size:11px;color:#555}.value{font-weight:bold}
button{margin:2px;padding:6px 10px}#message{color:#a00}
</style></head>
<body data-state="loading">
<h1>Listening test</h1>
<p>Each trial has a <b>reference</b> and several versions of it, one of them the reference itself, hidden.
Listen as often as you like, then rate how close each version sounds to the reference: 100 means you hear no
difference (rate the hidden reference 100), 0 very poor. Scale: 80-100 excellent, 60-80 good, 40-60 fair,
20-40 poor, 0-20 bad. Your ratings are kept in this browser; "Save ratings" downloads them as a file to send
back.</p>
<p><label>Your name <input id="listener" autocomplete="name"></label>
<label><input type="checkbox" id="loop" checked> loop</label>
<button id="stop">Stop</button></p>
<h2 id="position"></h2>
<div><button class="reference" id="reference">Play reference</button></div>
<div class="stimuli" id="stimuli"></div>
<p><button id="previous">&larr; Previous trial</button><button id="next">Next trial &rarr;</button>
<button id="save">Save ratings</button></p>
<p id="message"></p>
<script id="test-data" type="application/json">__TEST__</script>
<script>
(function () {
  var test = JSON.parse(document.getElementById('test-data').textContent);
  var key = 'targetkl-listening-' + test.test_id;
  var state = null;
  try { state = JSON.parse(localStorage.getItem(key) || 'null'); } catch (e) { state = null; }
  function shuffled(items) {
    var copy = items.slice();
    for (var i = copy.length - 1; i > 0; i--) {
      var j = Math.floor(Math.random() * (i + 1)); var t = copy[i]; copy[i] = copy[j]; copy[j] = t;
    }
    return copy;
  }
  if (!state || state.test_id !== test.test_id) {
    state = {test_id: test.test_id, listener: '', trial: 0, trials: test.trials.map(function (t) {
      return {clip: t.clip, order: shuffled(Object.keys(t.stimuli)), ratings: {}, played: {}};
    })};
  }
  function persist() { try { localStorage.setItem(key, JSON.stringify(state)); } catch (e) {} }
  var players = {}, current = null;
  var nameBox = document.getElementById('listener'), loopBox = document.getElementById('loop');
  nameBox.value = state.listener || '';
  nameBox.addEventListener('input', function () { state.listener = nameBox.value; persist(); });
  function stopAll() {
    Object.keys(players).forEach(function (id) { players[id].pause(); });
    Array.prototype.forEach.call(document.querySelectorAll('.playing'), function (e) {
      e.classList.remove('playing');
    });
    current = null;
  }
  function play(id, element) {
    var position = current ? current.currentTime : 0;
    stopAll();
    var audio = players[id];
    audio.loop = loopBox.checked;
    try { audio.currentTime = position < audio.duration ? position : 0; } catch (e) {}
    audio.play();
    current = audio;
    element.classList.add('playing');
    var trial = state.trials[state.trial];
    if (id !== 'reference') { trial.played[id] = true; persist(); }
  }
  loopBox.addEventListener('change', function () {
    Object.keys(players).forEach(function (id) { players[id].loop = loopBox.checked; });
  });
  document.getElementById('stop').addEventListener('click', stopAll);
  function render() {
    stopAll();
    var trial = state.trials[state.trial], data = test.trials[state.trial];
    document.getElementById('position').textContent = 'Trial ' + (state.trial + 1) + ' of ' + state.trials.length;
    players = {reference: new Audio(data.reference)};
    var box = document.getElementById('stimuli');
    box.innerHTML = '';
    trial.order.forEach(function (id, index) {
      players[id] = new Audio(data.stimuli[id]);
      var cell = document.createElement('div');
      cell.className = 'stimulus'; cell.dataset.stimulus = id;
      var letter = String.fromCharCode(65 + index);
      var button = document.createElement('button');
      button.textContent = 'Play ' + letter; button.className = 'play';
      button.addEventListener('click', function () { play(id, cell); });
      var slider = document.createElement('input');
      slider.type = 'range'; slider.min = 0; slider.max = 100; slider.step = 1;
      slider.value = trial.ratings[id] !== undefined ? trial.ratings[id] : 0;
      slider.setAttribute('aria-label', 'rating of ' + letter);
      var value = document.createElement('div');
      value.className = 'value'; value.textContent = trial.ratings[id] !== undefined ? trial.ratings[id] : '-';
      slider.addEventListener('input', function () {
        trial.ratings[id] = Number(slider.value); value.textContent = slider.value; persist();
      });
      var scale = document.createElement('div'); scale.className = 'scale'; scale.textContent = '0 - 100';
      cell.appendChild(button); cell.appendChild(value); cell.appendChild(slider); cell.appendChild(scale);
      box.appendChild(cell);
    });
    document.getElementById('previous').disabled = state.trial === 0;
    document.getElementById('next').disabled = state.trial === state.trials.length - 1;
    persist();
  }
  var referenceButton = document.getElementById('reference');
  referenceButton.addEventListener('click', function () { play('reference', referenceButton); });
  document.getElementById('previous').addEventListener('click', function () { state.trial -= 1; render(); });
  document.getElementById('next').addEventListener('click', function () { state.trial += 1; render(); });
  document.getElementById('save').addEventListener('click', function () {
    var message = document.getElementById('message');
    if (!state.listener.trim()) { message.textContent = 'Write your name first.'; nameBox.focus(); return; }
    var unrated = state.trials.filter(function (t) { return Object.keys(t.ratings).length < t.order.length; }).length;
    var saved = {format: 'targetkl-listening-ratings', version: 1, test_id: test.test_id, sweep: test.sweep,
                 listener: state.listener.trim(), saved: new Date().toISOString(), user_agent: navigator.userAgent,
                 stimuli: test.stimuli, trials: state.trials};
    var blob = new Blob([JSON.stringify(saved, null, 1)], {type: 'application/json'});
    var link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = 'ratings-' + saved.listener.replace(/[^A-Za-z0-9_-]+/g, '_') + '.json';
    document.body.appendChild(link); link.click(); link.remove();
    message.textContent = 'Saved ' + link.download + (unrated ? ' (' + unrated + ' trials not fully rated)' : '') +
      '. Send this file back.';
    document.body.dataset.state = 'saved';
  });
  // what plays now: read by the page's browser test
  window.nowPlaying = function () {
    return current ? {time: current.currentTime, paused: current.paused, loop: current.loop} : null;
  };
  render();
  document.body.dataset.state = 'ready';
})();
</script>
</body></html>
"""
