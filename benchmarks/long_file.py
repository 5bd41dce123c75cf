"""Peak memory and time of encode, compress, decompress and decode on one long file; prints JSON.

    python benchmarks/long_file.py [--minutes 60] [--sample-rate 16000] [--out /tmp/tkl-bench/long]

A tiny run is trained for a few steps on a small generated corpus (the weights do not matter for
memory), then each command runs in its own process on a ``--minutes`` long file; peak RSS comes from
``getrusage(RUSAGE_CHILDREN)`` of a fresh parent. The acceptance is every command under 1.5 GB for
60 minutes at 16 kHz: the audio is read and written in chunks, only the latent is whole.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import peak_rss_mb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--out", default="/tmp/tkl-bench/long")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus"
    if not corpus.exists():
        subprocess.run([sys.executable, "-m", "targetkl.cli", "corpus", str(corpus), "--clips", "20", "-q"], check=True)
    run = out / "run"
    if not (run / "checkpoints").exists():
        subprocess.run([sys.executable, "-m", "targetkl.cli", "train", "--data", str(corpus), "--out", str(run),
                        "--steps", "2", "--set", "rate.free_steps=0", "--set", "rate.warmup_steps=0", "-q"],
                       check=True, capture_output=True)
    audio = out / f"long-{args.minutes:g}min.wav"
    if not audio.exists():
        with sf.SoundFile(str(audio), "w", args.sample_rate, 1, "PCM_16") as handle:
            rng = np.random.default_rng(0)
            for minute in range(int(np.ceil(args.minutes))):
                seconds = min(60.0, args.minutes * 60 - minute * 60)
                t = np.arange(int(seconds * args.sample_rate)) / args.sample_rate
                handle.write(0.2 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.01 * rng.standard_normal(len(t)))
    cli = [sys.executable, "-m", "targetkl.cli"]
    steps = {"encode": [str(run), str(audio), str(out / "long.safetensors")],
             "decode": [str(run), str(out / "long.safetensors"), str(out / "decoded.wav")],
             "compress": [str(run), str(audio), str(out / "long.tkl")],
             "decompress": [str(run), str(out / "long.tkl"), str(out / "decompressed.wav")]}
    rows = {}
    for name, arguments in steps.items():
        megabytes, seconds = peak_rss_mb(cli + [name] + arguments + ["--device", "cpu"])
        rows[name] = {"peak_rss_mb": megabytes, "seconds": seconds}
    print(json.dumps({"minutes": args.minutes, "sample_rate": args.sample_rate, "file_mb": audio.stat().st_size / 1e6,
                      "commands": rows, "all_under_1500_mb": all(r["peak_rss_mb"] < 1500 for r in rows.values())},
                     indent=2))


if __name__ == "__main__":
    main()
