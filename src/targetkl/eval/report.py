"""Write a sweep's results: ``rd.csv``, ``rd.json``, ``rd.png`` and ``report.html``.

``rd.png`` has one panel per metric (distortion against measured kbps on a log axis, one line per
system). Plain autoencoders have no honest bitrate, so they appear in their own table of latent values
per second, never on the kbps axis.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from pathlib import Path

from targetkl.eval.geometry import GEOMETRY_COLUMNS, GEOMETRY_KEYS
from targetkl.eval.metrics import METRICS as REGISTERED
from targetkl.eval.metrics import aggregation_texts, metric_names
from targetkl.fileio import without_nan, write_bytes_atomic, write_text_atomic
from targetkl import rate
from targetkl.rate import OFF_TARGET_PERCENT

METRICS = metric_names()  # the registry's (targetkl.eval.metrics.METRICS), in its order
SPEECH_REFERENCE = tuple(name for name in metric_names(reference_only=True) if name not in METRICS)
ROW_METRICS = METRICS + SPEECH_REFERENCE
INTERVAL = ("_lo", "_hi")  # the 95% bootstrap interval over clips beside each aggregate
ROW_KEYS = tuple(key + suffix for key in ROW_METRICS for suffix in ("", *INTERVAL))  # a row's metric columns
HIGHER_IS_BETTER = {name for name, metric in REGISTERED.items() if metric.higher_is_better}
COLUMNS = ("system", "label", "domain", "target_kbps", "rate_kbps", "rate_kbps_lo", "rate_kbps_hi",
           "rate_error_percent", "off_target", "file_kbps", "latent_values_per_second", *ROW_KEYS, "latent_use",
           "latent_use_lo", "latent_use_hi", *GEOMETRY_COLUMNS, "run")
TARGET_KL_SYSTEM = "vae"  # the sweep's name for the target-KL VAEs (the other systems are baselines)
SYSTEM_NAMES = {"vae": "target-KL VAE", "vae-oobleck": "target-KL VAE, Oobleck", "vae-dac": "target-KL VAE, DAC",
                "tkl": "target-KL VAE, .tkl files", "rvq": "RVQ (same codec)", "beta": "fixed-beta VAE",
                "ae": "autoencoder", "opus": "Opus", "mp3": "MP3 (lame)", "codec2": "Codec 2"}


def _has_value(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def rate_rows(rows: list[dict]) -> list[dict]:
    """Rows that have a measured bitrate (everything but the plain autoencoders)."""
    return [r for r in rows if _has_value(r.get("rate_kbps"))]


def pooled_rows(rows: list[dict]) -> list[dict]:
    """The rows measured over all held-out clips (``domain`` absent or ``all``), not one domain's."""
    return [r for r in rows if r.get("domain", "all") == "all"]


