"""Every seed trains: the tiny preset on the demo corpus at several targets and seeds.

For each (target, seed) it trains the default config, then measures on the held-out split the rate,
its error in percent, latent_use (how much the decoder's output depends on its latent) and the mel
distance. Prints JSON with every row and whether all of them pass issue 19's check (latent_use above
0.4 and the rate within 1% of its target). About 3.5 minutes per run on 2 cores.

    python benchmarks/seeds.py --kbps 0.5,2 --seeds 0,1,2,3,4 [--set key=value] [--out folder]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from targetkl.config import resolve
from targetkl.demo import ensure_corpus, train_and_compare

MIN_LATENT_USE = 0.4
MAX_RATE_ERROR_PERCENT = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kbps", default="0.5,2")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--set", action="append", default=[], help="config override, as in `targetkl train`")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one); runs resume there")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="seeds_"))
    data = ensure_corpus(out / "corpus", progress=False)
    rows = []
    for target in [float(k) for k in args.kbps.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            config = resolve("tiny", assignments=args.set, flags={"rate.target_kbps": target, "train.seed": seed})
            row, trained = train_and_compare(config, data, out / f"vae-{target:g}kbps-seed{seed}",
                                             perceptual=False, progress=False)
            row.update(seed=seed, latent_use=trained["latent_use"],
                       passes=trained["latent_use"] > MIN_LATENT_USE
                       and abs(row["rate_error_percent"]) < MAX_RATE_ERROR_PERCENT)
            rows.append(row)
            with (out / "rows.jsonl").open("a") as log:
                log.write(json.dumps(row) + "\n")
    print(json.dumps({"overrides": args.set, "min_latent_use": MIN_LATENT_USE,
                      "max_rate_error_percent": MAX_RATE_ERROR_PERCENT, "rows": rows,
                      "all_pass": all(r["passes"] for r in rows)}, indent=2))


if __name__ == "__main__":
    main()
