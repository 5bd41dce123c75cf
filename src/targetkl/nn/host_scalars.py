"""Scalar state kept in a module's 0-d buffers (so it is saved with the weights) and read as Python numbers
without a device synchronization on every read.

Reading a CUDA tensor as a Python number waits for the GPU. Controllers and bottlenecks read their step
counters and multipliers several times per training forward; :func:`read_scalar` pays that wait once after
the buffer changed (a load, a ``.to(device)``, an EMA copy) and otherwise returns the value cached with
the buffer's identity, storage pointer and version counter. :func:`write_scalar` fills the buffer from the host and
refreshes the cache, so a write costs no read either. Buffers must be ``float64`` or ``int64`` (a Python
float or int round-trips through them exactly).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

_CACHE = "_host_scalar_cache"


def _matches(entry: tuple, buffer: torch.Tensor) -> bool:
    reference, pointer, version, _ = entry
    return reference() is buffer and pointer == buffer.data_ptr() and version == buffer._version


def _entry(buffer: torch.Tensor, value: float | int) -> tuple:
    return weakref.ref(buffer), buffer.data_ptr(), buffer._version, value


def _cache(module: nn.Module) -> dict:
    cache = module.__dict__.get(_CACHE)
    if cache is None:
        cache = module.__dict__[_CACHE] = {}
    return cache


def _python_number(buffer: torch.Tensor, value: float | int) -> float | int:
    if buffer.dtype == torch.float64:
        return float(value)
    if buffer.dtype == torch.int64:
        return int(value)
    raise TypeError(f"host scalar buffers must be float64 or int64, not {buffer.dtype}")


def read_scalar(module: nn.Module, name: str) -> float | int:
    """The value of the 0-d buffer ``module.<name>``; synchronizes only when the buffer changed on the device."""
    buffer = getattr(module, name)
    cached = _cache(module).get(name)
    if cached is not None and _matches(cached, buffer):
        return cached[3]
    value = _python_number(buffer, buffer.item())
    _cache(module)[name] = _entry(buffer, value)
    return value


def write_scalar(module: nn.Module, name: str, value: float | int) -> None:
    """Set the 0-d buffer ``module.<name>`` to ``value`` (no synchronization)."""
    buffer = getattr(module, name)
    value = _python_number(buffer, value)
    buffer.fill_(value)
    _cache(module)[name] = _entry(buffer, value)


def increment_scalar(module: nn.Module, name: str) -> None:
    """Add 1 to the counter buffer ``module.<name>`` (no synchronization once it was read or written)."""
    write_scalar(module, name, read_scalar(module, name) + 1)
