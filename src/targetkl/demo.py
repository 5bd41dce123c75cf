"""The README's first command: corpus, training at target bitrates, evaluation, and a printed summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from targetkl.config import resolve
from targetkl.data.corpus import write_corpus
from targetkl.eval.evaluate import evaluate_model, evaluate_run, format_result
from targetkl.models.codec import Codec
from targetkl.train.trainer import Trainer

log = logging.getLogger("targetkl.demo")


def run_demo(out: Path, kbps: list[float], steps: int | None = None, clips: int = 300,
             progress: bool = True) -> dict:
    """Train one tiny VAE per target in ``kbps`` and compare it with an untrained model of the same config."""
    data = out / "corpus"
    if not (data / "captions.jsonl").is_file():
        write_corpus(data, clips=clips, progress=progress)
    rows = []
    for target in kbps:
        flags = {"rate.target_kbps": target, **({"train.steps": steps} if steps is not None else {})}
        config = resolve("tiny", flags=flags)
        run = out / "runs" / f"vae-{target:g}kbps"
        Trainer(config, data, run, progress=progress).run()
        trained = evaluate_run(run, data, perceptual=True, progress=progress)
        torch.manual_seed(config.train.seed)
        untrained = evaluate_model(Codec(config).eval(), config, data, perceptual=False, progress=False)
        print(f"\n== {run}\n{format_result(trained)}\nmel distance of the same model before training: "
              f"{untrained['mel_distance']:.4f}")
        rows.append({"run": str(run), "target_kbps": target, "rate_kbps": trained["rate_kbps"],
                     "rate_error_percent": trained["rate_error_percent"],
                     "mel_distance": trained["mel_distance"], "mel_distance_untrained": untrained["mel_distance"],
                     "si_sdr": trained["si_sdr"]})
    summary = {"corpus": str(data), "runs": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
