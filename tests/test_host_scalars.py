"""Buffers read as Python numbers through a cache that must never return a stale value."""

import copy

import pytest
import torch
from torch import nn

from targetkl.nn.host_scalars import read_scalar, write_scalar


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("level", torch.zeros((), dtype=torch.float64))


def test_reads_follow_every_way_a_buffer_can_change(monkeypatch):
    module = Counter()
    write_scalar(module, "count", 3)
    write_scalar(module, "level", 0.1)
    items = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: items.append(1) or original(self))
    assert read_scalar(module, "count") == 3 and read_scalar(module, "level") == 0.1
    assert items == []  # written from the host: no read needed
    module.count += 1  # an in-place change on the device
    assert read_scalar(module, "count") == 4 and len(items) == 1
    assert read_scalar(module, "count") == 4 and len(items) == 1  # cached again
    module.load_state_dict({"count": torch.tensor(9), "level": torch.tensor(2.5, dtype=torch.float64)})
    assert (read_scalar(module, "count"), read_scalar(module, "level")) == (9, 2.5)
    twin = copy.deepcopy(module)  # the EMA copy: its own buffers, same values
    twin.count.copy_(torch.tensor(11))
    assert read_scalar(twin, "count") == 11 and read_scalar(module, "count") == 9
    module.to(torch.device("cpu"))
    module.count = torch.tensor(5)  # a new tensor object
    assert read_scalar(module, "count") == 5


def test_only_exact_dtypes_are_allowed():
    module = nn.Module()
    module.register_buffer("value", torch.zeros(()))
    with pytest.raises(TypeError, match="float64 or int64"):
        write_scalar(module, "value", 1.0)
