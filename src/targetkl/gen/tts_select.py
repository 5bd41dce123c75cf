"""``targetkl select --task tts``: train the same text-to-speech generator on every target-KL VAE of a speech
sweep and pick the bitrate whose latents speak most intelligibly.

Each VAE's generator (``gen.task=tts``) reads every held-out transcript ``repeats`` times (seeds from
``seed``); pocketsphinx, held to the corpus grammar when there is one (:mod:`targetkl.eval.asr`), transcribes
the generated speech. Scores, pooled over clips with 95% bootstrap intervals over clips (``*_lo``, ``*_hi``):

- ``wer``, ``cer``: the generated speech;
- ``wer_reconstructions``: the VAE's own decodes of the held-out clips (the ceiling its decoder allows);
- ``wer_random_latents``: Gaussian latents with the training latents' per-channel mean and std, as long as
  the duration rule says, decoded by the same VAE (the floor);
- ``wer_original``: the held-out recordings themselves (the recognizer's own error).

Layout added to the sweep folder, beside text-to-sound's (both can be run on one sweep)::

    SWEEP/generation/<label>/latents/       pre-encoded latents of vae-<label> (shared with text-to-sound)
    SWEEP/generation/<label>/tts/           its TTS generator (resumed or reused like any run)
    SWEEP/generation/<label>/tts-eval.json  its scores (reused while the generator is unchanged)
    SWEEP/audio/tts-<label>/clipN.wav       generated speech (transcripts in tts-eval.json)
    SWEEP/generation-tts.json, generation-tts.csv, generation-tts.png; a section in report.html

The best bitrate has the lowest ``wer``; ties go to the lower ``cer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from targetkl.data import load_folder
from targetkl.data.audio import write_example_clips
from targetkl.eval.asr import SpeechRecognizer, error_counts, is_speech_source, recognizer_for
from targetkl.eval.geometry import GEOMETRY_COLUMNS
from targetkl.eval.metrics import bootstrap_draws, ratio_with_interval
from targetkl.eval.report import TTS_COLUMNS, figure_png, refresh_report, write_csv
from targetkl.eval.sweep import SweepError
from targetkl.gen.dataset import load_latent_set
from targetkl.gen.evaluate import random_latents
from targetkl.gen.sample import decode_latents, generate_latents
from targetkl.gen.select import forget_stale_generator, held_out_val_loss, latents_for, sweep_data, vae_rows
from targetkl.gen.train import GenConfig, GenTrainer, LoadedGenerator, load_generator
from targetkl.inference import DEFAULT_BATCH_SIZE, choose_device
from targetkl.runs import load_run
from targetkl.fileio import read_json_or_none, write_bytes_atomic, write_text_atomic

RESULTS = "generation-tts"  # .json, .csv, .png in the sweep folder
SELECTION_RULE = "lowest wer of the generated speech; ties broken by the lower cer"
EXAMPLES = 3
GENERATE_BATCH = 16


def pooled_errors(recognizer: SpeechRecognizer, transcripts: list[str], audio: list[np.ndarray], sample_rate: int,
                  key: str) -> dict[str, float]:
    """``{key}_wer``-style scores: word and character error rates of ``audio`` against ``transcripts``, pooled
    over clips, each with its 95% bootstrap interval over clips (keys ``wer``/``cer`` when ``key`` is empty)."""
    counts = [error_counts(text, recognizer.transcribe(clip, sample_rate)) for text, clip in zip(transcripts, audio)]
    draws = bootstrap_draws(len(counts))
    suffix = f"_{key}" if key else ""
    out: dict[str, float] = {}
    for name, edits, total in (("wer", "wer_edits", "wer_words"), ("cer", "cer_edits", "cer_chars")):
        scores = ratio_with_interval(name, np.array([c[edits] for c in counts]), np.array([c[total] for c in counts]),
                                     draws)
        out.update({f"{name}{suffix}{tail}": scores[f"{name}{tail}"] for tail in ("", "_lo", "_hi")})
    return out


@torch.no_grad()
def generate_speech(generator: LoadedGenerator, decoder, transcripts: list[str], sample_steps: int, cfg: float,
                    seed: int) -> list[np.ndarray]:
    """One decoded clip per transcript, in batches of ``GENERATE_BATCH`` (seed ``seed + first index``)."""
    audio: list[np.ndarray] = []
    for first in range(0, len(transcripts), GENERATE_BATCH):
        latents = generate_latents(generator, transcripts[first:first + GENERATE_BATCH], None, sample_steps, cfg,
                                   seed + first)
        audio += decode_latents(decoder, latents)
    return audio


def evaluate_speech_point(sweep: Path, row: dict, data: Path, recognizer: SpeechRecognizer, repeats: int,
                          sample_steps: int, cfg: float, seed: int, device: torch.device) -> dict:
    """Score one VAE's TTS generator (cached in ``eval.json`` while the generator and settings are the same)."""
    folder = sweep / "generation" / row["label"]
    generator = load_generator(folder / "tts", device)
    settings = {"task": "tts", "gen_step": generator.step,
                "fingerprint": generator.description["latents_info"]["fingerprint"], "repeats": repeats,
                "sample_steps": sample_steps, "cfg": cfg, "seed": seed}
    cached = read_json_or_none(folder / "tts-eval.json")
    if cached is not None and all(cached.get(k) == v for k, v in settings.items()):
        return cached
    loaded = load_run(row["run"], device)
    model, config = loaded.model, loaded.config
    clips = [clip for clip in load_folder(data, model.sample_rate, "held_out", config.data.valid_percent,
                                          config.data.loudness_dbfs, progress=False,
                                          channels=config.model.audio_channels).clips if clip.caption]
    if not clips:
        raise SweepError(f"{data}: no held-out clip has a transcript (caption); select --task tts needs a speech "
                         "corpus (`targetkl corpus OUT --kind speech`)")
    latents = load_latent_set(folder / "latents")
    by_path = {path: index for index, path in enumerate(latents.paths)}
    transcripts = [clip.caption for clip in clips]
    originals = [clip.audio for clip in clips]
    reconstructions = decode_latents(model, [latents.means[by_path[clip.path]] for clip in clips])
    generated = generate_speech(generator, model, transcripts * repeats, sample_steps, cfg, seed)
    conditioning = generator.conditioning
    noise = [random_latents(generator, 1, conditioning.frames_for(text), seed + 7 + i)[0]
             for i, text in enumerate(transcripts)]
    rate = model.sample_rate
    result = {"label": row["label"], "target_kbps": row.get("target_kbps"), "rate_kbps": row["rate_kbps"],
              "latents_rate_kbps": latents.info.get("rate_kbps"), "mel_distance": row.get("mel_distance"),
              "run": row["run"], "clips": len(clips), "generated_clips": len(generated),
              **pooled_errors(recognizer, transcripts * repeats, generated, rate, ""),
              **pooled_errors(recognizer, transcripts, reconstructions, rate, "reconstructions"),
              **pooled_errors(recognizer, transcripts, decode_latents(model, noise), rate, "random_latents"),
              **pooled_errors(recognizer, transcripts, originals, rate, "original"),
              "val_loss": held_out_val_loss(folder / "tts"), "duration_rule": conditioning.duration,
              "prompts": transcripts[:EXAMPLES],
              "audio": write_example_clips(sweep / "audio" / f"tts-{row['label']}", generated[:EXAMPLES], rate),
              **settings}
    write_text_atomic(folder / "tts-eval.json", json.dumps(result, indent=2) + "\n")
    return result


