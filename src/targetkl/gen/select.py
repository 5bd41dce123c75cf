"""``targetkl select``: train the same generator on every target-KL VAE of a sweep and pick the bitrate
whose latents generate best.

Layout added to a sweep folder::

    SWEEP/generation/judge/                   the audio classifier (shared by all VAEs; retrained when they change)
    SWEEP/generation/<label>/latents/         pre-encoded latents of vae-<label>
    SWEEP/generation/<label>/gen/             its generator (resumed or reused like any run)
    SWEEP/generation/<label>/eval.json        its scores (reused while the generator is unchanged)
    SWEEP/audio/gen-<label>/clipN.wav         generated examples (prompts in eval.json) for the report
    SWEEP/generation.json, generation.csv, generation.png; a section in report.html

The best bitrate is the one with the highest text match; ties go to the lower Frechet distance.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from targetkl.data import load_folder
from targetkl.eval.report import GENERATION_COLUMNS, TARGET_KL_SYSTEM, figure_png, refresh_report, write_csv
from targetkl.data.audio import write_example_clips
from targetkl.eval.sweep import SweepError
from targetkl.gen.classifier import Judge, load_judge, train_judge
from targetkl.gen.dataset import load_latent_set, pre_encode
from targetkl.eval.geometry import GEOMETRY_COLUMNS
from targetkl.gen.evaluate import (AudioEmbedder, audio_embedder_factory, decoder_sensitivity, evaluate_generator,
                                   prompt_rows, text_match)
from targetkl.gen.sample import decode_latents
from targetkl.gen.text import load_text_encoder
from targetkl.gen.train import GenConfig, GenTrainer, load_generator
from targetkl.models.codec import model_fingerprint
from targetkl.inference import DEFAULT_BATCH_SIZE, choose_device
from targetkl.runs import load_run
from targetkl.fileio import read_json_or_none, write_bytes_atomic, write_text_atomic

SELECTION_RULE = "highest text_match; ties broken by the lower frechet_distance"
EXAMPLES = 3


def sweep_data(sweep: Path, data: str | Path | None) -> Path:
    if data is not None:
        return Path(data)
    recorded = read_json_or_none(sweep / "sweep.json") or {}
    if not recorded.get("data"):
        raise SweepError(f"{sweep}/sweep.json does not name the sweep's data; pass --data DIR")
    return Path(recorded["data"])


def vae_rows(sweep: Path) -> list[dict]:
    rows = read_json_or_none(sweep / "rd.json", list)
    if rows is None:
        raise SweepError(f"{sweep}/rd.json: not found or damaged; run `targetkl sweep --out {sweep}` (again) first")
    vaes = [r for r in rows if isinstance(r, dict) and r.get("system") == TARGET_KL_SYSTEM
            and r.get("domain", "all") == "all"]  # one row per VAE: the pooled one, not its domains
    if any(not isinstance(r.get("rate_kbps"), (int, float)) or not isinstance(r.get("label"), str)
           or not isinstance(r.get("run"), str) for r in vaes):
        raise SweepError(f"{sweep}/rd.json: a VAE row lacks its rate_kbps, label or run; run `targetkl sweep --out "
                         f"{sweep}` again to rewrite it")
    vaes.sort(key=lambda r: r["rate_kbps"])
    if not vaes:
        raise SweepError(f"{sweep}/rd.json has no target-KL VAE rows; run a sweep with --kbps first")
    for row in vaes:  # a relative path (an older rd.json: relative to where the sweep ran) -> the sweep's own run
        kept = sweep / "runs" / f"{row['system']}-{row['label']}"
        if not Path(row["run"]).is_absolute() and kept.is_dir():
            row["run"] = str(kept.resolve())
    return vaes


def latents_for(run: Path, data: Path, folder: Path, progress: bool, device: torch.device,
                 batch_size: int) -> None:
    """Pre-encode unless the stored latents were made by the run's current weights from ``data``."""
    info = read_json_or_none(folder / "info.json")
    current = model_fingerprint(load_run(run).model)
    if info is None or info.get("fingerprint") != current or info.get("data") != str(data.resolve()):
        pre_encode(run, data, folder, progress=progress, device=device, batch_size=batch_size)


EMBED_BATCH = 256  # real clips read from disk and embedded at a time
RESUMABLE = ("steps", "log_every", "validate_every", "checkpoint_every", "device")


