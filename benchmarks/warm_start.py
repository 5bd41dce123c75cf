"""What starting from a trained codec buys: a retargeted run against one trained from scratch at the same bitrate.

    python benchmarks/warm_start.py OUT [--steps 1000] [--source-kbps 8] [--target-kbps 2] [--data DATA]

For each architecture (``dac`` with the ``tiny`` preset, ``oobleck`` with ``oobleck-tiny``) it trains

- ``source``: ``--steps`` at ``--source-kbps``;
- ``scratch``: ``--steps`` at ``--target-kbps`` from random weights;
- ``retarget``: the source, imported with ``targetkl import`` and trained ``--steps`` at ``--target-kbps``. For
  ``dac`` the source run folder is imported as it is; for ``oobleck`` it first goes out as a stable-audio-tools
  model (``export --format stable-audio-tools``) and that folder is imported: the reference-format path;

each checkpointing ten times, and reads the held-out rate and mel distance training logs at every checkpoint.
Prints JSON per architecture: final held-out rate (and its error against the target) and mel distance of both
runs, and ``steps_to_scratch_final_mel``: the first checkpoint at which the retargeted run's held-out mel distance
is at or below the scratch run's final one, with its ``fraction`` of ``--steps``. Without ``--data`` it writes the
demo corpus (``targetkl corpus``) into ``OUT/corpus``. Runs one training at a time (two CPU cores: about 25
minutes at the default 1000 steps); a second call reuses finished runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ARCHITECTURES = {"dac": "tiny", "oobleck": "oobleck-tiny"}


def targetkl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "targetkl", *args, "-q"] if args[0] in ("train", "corpus")
                   else [sys.executable, "-m", "targetkl", *args], check=True, stdout=subprocess.DEVNULL)


def held_out(run: Path) -> list[dict]:
    if not (run / "metrics.jsonl").is_file():
        return []
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "rate_kbps": r.get("rate_kbps"), "mel_distance": r.get("mel_distance")}
            for r in rows if r.get("split") == "held_out" and r.get("step", 0) > 0]


def train(run: Path, data: Path, kbps: float, steps: int, preset: str | None) -> float | None:
    """Train ``run`` (or leave it when it has already reached ``steps``); the seconds it took, ``None`` if left."""
    started = time.perf_counter()
    flags = ["--preset", preset] if preset else []
    logged = held_out(run)
    if logged and logged[-1]["step"] >= steps:
        return None
    targetkl("train", "--data", str(data), "--out", str(run), "--target-kbps", f"{kbps:g}", "--steps", str(steps),
             *flags, "--set", f"train.checkpoint_every={max(1, steps // 10)}")
    return round(time.perf_counter() - started, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--source-kbps", type=float, default=8.0)
    parser.add_argument("--target-kbps", type=float, default=2.0)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    args = parser.parse_args()
    out = args.out.resolve()
    data = args.data.resolve() if args.data else out / "corpus"
    if args.data is None and not (data / "captions.jsonl").is_file():
        targetkl("corpus", str(data))
    report = {"steps": args.steps, "source_kbps": args.source_kbps, "target_kbps": args.target_kbps,
              "data": str(data), "command": " ".join(sys.argv)}
    for arch in args.architectures.split(","):
        preset, folder = ARCHITECTURES[arch], out / arch
        seconds = {"source": train(folder / "source", data, args.source_kbps, args.steps, preset),
                   "scratch": train(folder / "scratch", data, args.target_kbps, args.steps, preset)}
        source = folder / "source"
        if arch == "oobleck":
            if not (folder / "source-sat" / "model_config.json").is_file():
                targetkl("export", str(source), str(folder / "source-sat"), "--data", str(data), "--format",
                         "stable-audio-tools")
            source = folder / "source-sat"
        retarget = folder / "retarget"
        if not retarget.is_dir():
            targetkl("import", str(source), str(retarget))
        seconds["retarget"] = train(retarget, data, args.target_kbps, args.steps, None)
        curves = {name: held_out(folder / name) for name in ("source", "scratch", "retarget")}
        scratch_final = curves["scratch"][-1]["mel_distance"]
        reached = next((row["step"] for row in curves["retarget"] if row["mel_distance"] <= scratch_final), None)
        report[arch] = {
            "imported_from": "run folder" if arch == "dac" else "stable-audio-tools export",
            **{f"{name}_final": {**curves[name][-1], "rate_error_percent": round(
                100 * (curves[name][-1]["rate_kbps"] / kbps - 1), 3)}
               for name, kbps in (("source", args.source_kbps), ("scratch", args.target_kbps),
                                  ("retarget", args.target_kbps))},
            "steps_to_scratch_final_mel": reached,
            "fraction": None if reached is None else reached / args.steps,
            "curves": {name: [(r["step"], round(r["mel_distance"], 4), round(r["rate_kbps"], 4)) for r in rows]
                       for name, rows in curves.items()},
            "seconds": seconds}
        print(json.dumps({arch: {k: v for k, v in report[arch].items() if k != "curves"}}), flush=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
