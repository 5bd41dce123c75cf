"""Reductions over the processes of a data-parallel run, usable from any layer (the bottom layer: it
imports nothing from the package). In a single process every function is the identity."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the initialized process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_over_ranks(values: list[float]) -> list[float]:
    """Average floats over all processes (the identity in a single process)."""
    if world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    return mean_tensor_over_ranks(tensor).cpu().tolist()


def mean_tensor_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor over all processes without leaving its device (no host synchronization); the
    identity in a single process. The tensor must live where the backend reduces (CUDA for NCCL)."""
    size = world_size()
    if size == 1:
        return tensor
    reduced = tensor.clone()
    dist.all_reduce(reduced)
    return reduced / size