def forget_stale_generator(generator_dir: Path, latents_dir: Path, config: GenConfig) -> None:
    """Delete ``generator_dir`` when it was trained on other latents than ``latents_dir`` holds now (the
    VAE was retrained) or with other settings than ``config`` (more steps resume instead): select owns
    the folder, and such a generator would not answer the question asked."""
    saved = read_json_or_none(generator_dir / "gen_config.json")
    if saved is None:
        return
    wanted = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE}
    had = {k: v for k, v in saved.get("config", {}).items() if k not in RESUMABLE}
    if saved.get("latents_info") != read_json_or_none(latents_dir / "info.json") or had != wanted:
        shutil.rmtree(generator_dir)


def _judge(sweep: Path, vaes: list[dict], data: Path, steps: int, progress: bool, device: torch.device) -> Judge:
    """The sweep's judge: reused while the VAEs are the same, else trained on the real training clips and
    every VAE's reconstructions of them."""
    folder = sweep / "generation" / "judge"
    latent_sets = [load_latent_set(sweep / "generation" / row["label"] / "latents") for row in vaes]
    fingerprints = [latents.info["fingerprint"] for latents in latent_sets]
    judge = load_judge(folder)
    if judge is not None and judge.trained_on == fingerprints:
        return judge
    decoded = []
    for row, latents in zip(vaes, latent_sets):
        model = load_run(row["run"], device).model
        for index in tqdm(latents.indices("train"), desc=f"decoding {row['label']} for the judge",
                          disable=not progress, leave=False):
            name = latents.labels[index] or latents.captions[index]
            if name:
                decoded.append((decode_latents(model, latents.means[index][None])[0], name))
    sample_rate = int(latent_sets[0].info["sample_rate"])
    return train_judge(data, folder, sample_rate, steps=steps, decoded=decoded, trained_on=fingerprints,
                       progress=progress)


def _example_prompts(prompts: list[str], classes: list[str]) -> list[int]:
    """Indices of up to ``EXAMPLES`` prompts of different classes (the first of each)."""
    chosen, seen = [], set()
    for index, name in enumerate(classes):
        if name not in seen:
            chosen.append(index)
            seen.add(name)
    return chosen[:EXAMPLES]


def evaluate_point(sweep: Path, row: dict, judge: Judge, embed: AudioEmbedder, embedding: str,
                   real_embeddings: np.ndarray, config: GenConfig, repeats: int, sample_steps: int, cfg: float,
                   seed: int, device: torch.device) -> dict:
    """Score one VAE's generator; ``embed`` is the Frechet distance's embedder, registered as ``embedding``."""
    folder = sweep / "generation" / row["label"]
    generator = load_generator(folder / "gen", device)
    settings = {"gen_step": generator.step, "fingerprint": generator.description["latents_info"]["fingerprint"],
                "repeats": repeats, "sample_steps": sample_steps, "cfg": cfg, "seed": seed, "embedding": embedding,
                "judge_trained_on": judge.trained_on, "judge_accuracy": judge.accuracy}
    cached = read_json_or_none(folder / "eval.json")
    if cached is not None and all(cached.get(k) == v for k, v in settings.items()):
        return cached
    loaded = load_run(row["run"], device)
    latents = load_latent_set(folder / "latents")
    held_out = latents.indices("held_out") or latents.indices("train")
    prompts, classes, indices = prompt_rows(latents, held_out)
    if len(prompts) * repeats < 2:
        raise SweepError(f"{folder / 'latents'}: {len(prompts)} captioned held-out clip(s) to prompt with; the "
                         "scores need at least two generations: add captions.jsonl or raise --repeats")
    text = torch.from_numpy(load_text_encoder(config.text_encoder).encode(prompts))
    metrics, generated = evaluate_generator(generator, loaded.model, judge, prompts * repeats, classes * repeats,
                                            text.repeat(repeats, 1), real_embeddings, embed,
                                            sample_steps, cfg, seed)
    reconstructions = [decode_latents(loaded.model, latents.means[i][None])[0] for i in indices]
    sensitivity = decoder_sensitivity(loaded.model, latents, held_out)
    examples = _example_prompts(prompts, classes)
    result = {"label": row["label"], "target_kbps": row.get("target_kbps"), "rate_kbps": row["rate_kbps"],
              "latents_rate_kbps": latents.info.get("rate_kbps"), "mel_distance": row.get("mel_distance"),
              "run": row["run"], **metrics,
              "text_match_reconstructions": text_match(judge, reconstructions, classes),
              "val_loss": held_out_val_loss(folder / "gen"), **{f"sensitivity_{k}": v for k, v in sensitivity.items()},
              "prompts": [prompts[i] for i in examples],
              "audio": write_example_clips(sweep / "audio" / f"gen-{row['label']}", [generated[i] for i in examples],
                                       loaded.model.sample_rate),
              **settings}
    write_text_atomic(folder / "eval.json", json.dumps(result, indent=2) + "\n")
    return result


