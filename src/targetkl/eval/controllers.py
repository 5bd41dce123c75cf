"""Compare the rate controllers on real audio: held-out rate against target, how many steps each takes
to settle within 2% of its target, and the final distortion; a plot of rate against step.

Runs are trained (or reused) with the sweep's machinery in ``OUT/runs/<controller>-<rate>kbps``; the
results go to ``OUT/controllers.json``, ``controllers.csv`` and ``controllers.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

from targetkl.inference import DEFAULT_BATCH_SIZE
from targetkl.eval.metrics import metric_names
from targetkl.eval.report import figure_png, write_csv
from targetkl.eval.sweep import Sweep, SweepPoint
from targetkl.fileio import write_bytes_atomic, write_text_atomic
from targetkl.train.logger import read_metrics

SETTLE_TOLERANCE = 0.02
DISTORTION = metric_names(perceptual=False)  # the registry's metrics that a controllers run measures (no --fast ones)
COLUMNS = ("controller", "target_kbps", "rate_kbps", "rate_error_percent", "off_target", "settled_step", *DISTORTION,
           "run")


def rate_series(run: Path) -> list[tuple[int, float]]:
    """``(step, kbps)`` of training: the whole-clip calibration rate where logged, else the batch rate."""
    series = []
    for row in read_metrics(run):
        value = row.get("rate/calibration_kbps", row.get("rate/kbps"))
        if value is not None:
            series.append((int(row["step"]), float(value)))
    return series


def settled_step(series: list[tuple[int, float]], target: float, tolerance: float = SETTLE_TOLERANCE) -> int | None:
    """The first logged step from which every later logged rate stays within ``tolerance`` of ``target``
    (relative); ``None`` if the last one is outside."""
    settled = None
    for step, value in series:
        if abs(value - target) <= tolerance * target:
            settled = step if settled is None else settled
        else:
            settled = None
    return settled


def plot_rates(rows: list[dict], series: dict[str, list[tuple[int, float]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({row["target_kbps"] for row in rows})
    figure, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.8), squeeze=False)
    for axis, target in zip(axes[0], targets):
        for row in rows:
            if row["target_kbps"] == target:
                steps, values = zip(*series[row["run"]]) if series[row["run"]] else ((), ())
                axis.plot(steps, values, label=row["controller"], linewidth=1)
        axis.axhline(target, color="black", linestyle="--", linewidth=1)
        axis.axhspan(target * (1 - SETTLE_TOLERANCE), target * (1 + SETTLE_TOLERANCE), color="grey", alpha=0.2)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("rate (kbps, whole training clips)")
        axis.set_title(f"target {target:g} kbps")
        axis.legend(fontsize=8)
    return figure_png(figure)


def compare_controllers(data: str | Path, out: str | Path, kbps: list[float], controllers: list[str],
                        preset: str = "tiny", config_files: list[str] | None = None,
                        assignments: list[str] | None = None, progress: bool = True, device: str | None = None,
                        batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict]:
    """Train (or reuse) one run per controller and target; returns and writes the comparison rows."""
    out = Path(out)
    sweep = Sweep(data, out, preset, config_files, assignments, perceptual=False, example_clips=0, progress=progress,
                  device=device, batch_size=batch_size)
    points = [SweepPoint(controller, f"{k:g}kbps", k, {"model.bottleneck": "vae", "rate.controller": controller,
                                                       "rate.target_kbps": k})
              for controller in controllers for k in kbps]
    rows, series = [], {}
    for point, result in zip(points, sweep.run(points)):
        run = Path(result["run"])
        series[str(run)] = rate_series(run)
        rows.append({"controller": point.system, "target_kbps": point.target_kbps, "rate_kbps": result["rate_kbps"],
                     "rate_error_percent": result["rate_error_percent"], "off_target": result["off_target"],
                     "settled_step": settled_step(series[str(run)], point.target_kbps),
                     **{name: result[name] for name in DISTORTION if name in result}, "run": str(run)})
    write_text_atomic(out / "controllers.json", json.dumps(rows, indent=2) + "\n")
    write_csv(out / "controllers.csv", rows, COLUMNS)
    write_bytes_atomic(out / "controllers.png", plot_rates(rows, series))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'controller':<10} {'target':>7} {'held-out':>9} {'error %':>8} {'settled':>8} {'mel':>7}"]
    for row in rows:
        settled = "never" if row["settled_step"] is None else str(row["settled_step"])
        lines.append(f"{row['controller']:<10} {row['target_kbps']:>7g} {row['rate_kbps']:>9.4f} "
                     f"{row['rate_error_percent']:>+8.2f} {settled:>8} {row['mel_distance']:>7.3f}")
    return "\n".join(lines)