def with_domain_rows(rows: list[dict]) -> list[dict]:
    """``rd.json``'s rows from the sweep's: where the source has domains, each row gets ``domain: all`` and is
    followed by one row per domain (its ``by_domain`` values, with their rate error and off-target flag)."""
    if not any(r.get("by_domain") for r in rows):
        return [{k: v for k, v in r.items() if k != "by_domain"} for r in rows]
    expanded = []
    for row in rows:
        pooled = {k: v for k, v in row.items() if k != "by_domain"}
        expanded.append({**pooled, "domain": "all"})
        for domain, values in (row.get("by_domain") or {}).items():
            one = {**{k: pooled.get(k) for k in ("system", "label", "target_kbps", "run", "step")}, "domain": domain,
                   **values}
            one["rate_error_percent"] = rate.rate_error_percent(one.get("rate_kbps"), one.get("target_kbps"))
            one["off_target"] = pooled.get("controlled", True) and rate.off_target(one.get("rate_kbps"),
                                                                                    one.get("target_kbps"))
            expanded.append(one)
    return expanded


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    """Atomically write ``columns`` of ``rows``; missing and NaN values as empty cells."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if not _has_value(row.get(k)) else row.get(k)) for k in columns})
    write_text_atomic(path, buffer.getvalue())


def figure_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi, tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def plot_rate_distortion(rows: list[dict]) -> bytes:
    """PNG bytes: one panel per metric that has values, distortion vs measured kbps (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = rate_rows(rows)
    domains = list(dict.fromkeys(r["domain"] for r in rated if r.get("domain", "all") != "all"))
    metrics = [m for m in METRICS if any(_has_value(r.get(m)) for r in rated)]
    panels = [(metric, "all") for metric in metrics] + [("mel_distance", domain) for domain in domains
                                                         if "mel_distance" in metrics]
    columns = min(3, max(1, len(panels)))
    lines = math.ceil(len(panels) / columns) if panels else 1
    figure, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.8 * lines), squeeze=False)
    systems = list(dict.fromkeys(r["system"] for r in rated))
    for axis, (metric, domain) in zip(axes.flat, panels):
        shown = [r for r in rated if r.get("domain", "all") == domain]
        for system in systems:
            points = sorted((r["rate_kbps"], r[metric], r.get(f"{metric}_lo"), r.get(f"{metric}_hi")) for r in shown
                            if r["system"] == system and _has_value(r.get(metric)))
            if points:
                style = {"beta": "s--", "tkl": "^:"}.get(system, "o-")
                x, y = [p[0] for p in points], [p[1] for p in points]
                low = [p[1] - p[2] if _has_value(p[2]) else 0.0 for p in points]
                high = [p[3] - p[1] if _has_value(p[3]) else 0.0 for p in points]
                axis.errorbar(x, y, yerr=[low, high], fmt=style, capsize=3, label=SYSTEM_NAMES.get(system, system),
                              linewidth=2 if system == TARGET_KL_SYSTEM else 1)
        missed = [(r["rate_kbps"], r[metric]) for r in shown if r.get("off_target") and _has_value(r.get(metric))]
        if missed:
            axis.plot(*zip(*missed), "x", color="red", markersize=12, markeredgewidth=2,
                      label=f"off target (> {OFF_TARGET_PERCENT:g}% from its target rate)")
        originals = [r[f"{metric}_original"] for r in shown if _has_value(r.get(f"{metric}_original"))]
        if originals:
            axis.axhline(float(sum(originals) / len(originals)), linestyle=":", color="gray",
                         label="original audio (the recognizer's own error)")
            axis.legend(fontsize=8)
        axis.set_xscale("log")
        axis.set_xlabel("measured rate (kbps, held-out)")
        better = "higher is better" if metric in HIGHER_IS_BETTER else "lower is better"
        where = "" if domain == "all" else f", {domain} only"
        axis.set_title(f"{metric}{where} ({better}; bars: 95% interval)", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    if panels:
        axes.flat[0].legend(fontsize=8)
    return figure_png(figure)


GEOMETRY_LABELS = {"smoothness_slope": "smoothness slope (mel distance per latent std; lower: smoother)",
                   "interp_max_jump": "interpolation: largest step / path length (lower: no cliffs)",
                   "latent_condition_number": "latent covariance condition number (log)",
                   "latent_effective_dim": "latent effective dimension (entropy rank)",
                   "active_channels": "active channels (KL >= 0.1 nats per frame)"}


def geometry_rows(rows: list[dict]) -> list[dict]:
    """The rows whose latent geometry was measured (trained codecs), all clips pooled."""
    return [r for r in pooled_rows(rows) if _has_value(r.get("smoothness_slope"))]


def plot_geometry(rows: list[dict]) -> bytes:
    """PNG bytes: the smoothness curves of the target-KL VAEs (one line per bitrate), then each geometry measure
    against measured kbps, one line per system (see :mod:`targetkl.eval.geometry`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in geometry_rows(rows) if _has_value(r.get("rate_kbps"))]
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.6), squeeze=False)
    curves = axes.flat[0]
    for row in sorted((r for r in measured if r["system"] == TARGET_KL_SYSTEM), key=lambda r: r["rate_kbps"]):
        curve = row.get("smoothness_curve") or {}
        if curve.get("levels"):
            curves.plot(curve["levels"], curve["mel_distance"], "o-", label=f"{row['rate_kbps']:.2f} kbps")
    curves.set_xlabel("a: latent noise in units of each channel's std")
    curves.set_ylabel("mel distance of decode(z + a sigma n) to decode(z)")
    curves.set_title("smoothness (target-KL VAEs)", fontsize=9)
    if curves.lines:
        curves.legend(fontsize=7)
    systems = list(dict.fromkeys(r["system"] for r in measured))
    for axis, key in zip(list(axes.flat)[1:], GEOMETRY_KEYS):
        for system in systems:
            points = sorted((r["rate_kbps"], r[key], r.get(f"{key}_lo"), r.get(f"{key}_hi")) for r in measured
                            if r["system"] == system and _has_value(r.get(key)) and math.isfinite(r[key]))
            if points:
                low = [p[1] - p[2] if _has_value(p[2]) else 0.0 for p in points]
                high = [p[3] - p[1] if _has_value(p[3]) else 0.0 for p in points]
                axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[low, high], fmt="o-", capsize=3,
                              label=SYSTEM_NAMES.get(system, system), linewidth=2 if system == TARGET_KL_SYSTEM else 1)
        axis.set_xscale("log")
        if key == "latent_condition_number":
            axis.set_yscale("log")
        axis.set_xlabel("measured kbps (held-out)")
        axis.set_title(GEOMETRY_LABELS[key], fontsize=9)
        if axis.lines or axis.containers:
            axis.legend(fontsize=7)
    return figure_png(figure)


def _format(value, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "<b>yes</b>" if value else "no"
    if not _has_value(value):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(rows: list[dict], columns: tuple[str, ...]) -> str:
    """An HTML table; a metric column is shown with its 95% interval (``<metric>_lo``, ``<metric>_hi``) when the
    row has one."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_format(r.get(c))}{_interval_text(r, c)}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval_text(row: dict, column: str) -> str:
    low, high = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    if not (_has_value(low) and _has_value(high)):
        return ""
    return f"<br><small>[{low:.3f}, {high:.3f}]</small>"


def _audio_tag(path: str, out: Path) -> str:
    return f'<audio controls preload="metadata" src="{html.escape(os.path.relpath(path, out))}"></audio>'


def _players(rows: list[dict], originals: list[str], out: Path) -> str:
    def audio(path: str) -> str:
        return _audio_tag(path, out)

    head = "<th>system</th><th>point</th>" + "".join(f"<th>clip {i}</th>" for i in range(len(originals)))
    lines = ["<tr><td>original</td><td></td>" + "".join(f"<td>{audio(p)}</td>" for p in originals) + "</tr>"]
    for row in rows:
        cells = "".join(f"<td>{audio(p)}</td>" for p in row.get("audio") or [])
        lines.append(f"<tr><td>{html.escape(SYSTEM_NAMES.get(row['system'], row['system']))}</td>"
                     f"<td>{html.escape(row['label'])}</td>{cells}</tr>")
    return f"<table class='audio'><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#eee}
td:first-child,td:nth-child(2){text-align:left}img{max-width:100%;border:1px solid #ddd}audio{width:180px}"""

# Marks the body once every plot has loaded, so a headless browser can check the page rendered.
CHECK_SCRIPT = """<script>window.addEventListener('load', function () {
  var plots = Array.prototype.slice.call(document.getElementsByTagName('img'));
  var loaded = plots.filter(function (p) { return p.complete && p.naturalWidth > 0; }).length;
  document.body.dataset.plots = String(loaded);
  document.body.dataset.plot = loaded === plots.length ? 'loaded' : 'missing';
});</script>"""


def render_html(rows: list[dict], originals: list[str], out: Path, title: str, generation: dict | None = None,
                listening: dict | None = None, speech: dict | None = None) -> str:
    domain_rows = [r for r in rows if r.get("domain", "all") != "all"]
    rows = pooled_rows(rows)
    rated, autoencoders = rate_rows(rows), [r for r in rows if not _has_value(r.get("rate_kbps"))]
    rate_columns = ("system", "label", "target_kbps", "rate_kbps", "rate_error_percent", "off_target", "file_kbps",
                    *METRICS)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>Every number is measured on the same held-out clips. Learned codecs: rate = KL (VAE) or "
             "n&nbsp;&times;&nbsp;log2(K) bits per frame (RVQ); .tkl files and classic codecs: payload bytes "
             f"(file_kbps adds the .tkl header). off_target: the measured rate is more than {OFF_TARGET_PERCENT:g}% "
             "from the rate asked for (a red &times; in the plot).</p>",
             "<h2>Rate&ndash;distortion</h2><img id='rd' src='rd.png' alt='rate-distortion plot'>",
             "<h2>Systems with a bitrate</h2>", _table(rated, rate_columns)]
    if autoencoders:
        parts += ["<h2>Plain autoencoders (no honest bitrate: float latents)</h2>",
                  _table(autoencoders, ("system", "label", "latent_values_per_second", *METRICS))]
    for domain in dict.fromkeys(r["domain"] for r in domain_rows):
        parts += [f"<h2>Domain: {html.escape(domain)} (its held-out clips only)</h2>",
                  _table([r for r in domain_rows if r["domain"] == domain],
                         ("system", "label", "clips", "target_kbps", "rate_kbps", "rate_error_percent", "off_target",
                          *METRICS))]
    geometry = geometry_rows(rows)
    if geometry:
        parts += ["<h2>Latent geometry</h2>",
                  "<p>On the latents of the first held-out clips (see targetkl.eval.geometry): smoothness is the mel "
                  "distance between decode(z) and decode(z + a&middot;sigma&middot;noise), sigma each channel's "
                  "std, and its slope over a; interp_max_jump the largest step along the straight line between two "
                  "clips' latents over the decoded path's length (1/8 for an even path, 1 for a cliff); the "
                  "covariance's condition number and entropy effective dimension; active channels carry at least "
                  "0.1 nats per frame (VAEs).</p>",
                  "<img id='geometry' src='geometry.png' alt='latent geometry vs bitrate'>",
                  _table(geometry, ("system", "label", "rate_kbps", "latent_use", *GEOMETRY_KEYS))]
    parts += ["<h2>Listen: the same held-out clips</h2>", _players(rows, originals, out)]
    if generation:
        parts.append(_generation_section(generation, out))
    if speech:
        parts.append(_speech_section(speech, out))
    if listening:
        from targetkl.eval.listen import results_section

        parts.append(results_section(listening))
    parts += [CHECK_SCRIPT, "</body></html>"]
    return "\n".join(parts)


GENERATION_COLUMNS = ("label", "target_kbps", "rate_kbps", "mel_distance", "text_match", "text_match_random_latents",
                      "text_match_reconstructions", "frechet_distance", "frechet_distance_random_latents", "kad",
                      "kad_random_latents", "val_loss",
                      "sensitivity_0.1", "sensitivity_0.3", "sensitivity_1", *GEOMETRY_COLUMNS)


TTS_COLUMNS = ("label", "target_kbps", "rate_kbps", "mel_distance",
               *(f"{name}{key}{tail}" for name in ("wer", "cer")
                 for key in ("", "_reconstructions", "_random_latents", "_original") for tail in ("", "_lo", "_hi")),
               "val_loss", *GEOMETRY_COLUMNS)


def _example_players(rows: list[dict], out: Path) -> str:
    players = []
    for row in rows:
        cells = "".join(f"<td>{html.escape(prompt)}<br>{_audio_tag(path, out)}</td>"
                        for prompt, path in zip(row.get("prompts") or [], row.get("audio") or []))
        players.append(f"<tr><td>{html.escape(row['label'])}</td>{cells}</tr>")
    return "<h3>Generated examples</h3><table class='audio'><tbody>" + "".join(players) + "</tbody></table>"


def _speech_section(generation: dict, out: Path) -> str:
    """``targetkl select --task tts``'s results: plot, table, the chosen bitrate and generated speech per bitrate."""
    return "\n".join([
        "<h2>Text-to-speech: which bitrate's latents speak most intelligibly</h2>",
        f"<p>The same text-to-speech generator ({html.escape(str(generation['generator']))}) was trained on each "
        f"VAE's latents. Best: <b>{generation['best_kbps']:.3f} kbps</b> ({html.escape(generation['best_label'])}; "
        f"{html.escape(generation['selection_rule'])})"
        + (f"; its WER interval overlaps those of {html.escape(', '.join(generation['indistinguishable_from_best']))}"
           ", so it is not called better than them" if generation.get("indistinguishable_from_best") else "")
        + ".</p>",
        f"<p>Recognizer: {html.escape(generation['recognizer'])}. WER/CER pooled over the held-out transcripts "
        "with 95% bootstrap intervals over clips (_lo, _hi). Reconstructions: the VAE's own decodes (the ceiling); "
        "random latents: Gaussian noise with the latents' per-channel mean and std, as long as the duration rule "
        "says, decoded by the same VAE (the floor); original: the recordings (the recognizer's own error).</p>",
        "<img id='generation-tts' src='generation-tts.png' alt='speech intelligibility vs bitrate'>",
        _table(generation["rows"], TTS_COLUMNS), _example_players(generation["rows"], out)])


def _generation_section(generation: dict, out: Path) -> str:
    """``targetkl select``'s results: plot, table, the chosen bitrate and generated examples per bitrate."""
    judge = generation["judge"]
    rows = generation["rows"]
    return "\n".join([
        "<h2>Generation: which bitrate's latents generate best</h2>",
        f"<p>The same text-to-latent generator ({html.escape(str(generation['generator']))}) was trained on each "
        f"VAE's latents. Best: <b>{generation['best_kbps']:.3f} kbps</b> ({html.escape(generation['best_label'])}; "
        f"{html.escape(generation['selection_rule'])}).</p>",
        f"<p>The judge is not a pretrained audio model: it is a {html.escape(judge['kind'])}, classes "
        f"{html.escape(', '.join(judge['classes']))}, "
        f"held-out accuracy on real audio {judge['held_out_accuracy']:.3f}. "
        "Text match: the share of generated clips it assigns to the prompt's class. Random latents: Gaussian noise "
        "with the latents' per-channel mean and std, decoded by the same VAE (the floor). Reconstructions: the "
        "VAE's own decodes of the held-out clips (the ceiling its decoder allows). Frechet distance: "
        f"{html.escape(generation['frechet_reference'])}. KAD: kernel audio distance on the same embeddings "
        "(unbiased MMD&sup2;, Gaussian kernel, median-distance bandwidth, &times;100; lower is better). "
        "Sensitivity a: mel distance between decode(z) and "
        "decode(z + a&middot;std&middot;noise).</p>",
        "<img id='generation' src='generation.png' alt='generation quality vs bitrate'>",
        _table(rows, GENERATION_COLUMNS), _example_players(rows, out)])


def write_report(out: Path, rows: list[dict], originals: list[str], preset: str, data: str) -> None:
    """Write ``rd.csv``, ``rd.json``, ``rd.png``, ``sweep.json`` (preset and data) and ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    public = [{k: v for k, v in r.items() if k != "perceptual"} for r in with_domain_rows(rows)]
    write_text_atomic(out / "rd.json", json.dumps(without_nan(public), indent=2) + "\n")  # NaN as null
    write_text_atomic(out / "sweep.json", json.dumps({"preset": preset, "data": str(Path(data).resolve()),
                                                      "originals": originals, "aggregation": aggregation_texts()},
                                                     indent=2) + "\n")
    write_csv(out / "rd.csv", public)
    write_bytes_atomic(out / "rd.png", plot_rate_distortion(public))
    if geometry_rows(public):
        write_bytes_atomic(out / "geometry.png", plot_geometry(public))
    refresh_report(out)


def refresh_report(out: Path) -> None:
    """(Re)write ``report.html`` from ``rd.json`` and ``sweep.json``, with ``targetkl select``'s section when
    ``generation.json`` exists, ``select --task tts``'s when ``generation-tts.json`` does and the listening test's
    when ``listening.json`` does."""
    rows = json.loads((out / "rd.json").read_text())
    sweep = json.loads((out / "sweep.json").read_text())
    generation, speech, listening = (json.loads((out / name).read_text()) if (out / name).is_file() else None
                                     for name in ("generation.json", "generation-tts.json", "listening.json"))
    title = f"targetkl rate-distortion sweep ({sweep['preset']} preset, data {sweep['data']})"
    write_text_atomic(out / "report.html", render_html(rows, sweep["originals"], out, title, generation,
                                                             listening, speech))
