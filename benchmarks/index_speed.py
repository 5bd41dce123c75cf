"""Time to index 10,000 files, cold and again with nothing changed; prints JSON.

    python benchmarks/index_speed.py [--files 10000] [--seconds 0.5] [--workers 0] [--out /tmp/tkl-bench]

The files are 16 kHz mono wavs of ``--seconds``. ``cold`` probes every file (in worker processes);
``warm`` is the check ``train`` makes at every start: list and stat the folder, probe nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from targetkl.data.index import default_workers, ensure_index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=0, help="probing processes (0: the default for the machine)")
    parser.add_argument("--out", default="/tmp/tkl-bench/index")
    args = parser.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(args.files):
        path = folder / f"{index // 1000:02d}" / f"{index:06d}.wav"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32), 16000)
    os.environ["TARGETKL_CACHE"] = tempfile.mkdtemp(prefix="tkl-index-bench-")
    workers = args.workers or default_workers()
    started = time.perf_counter()
    index = ensure_index(folder, workers=workers, progress=False)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    ensure_index(folder, workers=workers, progress=False)
    warm = time.perf_counter() - started
    shutil.rmtree(os.environ["TARGETKL_CACHE"], ignore_errors=True)
    print(json.dumps({"files": len(index.entries), "workers": workers, "cold_seconds": cold, "warm_seconds": warm,
                      "files_per_second_cold": len(index.entries) / cold}, indent=2))


if __name__ == "__main__":
    main()