def held_out_val_loss(generator_dir: Path) -> float | None:
    """The last held-out validation loss the generator logged."""
    values = [json.loads(line) for line in (generator_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    held_out = [v["loss"] for v in values if v.get("split") == "held_out"]
    return held_out[-1] if held_out else None


def best_row(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["text_match"], -r["frechet_distance"]))


def plot_generation(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = [r["rate_kbps"] for r in rows]
    figure, axes = plt.subplots(1, 5, figsize=(22, 3.8))
    panels = (("text_match", "text_match_random_latents", "text match (higher is better)"),
              ("frechet_distance", "frechet_distance_random_latents", "Frechet distance (lower is better)"),
              ("kad", "kad_random_latents", "kernel audio distance x100 (lower is better)"),
              ("mel_distance", None, "reconstruction mel distance (lower is better)"),
              ("val_loss", None, "generator held-out loss (lower: more predictable)"))
    for axis, (key, floor, title) in zip(axes, panels):
        axis.plot(rate, [r[key] for r in rows], "o-", label="generated" if floor else key)
        if floor:
            axis.plot(rate, [r[floor] for r in rows], "s--", color="gray", label="random latents, same VAE")
            axis.legend(fontsize=8)
        if key == "text_match":
            axis.plot(rate, [r["text_match_reconstructions"] for r in rows], "^:", label="VAE reconstructions")
            axis.legend(fontsize=8)
        axis.set_xscale("log")
        axis.set_xticks(rate, [f"{r:.3g}" for r in rate])
        axis.minorticks_off()
        axis.set_xlabel("measured rate (kbps, held-out)")
        axis.set_title(title, fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    best = best_row(rows)
    axes[0].axvline(best["rate_kbps"], color="green", alpha=0.4)
    return figure_png(figure)


def run_select(sweep: str | Path, data: str | Path | None = None, config: GenConfig | None = None,
               repeats: int = 3, sample_steps: int = 32, cfg: float = 3.0, seed: int = 0, judge_steps: int = 400,
               embedding: str = "judge", progress: bool = True, device: str | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Train (or reuse) a generator per VAE of the sweep, score them, write the outputs; returns
    ``generation.json``'s content."""
    sweep = Path(sweep).resolve()  # generation.json names the same files from any working folder
    config = config or GenConfig()
    device = choose_device(device)
    make_embedder = audio_embedder_factory(embedding)
    vaes = vae_rows(sweep)
    data = sweep_data(sweep, data)
    for row in vaes:
        latents_for(Path(row["run"]), data, sweep / "generation" / row["label"] / "latents", progress, device,
                     batch_size)
    judge = _judge(sweep, vaes, data, judge_steps, progress, device)
    real_clips = load_folder(data, judge.sample_rate, "all", progress=False).clips
    embed = make_embedder(judge)
    real_embeddings = np.concatenate([embed([clip.audio for clip in real_clips[first:first + EMBED_BATCH]])
                                      for first in range(0, len(real_clips), EMBED_BATCH)])
    rows = []
    for row in tqdm(vaes, desc="select", disable=not progress, dynamic_ncols=True):
        folder = sweep / "generation" / row["label"]
        forget_stale_generator(folder / "gen", folder / "latents", config)
        GenTrainer(config, folder / "latents", folder / "gen", progress=progress).run()
        scored = evaluate_point(sweep, row, judge, embed, embedding, real_embeddings, config, repeats,
                                sample_steps, cfg, seed, device)
        rows.append({**scored, **{key: row.get(key) for key in (*GEOMETRY_COLUMNS, "smoothness_curve")}})
    best = best_row(rows)
    result = {"best_kbps": best["rate_kbps"], "best_label": best["label"], "selection_rule": SELECTION_RULE,
              "judge": {"classes": judge.classes, "held_out_accuracy": judge.accuracy,
                        "kind": "log-mel CNN trained on the corpus labels (see targetkl.gen.classifier)"},
              "frechet_reference": f"{embedding} embeddings of all {len(real_clips)} real clips of {data}",
              "generator": {"preset": config.preset, "steps": config.steps, "sample_steps": sample_steps, "cfg": cfg},
              "rows": rows}
    write_text_atomic(sweep / "generation.json", json.dumps(result, indent=2) + "\n")
    write_csv(sweep / "generation.csv", rows, GENERATION_COLUMNS)
    write_bytes_atomic(sweep / "generation.png", plot_generation(rows))
    refresh_report(sweep)
    return result
