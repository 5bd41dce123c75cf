"""Per-step metrics to ``RUN/metrics.jsonl`` and TensorBoard (``RUN/tensorboard``)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricLogger:
    """Append one JSON line per logged step; mirror every scalar to TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
                from targetkl.train.media import RATE_CHART

                self.writer.add_custom_scalars(RATE_CHART)
            except ImportError:
                self.writer = None

    def log(self, step: int, values: dict[str, float], split: str = "train") -> None:
        clean = {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in values.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, "split": split, **clean}) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                if value is not None:
                    self.writer.add_scalar(f"{split}/{key}" if split != "train" else key, value, step)

    def media(self, step: int, model, audios: list, target_kbps: float | None, stats: dict | None) -> None:
        """Held-out audio, spectrograms and latent histograms (:mod:`targetkl.train.media`)."""
        if self.writer is not None:
            from targetkl.train.media import log_media

            log_media(self.writer, model, audios, step, target_kbps, stats)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (they came from steps a crash undid), so a resumed log is clean."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        self.path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def read_metrics(run_dir: str | Path, split: str = "train") -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("split") == split:
            rows.append(row)
    return rows


class NullLogger:
    """What ranks other than 0 log to in data-parallel training: nothing."""

    def log(self, step: int, scalars: dict, split: str = "train") -> None:
        pass

    def media(self, step: int, model, audios: list, target_kbps: float | None, stats: dict | None) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass
