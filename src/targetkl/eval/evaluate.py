"""``targetkl eval``: a run's measured held-out rate next to its target, and its distortion."""

from __future__ import annotations

import json
import math
from pathlib import Path

from targetkl import rate
from targetkl.config import Config
from targetkl.data import load_folder
from targetkl.data.index import canonical_source
from targetkl.fileio import without_nan
from targetkl.eval.asr import recognizer_for
from targetkl.eval.measure import LATENT_UNUSED_BELOW, measure_rate_and_distortion
from targetkl.eval.metrics import METRICS, metric_names
from targetkl.inference import DEFAULT_BATCH_SIZE, choose_device
from targetkl.models.codec import Codec
from targetkl.runs import load_run


DOMAIN_KEYS = ("rate_kbps", *(name for name in metric_names(reference_only=False)  # printed per domain
                             if METRICS[name].score is not None))


def evaluate_model(model: Codec, config: Config, data_dir: str | Path, perceptual: bool = True,
                   progress: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Measure ``model`` (on whichever device it is) on the held-out split of ``data_dir``, read from disk
    ``batch_size`` clips at a time."""
    held_out = load_folder(data_dir, config.model.sample_rate, "held_out", config.data.valid_percent,
                           config.data.loudness_dbfs, progress=False, channels=config.model.audio_channels)
    result = measure_rate_and_distortion(model, held_out.clips, perceptual=perceptual, progress=progress,
                                         batch_size=batch_size, recognizer=recognizer_for(data_dir))
    target = model.bottleneck.target_kbps(config.rate.target_kbps, result["rate_kbps"])
    result.update({
        "target_kbps": target,
        "rate_error_percent": rate.rate_error_percent(result["rate_kbps"], target),
        "off_target": rate.off_target(result["rate_kbps"], target),
        "bottleneck": config.model.bottleneck,
        "controller": config.rate.controller if model.bottleneck.rate_controller is not None else None,
        "sample_rate": config.model.sample_rate,
        "latent_dim": config.model.latent_dim,
        "data": canonical_source(data_dir),
    })
    return result


def evaluate_run(run_dir: str | Path, data_dir: str | Path, perceptual: bool = True, progress: bool = True,
                 device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    loaded = load_run(run_dir, choose_device(device))
    result = evaluate_model(loaded.model, loaded.config, data_dir, perceptual, progress, batch_size)
    result.update({"run": str(Path(run_dir).resolve()), "step": loaded.step})
    return result


def to_json(result: dict) -> str:
    """JSON with NaN written as null (also inside ``by_domain``), so every reader can parse it."""
    return json.dumps(without_nan(result), indent=2)


def _interval(result: dict, key: str, digits: int = 4) -> str:
    low, high = result.get(f"{key}_lo"), result.get(f"{key}_hi")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"  [{low:.{digits}f}, {high:.{digits}f}]"


def format_result(result: dict) -> str:
    lines = []
    if result.get("target_kbps") is not None:
        lines.append(f"target rate   {result['target_kbps']:.4f} kbps")
    lines.append(f"measured rate {result['rate_kbps']:.4f} kbps{_interval(result, 'rate_kbps')}  (held-out, "
                 f"{result['clips']} clips, {result['frame_rate']:g} Hz frames)")
    if result.get("rate_error_percent") is not None:
        lines.append(f"rate error    {result['rate_error_percent']:+.2f} %")
    if result.get("off_target"):
        lines.append(f"warning: {rate.off_target_text(result['rate_kbps'], result['target_kbps'])}")
    unscored = result.get("unscored") or {}
    for key in (*metric_names(reference_only=True), "latent_use"):
        value = result.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            note = f"  ({unscored[key]} of {result['clips']} clips could not be scored)" if unscored.get(key) else ""
            lines.append(f"{key:<13} {value:.4f}{_interval(result, key)}{note}")
    shown = [name for name in metric_names(reference_only=True) if name in result]
    if shown:
        medians = [n for n in shown if METRICS[n].aggregation == "median"]
        pooled = [n for n in shown if METRICS[n].aggregation == "pooled" and not METRICS[n].reference_only]
        notes = [f"{' and '.join(medians)} {'is the median' if len(medians) == 1 else 'are medians'} over clips"
                 if medians else "", f"{' and '.join(pooled)} {'is' if len(pooled) == 1 else 'are'} pooled over clips"
                 if pooled else "", "the rest are means"]
        lines.append(f"({'; '.join(n for n in notes if n)}; [95% bootstrap interval over clips])")
    for domain, values in (result.get("by_domain") or {}).items():
        shown = ", ".join(f"{key} {values[key]:.3f}{_interval(values, key, 3)}" for key in DOMAIN_KEYS
                          if isinstance(values.get(key), float) and math.isfinite(values[key]))
        lines.append(f"{domain} ({values['clips']} clips): {shown}")
    use = result.get("latent_use")
    if use is not None and use < LATENT_UNUSED_BELOW:
        lines.append(f"warning: the decoder ignores its latent (latent_use {use:.3f} < "
                     f"{LATENT_UNUSED_BELOW}: different clips decode to nearly the same sound), so the rate buys "
                     "nothing; train again with another --seed or a longer rate.free_steps")
    return "\n".join(lines)