def best_speech_row(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: (r["wer"], r["cer"]))


def indistinguishable(best: dict, rows: list[dict]) -> list[str]:
    """Labels of the other rows whose ``wer`` interval overlaps the best's: the best is not called better than
    them."""
    return [r["label"] for r in rows
            if r is not best and r["wer_lo"] <= best["wer_hi"] and best["wer_lo"] <= r["wer_hi"]]


def plot_speech(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = [r["rate_kbps"] for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for axis, metric in zip(axes, ("wer", "cer")):
        for key, style, name in (("", "o-", "generated"), ("_reconstructions", "^:", "VAE reconstructions"),
                                 ("_random_latents", "s--", "random latents, same VAE"),
                                 ("_original", "", "originals (recognizer)")):
            values = np.array([r[f"{metric}{key}"] for r in rows])
            if not key.startswith("_original"):
                errors = np.abs(np.array([[r[f"{metric}{key}_lo"], r[f"{metric}{key}_hi"]] for r in rows]).T
                                - values)
                axis.errorbar(rate, values, yerr=np.nan_to_num(errors), fmt=style, capsize=3, label=name)
            else:
                axis.axhline(float(np.mean(values)), color="gray", alpha=0.5, label=name)
        axis.set_title(f"{metric.upper()} of speech from text (lower is better)", fontsize=10)
        axis.legend(fontsize=8)
    axes[2].plot(rate, [r["val_loss"] for r in rows], "o-")
    axes[2].set_title("generator held-out loss (lower: more predictable)", fontsize=10)
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xticks(rate, [f"{r:.3g}" for r in rate])
        axis.minorticks_off()
        axis.set_xlabel("measured rate (kbps, held-out)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].axvline(best_speech_row(rows)["rate_kbps"], color="green", alpha=0.4)
    return figure_png(figure)


def run_tts_select(sweep: str | Path, data: str | Path | None = None, config: GenConfig | None = None,
                   repeats: int = 1, sample_steps: int = 32, cfg: float = 2.0, seed: int = 0, progress: bool = True,
                   device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Train (or reuse) a TTS generator per VAE of the sweep, score them, write the outputs; returns
    ``generation-tts.json``'s content."""
    sweep = Path(sweep).resolve()
    config = config or GenConfig(task="tts")
    if config.task != "tts":
        raise SweepError(f"select --task tts: the generator's gen.task is {config.task!r}; leave it unset")
    device = choose_device(device)
    vaes = vae_rows(sweep)
    data = sweep_data(sweep, data)
    if not is_speech_source(data):
        raise SweepError(f"{data}/corpus.json does not say \"kind\": \"speech\"; select --task tts needs a speech "
                         "corpus whose captions are transcripts (`targetkl corpus OUT --kind speech`)")
    recognizer = recognizer_for(data)
    rows = []
    for row in tqdm(vaes, desc="select tts", disable=not progress, dynamic_ncols=True):
        folder = sweep / "generation" / row["label"]
        latents_for(Path(row["run"]), data, folder / "latents", progress, device, batch_size)
        forget_stale_generator(folder / "tts", folder / "latents", config)
        GenTrainer(config, folder / "latents", folder / "tts", progress=progress).run()
        scored = evaluate_speech_point(sweep, row, data, recognizer, repeats, sample_steps, cfg, seed, device)
        rows.append({**scored, **{key: row.get(key) for key in (*GEOMETRY_COLUMNS, "smoothness_curve")}})
    best = best_speech_row(rows)
    grammar = data / "grammar.jsgf"
    result = {"task": "tts", "best_kbps": best["rate_kbps"], "best_label": best["label"],
              "selection_rule": SELECTION_RULE, "indistinguishable_from_best": indistinguishable(best, rows),
              "recognizer": "pocketsphinx " + (f"held to {grammar}" if grammar.is_file() else "(full English model)"),
              "generator": {"preset": config.preset, "steps": config.steps, "tokens": config.tokens,
                            "sample_steps": sample_steps, "cfg": cfg, "repeats": repeats},
              "rows": rows}
    write_text_atomic(sweep / f"{RESULTS}.json", json.dumps(result, indent=2) + "\n")
    write_csv(sweep / f"{RESULTS}.csv", rows, TTS_COLUMNS)
    write_bytes_atomic(sweep / f"{RESULTS}.png", plot_speech(rows))
    refresh_report(sweep)
    return result
