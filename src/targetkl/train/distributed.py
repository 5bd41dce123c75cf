"""Data-parallel training on ``torch.distributed`` (NCCL on GPUs, gloo on CPU), launched by ``torchrun``.

``train.batch_size`` is the batch of one process; N processes train like one process with a batch of
``N * batch_size`` (exactly so for every loss term that is a mean over clips; spectral convergence is
taken over each process's batch): each rank takes its slice of the global batch of crops (a pure function of
seed and step) and of the global batch's posterior noise, gradients are averaged by DDP, and the KL
controllers update on the all-reduced batch KL. Rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from targetkl.collectives import mean_over_ranks

__all__ = ["DistributedContext", "SINGLE", "barrier", "current", "init_from_environment", "mean_over_ranks"]


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = DistributedContext()


def init_from_environment() -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), else single."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                              int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def current() -> DistributedContext:
    """The context of an already initialized process group (single when there is none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                              int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def barrier() -> None:
    if current().active:
        dist.barrier()
