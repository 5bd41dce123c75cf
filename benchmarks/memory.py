"""Peak memory of a 100-step tiny training run on a 2-hour corpus against a 5-minute one; prints JSON.

    python benchmarks/memory.py [--hours 2] [--small-minutes 5] [--steps 100] [--out /tmp/tkl-bench]

Both corpora are 48 kHz stereo FLAC (60 s files), so every crop is read from disk and resampled to the
tiny preset's 16 kHz. Each run is its own ``targetkl train`` process; its peak RSS comes from
``getrusage(RUSAGE_CHILDREN)``. The index is built (and timed) before, in the same way ``train`` would.
Streaming holds the difference to the index, not the audio: the acceptance is a difference under 150 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _corpus import write_corpus


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a fresh child of a fresh Python (so RUSAGE_CHILDREN is its own); ``(MB, seconds)``."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.time() - t)")
    out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True)
    megabytes, seconds = out.stdout.split()[-2:]
    return float(megabytes), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--small-minutes", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default="/tmp/tkl-bench")
    args = parser.parse_args()
    out = Path(args.out)
    rows = {}
    for name, minutes in (("small", args.small_minutes), ("large", args.hours * 60)):
        started = time.time()
        corpus = write_corpus(out / f"corpus-{name}", minutes, 60.0)
        written = time.time() - started
        run = out / f"run-{name}"
        subprocess.run(["rm", "-rf", str(run)], check=True)
        index_started = time.time()
        subprocess.run([sys.executable, "-m", "targetkl.cli", "index", str(corpus), "-q"], check=True,
                       capture_output=True)
        index_seconds = time.time() - index_started
        megabytes, seconds = peak_rss_mb([sys.executable, "-m", "targetkl.cli", "train", "--data", str(corpus),
                                          "--out", str(run), "--preset", "tiny", "--steps", str(args.steps), "-q"])
        rows[name] = {"minutes": minutes, "peak_rss_mb": megabytes, "train_seconds": seconds,
                      "index_seconds": index_seconds, "corpus_write_seconds": written}
    rows["difference_mb"] = rows["large"]["peak_rss_mb"] - rows["small"]["peak_rss_mb"]
    rows["within_150_mb"] = rows["difference_mb"] < 150
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
