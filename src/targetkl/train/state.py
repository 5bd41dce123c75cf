"""What every training loop here (the codec's and the generator's) keeps between runs of the same command.

A loop's state is its named modules (each one safetensors file of a checkpoint: ``model``, ``ema``,
``discriminator``), its named optimizers, the step, torch's RNG and whatever else the loop adds; its settings are
one JSON file in the run folder that a resumed run must match. :class:`TrainingState` saves and restores the
first (through :mod:`targetkl.checkpoints`, atomically), :func:`write_settings` guards the second, and
:func:`update_ema` is the exponential moving average both loops keep of their weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from targetkl.checkpoints import latest_checkpoint, load_module, load_state, save_checkpoint, state_dict_for_file
from targetkl.errors import UserError
from targetkl.fileio import write_text_atomic


class TrainingError(UserError, RuntimeError):
    """Training cannot go on as asked (other settings in the run folder, too many bad steps or files); the
    message says what to do."""


class TrainingState:
    """``modules``: file name -> module (``None``: not kept by this run); ``optimizers``: key in ``state.pt`` ->
    optimizer (``None``: saved as ``{}``, as a run without that optimizer writes it)."""

    def __init__(self, modules: dict[str, nn.Module | None], optimizers: dict[str, torch.optim.Optimizer | None]):
        self.modules = {name: module for name, module in modules.items() if module is not None}
        self.optimizers = optimizers

    def save(self, run_dir: Path, step: int, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
        """Checkpoint ``step``: every module, every optimizer, torch's RNG and ``extra``; returns the folder."""
        state = {"step": step, **{key: optimizer.state_dict() if optimizer is not None else {}
                                  for key, optimizer in self.optimizers.items()},
                 "torch_rng": torch.get_rng_state(), **(extra or {})}
        tensors = {name: state_dict_for_file(module) for name, module in self.modules.items()}
        return save_checkpoint(run_dir, step, tensors, state, keep)

    def resume(self, run_dir: Path) -> dict[str, Any] | None:
        """Load the latest checkpoint of ``run_dir`` into the modules and optimizers and restore torch's RNG;
        returns the saved state (``step`` and the loop's extras), or ``None`` when there is no checkpoint."""
        folder = latest_checkpoint(run_dir)
        if folder is None:
            return None
        for name, module in self.modules.items():
            load_module(module, folder / f"{name}.safetensors")
        state = load_state(folder / "state.pt")
        for key, optimizer in self.optimizers.items():
            if optimizer is not None and state.get(key):
                optimizer.load_state_dict(state[key])
        torch.set_rng_state(state["torch_rng"])
        return state


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema``'s parameters move ``1 - decay`` of the way to ``model``'s; its buffers (rate-control state, latent
    statistics) are ``model``'s."""
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def write_settings(path: Path, settings: dict[str, Any], fixed: Callable[[dict[str, Any]], Any], what: str) -> None:
    """Write a run's ``settings`` (JSON) to ``path`` atomically. When ``path`` already holds settings whose
    ``fixed(...)`` (what the saved weights depend on) differs from ``fixed(settings)``, raise ``TrainingError``:
    resuming would mix two runs. ``what`` names them in the message (``"model or rate settings"``). Unreadable old
    settings are replaced."""
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = None
        if isinstance(saved, dict):
            try:
                differs = _plain(fixed(saved)) != _plain(fixed(settings))
            except (KeyError, TypeError):
                differs = True
            if differs:
                raise TrainingError(f"{path}: this run was started with other {what}; use a new --out folder, or "
                                    "resume with the run's own settings")
    write_text_atomic(path, json.dumps(settings, indent=2) + "\n")


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists), so saved and current settings compare equal."""
    return json.loads(json.dumps(value))
