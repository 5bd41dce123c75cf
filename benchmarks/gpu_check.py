"""The CUDA check, in one go: the paper preset trained, evaluated and used on a GPU; prints JSON.

    python benchmarks/gpu_check.py [--steps 200] [--out /tmp/tkl-gpu] [--json FILE]

1. ``dacvae-48k`` (48 kHz, 40 Hz, 128 channels, adversarial losses) trains ``--steps`` steps in bf16 on a
   generated 10-minute 48 kHz corpus: steps per second (after the first 20, which include compilation of
   kernels and cuDNN autotuning), peak GPU memory, the share of time spent waiting for data and the
   share spent in the rate calibration (both logged by the trainer), and the CUDA synchronizations of an
   unlogged step (one is expected: the finite-loss check).
   Then 60 steps with ``train.compile=true`` (compiled encoder and decoder), steps per second after the first 20.
2. ``eval`` (without PESQ/STOI/ViSQOL) and ``pre-encode`` of the run on CUDA, timed.
3. A 10-minute file encoded and decoded in chunks on CUDA (``targetkl encode`` / ``decode``), timed, with
   the peak GPU memory of that step.

Runs in about 5 minutes on one H100/H200-class GPU. ``--device cpu`` runs the same script at a reduced size
(the paper preset's shape with narrow layers, batch 2, 3 steps, a 30 s corpus, a 20 s long file; about a minute on
two cores): CI runs it, so the first run on a GPU does not spend its minutes on a typo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import write_corpus  # noqa: E402

from targetkl.config import resolve  # noqa: E402
from targetkl.fileio import write_text_atomic  # noqa: E402
from targetkl.eval.evaluate import evaluate_run  # noqa: E402
from targetkl.gen.dataset import pre_encode  # noqa: E402
from targetkl.latents import decode_file, encode_file  # noqa: E402
from targetkl.runs import load_run  # noqa: E402
from targetkl.train.trainer import Trainer  # noqa: E402


CPU_SIZE = ["model.encoder_dim=4", "model.decoder_dim=32", "train.batch_size=2", "rate.calibrate_clips=2",
            "rate.trim_clips=4"]  # the paper preset's strides, latent and losses, with narrow layers


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function, *args, **kwargs):
    _synchronize()
    started = time.perf_counter()
    result = function(*args, **kwargs)
    _synchronize()
    return result, time.perf_counter() - started


def peak_memory_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None


def syncs_per_step(trainer: Trainer, steps: int) -> float:
    """Mean CUDA synchronizations per unlogged training step (``torch.cuda.set_sync_debug_mode``)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.train_step()
                trainer.step += 1
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: the full check; cpu: the same script at a reduced size")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 200 on cuda, 3 on cpu)")
    parser.add_argument("--out", default="/tmp/tkl-gpu")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"))
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA device (or --device cpu for the reduced check)")
    cpu = device == "cpu"
    steps = args.steps or (3 if cpu else 200)
    out = Path(args.out)
    corpus = write_corpus(out / "corpus", 0.5 if cpu else 10.0, 5.0 if cpu else 10.0, sample_rate=48000, channels=1)
    report: dict = {"device": "cpu" if cpu else torch.cuda.get_device_name(0), "torch": torch.__version__}

    config = resolve("dacvae-48k", assignments=[
        f"train.steps={steps}", f"train.checkpoint_every={steps}", "train.log_every=1" if cpu else "train.log_every=10",
        "rate.free_steps=50", "rate.warmup_steps=50", f"train.device={device}", "train.bf16=true",
        *(CPU_SIZE if cpu else [])])
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(config, corpus, out / "run", progress=False)
    _, seconds = timed(trainer.run)
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split", "train") == "train" and "seconds" in r]
    after = [r for r in train_rows if r["step"] >= (1 if cpu else 20)]
    steps_per_second = ((after[-1]["step"] - after[0]["step"]) / (after[-1]["seconds"] - after[0]["seconds"])
                        if len(after) >= 2 else None)
    report["train"] = {"preset": "dacvae-48k" + (" (reduced: " + ", ".join(CPU_SIZE) + ")" if cpu else ""),
                       "steps": steps, "batch_size": config.train.batch_size,
                       "wall_seconds": seconds, "steps_per_second": steps_per_second,
                       "peak_gpu_memory_gb": peak_memory_gb(device),
                       "data_wait_share": train_rows[-1].get("time/data_wait_share"),
                       "calibration_share": train_rows[-1].get("time/calibration_share"),
                       "loader_workers": trainer.workers,
                       "last_rate_kbps": train_rows[-1].get("rate/kbps"),
                       "target_kbps": config.rate.target_kbps}
    report["train"]["syncs_per_step"] = None if cpu else syncs_per_step(trainer, steps=10)
    if not cpu:  # train.compile on the GPU (on the CPU, tests/test_gpu_path.py checks the compiled path)
        compiled_config = resolve("dacvae-48k", assignments=[
            "train.steps=60", "train.checkpoint_every=60", "train.log_every=10", "rate.free_steps=50",
            "rate.warmup_steps=50", f"train.device={device}", "train.bf16=true", "train.compile=true"])
        _, seconds = timed(Trainer(compiled_config, corpus, out / "compiled", progress=False).run)
        rows = [json.loads(line) for line in (out / "compiled" / "metrics.jsonl").read_text().splitlines()]
        timed_rows = [r for r in rows if r.get("split", "train") == "train" and "seconds" in r and r["step"] >= 20]
        report["train_compiled"] = {"steps": 60, "wall_seconds": seconds, "steps_per_second": (
            (timed_rows[-1]["step"] - timed_rows[0]["step"]) / (timed_rows[-1]["seconds"] - timed_rows[0]["seconds"])
            if len(timed_rows) >= 2 else None), "last_loss": timed_rows[-1].get("loss") if timed_rows else None}
    result, seconds = timed(evaluate_run, out / "run", corpus, perceptual=False, progress=False, device=device)
    report["eval"] = {"seconds": seconds, "clips": result["clips"], "rate_kbps": result["rate_kbps"],
                      "mel_distance": result["mel_distance"]}
    info, seconds = timed(pre_encode, out / "run", corpus, out / "latents", progress=False, device=device)
    report["pre_encode"] = {"seconds": seconds, "clips": info["clips"]}

    long_seconds = 20 if cpu else 600
    long_file = out / f"long_{long_seconds}s.flac"
    if not long_file.exists():
        import numpy as np
        import soundfile as sf

        t = np.arange(long_seconds * 48000) / 48000
        sf.write(long_file, (0.2 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32),
                 48000, subtype="PCM_16")
    model = load_run(out / "run", torch.device(device)).model
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    _, encode_seconds = timed(encode_file, model, long_file, out / "long.safetensors")
    _, decode_seconds = timed(decode_file, model, out / "long.safetensors", out / "long.wav")
    report["chunked_long_file"] = {"seconds_of_audio": long_seconds, "encode_seconds": encode_seconds,
                                   "decode_seconds": decode_seconds,
                                   "real_time_factor": (encode_seconds + decode_seconds) / long_seconds,
                                   "peak_gpu_memory_gb": peak_memory_gb(device)}
    text = json.dumps(report, indent=2)
    print(text)
    write_text_atomic(Path(args.json), text + "\n")


if __name__ == "__main__":
    main()
