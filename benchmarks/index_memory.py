"""Memory and time of the data path's per-file state at 10k, 100k and 1M files, without any audio; prints JSON.

    python benchmarks/index_memory.py [--entries 10000,100000,1000000]

For each size a synthetic corpus listing (paths, probed lengths, captions: what the index holds for real files)
goes through the steps that grow with the corpus: ``ensure_index`` with a cache on disk (the listing and the stat
of each file are replaced by the synthetic rows, as a warm start that probes nothing), the train/held-out split
(``load_folder``) and drawing the crops of 100 training batches (their reads replaced by zeros). Reported:
bytes per entry held after the split (tracemalloc, the Python and NumPy heap), the peak per entry while loading,
and the seconds of each step. Goal: under 2 KB per entry.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
import tracemalloc

import numpy as np


def synthetic_rows(count: int, root: str) -> list[dict]:
    rng = np.random.default_rng(0)
    frames = rng.integers(16000, 16000 * 30, count)
    return [{"path": f"{i // 1000:04d}/clip{i:07d}.flac", "file": f"{root}/{i // 1000:04d}/clip{i:07d}.flac",
             "caption": f"a short recording number {i}", "label": f"class{i % 50}", "frames": int(frames[i]),
             "sample_rate": 16000, "channels": 1, "rms": 0.1, "peak": 0.9} for i in range(count)]


def measure(count: int) -> dict:
    from targetkl.data import audio, index

    root = tempfile.mkdtemp(prefix="tkl-index-memory-")
    rows = synthetic_rows(count, root)
    index._candidates = lambda source, kind: ([{k: r[k] for k in ("path", "file", "caption", "label")}
                                               for r in rows], [])
    index._stat = lambda candidate: (1000, 1, (0, hash(candidate["file"])))
    probed = {r["file"]: r for r in rows}
    index._probe_all = lambda candidates, workers, progress: [
        {k: probed[c["file"]][k] for k in ("frames", "sample_rate", "channels", "rms", "peak")} for c in candidates]
    os.environ["TARGETKL_CACHE"] = tempfile.mkdtemp(prefix="tkl-index-memory-cache-")
    started = time.perf_counter()
    index.ensure_index(root, progress=False)  # cold: writes the cache
    cold = time.perf_counter() - started
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    train = audio.load_folder(root, 16000, "train", progress=False)
    load_seconds = time.perf_counter() - started
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    audio.AudioSet.read = lambda self, i, start=0, length=None: np.zeros(length or 0, dtype=np.float32)
    started = time.perf_counter()
    for step in range(100):
        audio.random_crops(train, 16, 16000, 0, step)
    crops = time.perf_counter() - started
    return {"entries": count, "train_entries": len(train), "bytes_per_entry_held": (held - base) / count,
            "bytes_per_entry_peak": (peak - base) / count, "cold_index_seconds": cold,
            "warm_load_and_split_seconds": load_seconds, "crops_of_100_batches_seconds": crops}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", default="10000,100000,1000000")
    args = parser.parse_args()
    print(json.dumps([measure(int(n)) for n in args.entries.split(",")], indent=2))


if __name__ == "__main__":
    main()
