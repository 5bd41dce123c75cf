"""Training crops per second read from disk at 48 kHz, against what each preset consumes; prints JSON.

    python benchmarks/data_throughput.py [--minutes 20] [--workers 0,2,4] [--batches 40] [--out /tmp/tkl-bench]

A generated corpus of 48 kHz stereo FLAC files (10 s each) is indexed, then the training loader
(``targetkl.data.stream``) reads ``--batches`` batches of the ``dacvae-48k`` crop (0.5 s, resampled to
nothing: the corpus is at the model's rate) with 0, 2 and 4 worker processes. ``preset_needs`` gives,
for each preset, the crops one optimizer step takes (batch size) and the crops per second the loader
supports for it in steps per second: a loader keeps up when that is above the steps per second the
preset trains at on the target hardware (``benchmarks/gpu_check.py`` measures that on a GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _corpus import write_corpus

from targetkl.config import PRESETS, resolve
from targetkl.data import load_folder
from targetkl.data.stream import CropBatches, crop_loader


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--workers", default="0,2,4")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--out", default="/tmp/tkl-bench/throughput")
    args = parser.parse_args()
    folder = write_corpus(Path(args.out), args.minutes, 10.0)
    config = resolve("dacvae-48k")
    audio_set = load_folder(folder, config.model.sample_rate, "train", progress=False)
    batch = config.train.batch_size
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        batches = CropBatches(audio_set, batch, config.segment_samples, seed=0)
        loader = crop_loader(batches, 0, args.batches + 4, workers)
        for _ in range(4):  # start-up: workers fork and fill their queues
            next(loader)
        started = time.perf_counter()
        for _ in range(args.batches):
            next(loader)
        seconds = time.perf_counter() - started
        rows.append({"workers": workers, "crops_per_second": args.batches * batch / seconds,
                     "audio_seconds_per_second": args.batches * batch * config.data.segment_seconds / seconds})
    needs = {}
    for name in PRESETS:
        preset = resolve(name)
        needs[name] = {"crops_per_step": preset.train.batch_size, "segment_seconds": preset.data.segment_seconds,
                       "steps_per_second_supported": {str(r["workers"]): r["crops_per_second"] / preset.train.batch_size
                                                      for r in rows}}
    print(json.dumps({"corpus_hours": audio_set.seconds / 3600, "sample_rate": 48000, "channels": 2,
                      "crop_seconds": config.data.segment_seconds, "batch": batch, "loader": rows,
                      "preset_needs": needs}, indent=2))


if __name__ == "__main__":
    main()
