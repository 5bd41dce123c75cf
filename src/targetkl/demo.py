"""The README's first command: corpus, training at target bitrates, evaluation, and a printed summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from targetkl.config import Config, resolve
from targetkl.data.corpus import write_corpus
from targetkl.fileio import write_text_atomic
from targetkl.eval.evaluate import evaluate_model, evaluate_run, format_result
from targetkl.models.codec import build_codec
from targetkl.train.trainer import Trainer


def ensure_corpus(data: Path, clips: int = 300, progress: bool = True) -> Path:
    """Synthesize the demo corpus into ``data`` unless it is already there."""
    if not (data / "captions.jsonl").is_file():
        write_corpus(data, clips=clips, progress=progress)
    return data


def train_and_compare(config: Config, data: Path, run: Path, perceptual: bool = True,
                      progress: bool = True) -> tuple[dict, dict]:
    """Train ``run`` (or resume it), evaluate it on the held-out split, and compare with the same model
    before training. Returns ``(summary row, full evaluation of the trained run)``."""
    started = time.time()
    Trainer(config, data, run, progress=progress).run().finished()
    seconds = time.time() - started
    trained = evaluate_run(run, data, perceptual=perceptual, progress=progress)
    torch.manual_seed(config.train.seed)
    untrained = evaluate_model(build_codec(config).eval(), config, data, perceptual=False, progress=False)
    row = {"run": str(Path(run).resolve()), "target_kbps": trained["target_kbps"], "rate_kbps": trained["rate_kbps"],
           "rate_error_percent": trained["rate_error_percent"], "mel_distance": trained["mel_distance"],
           "mel_distance_untrained": untrained["mel_distance"], "si_sdr": trained["si_sdr"],
           "train_seconds": seconds}
    return row, trained


def run_demo(out: Path, kbps: list[float], steps: int | None = None, clips: int = 300,
             progress: bool = True) -> dict:
    """Train one tiny VAE per target in ``kbps`` and compare it with an untrained model of the same config."""
    data = ensure_corpus(out / "corpus", clips, progress)
    rows = []
    for target in kbps:
        flags = {"rate.target_kbps": target, **({"train.steps": steps} if steps is not None else {})}
        row, trained = train_and_compare(resolve("tiny", flags=flags), data, out / "runs" / f"vae-{target:g}kbps",
                                         perceptual=True, progress=progress)
        print(f"\n== {row['run']}\n{format_result(trained)}\nmel distance of the same model before training: "
              f"{row['mel_distance_untrained']:.4f}")
        rows.append(row)
    summary = {"corpus": str(Path(data).resolve()), "runs": rows}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
