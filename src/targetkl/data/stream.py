"""Training crops streamed from disk by ``torch.utils.data.DataLoader`` workers.

Item ``m`` of :class:`CropBatches` is the batch of micro-step ``m`` for one process: its rows of the
global batch :func:`targetkl.data.audio.random_crops` draws for ``(seed, m)``. A batch is a pure function
of the micro-step, so how many workers read it, and whether the run was resumed, changes nothing.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from targetkl.data.audio import AudioSet, random_crops


class CropBatches(Dataset):
    """``dataset[m]`` -> ``(crops, failed)``: ``(batch_size, channels, segment_samples)`` float32, this rank's slice
    of micro-step ``m``, and the paths of the files that could not be read for it (their crops were drawn again,
    see :func:`random_crops`)."""

    def __init__(self, audio_set: AudioSet, batch_size: int, segment_samples: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        self.audio_set = audio_set
        self.batch_size, self.segment_samples, self.seed = batch_size, segment_samples, seed
        self.rows = range(rank * batch_size, (rank + 1) * batch_size)
        self.global_batch = batch_size * world_size

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, micro_step: int) -> tuple[torch.Tensor, list[str]]:
        failed: list[str] = []
        crops = random_crops(self.audio_set, self.global_batch, self.segment_samples, self.seed, micro_step, self.rows,
                             failed)
        return crops, failed


def auto_workers(local_world_size: int = 1) -> int:
    """Loader workers per process: none on a machine of two cores or fewer (reading the crops of a small
    batch costs less than a worker's hand-off), else half of this process's share of the cores, at most 8."""
    cores = os.cpu_count() or 1
    if cores <= 2:
        return 0
    return max(1, min(8, cores // max(local_world_size, 1) // 2))


def crop_loader(batches: CropBatches, first: int, last: int, workers: int, pin_memory: bool = False):
    """An iterator over ``batches[first:last]`` in order, read ahead by ``workers`` processes (0: in this one)."""
    if workers <= 0:
        return (batches[m] for m in range(first, last))
    loader = DataLoader(batches, batch_size=None, sampler=range(first, last), num_workers=workers,
                        prefetch_factor=4, pin_memory=pin_memory, persistent_workers=False)
    return iter(loader)
