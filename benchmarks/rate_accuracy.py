"""Rate accuracy on the demo corpus: train the tiny preset at several targets, measure held-out kbps.

Prints JSON: per target the measured held-out rate, its error in percent, and the mel distance of the
trained model next to the same model before training. This is the core issue's acceptance check
(every target within 5%, rates in order, mel clearly below the untrained model's).

    python benchmarks/rate_accuracy.py --kbps 0.5,2,8 [--controller target] [--set rate.scope=batch]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from targetkl.config import resolve
from targetkl.demo import ensure_corpus, train_and_compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kbps", default="0.5,2,8")
    parser.add_argument("--controller", default=None, help="default: the config's (lagrange)")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="rate_accuracy_"))
    data = ensure_corpus(out / "corpus", progress=False)
    rows = []
    for target in [float(k) for k in args.kbps.split(",")]:
        flags = {"rate.target_kbps": target, **({"rate.controller": args.controller} if args.controller else {})}
        config = resolve("tiny", assignments=args.set, flags=flags)
        row, _ = train_and_compare(config, data, out / f"{config.rate.controller}-{target:g}", perceptual=False,
                                   progress=False)
        rows.append(row)
    measured = [r["rate_kbps"] for r in rows]
    print(json.dumps({"controller": config.rate.controller, "overrides": args.set, "rows": rows,
                      "in_order": measured == sorted(measured),
                      "all_within_5_percent": all(abs(r["rate_error_percent"]) < 5 for r in rows)}, indent=2))


if __name__ == "__main__":
    main()
