"""A run folder's checkpoints, the low module that training writes and everything else reads (``runs.py``,
``api``, ``eval``, ``export``, the generator): safetensors for weights, a weights-only ``state.pt`` for
everything else. The rest of a run folder: ``config.json`` (``targetkl.config``), ``metrics.jsonl`` and
``tensorboard/`` (``train/logger.py``), ``latent_stats.json`` (``targetkl.latent_stats``).

Layout::

    RUN/checkpoints/step-00001000/model.safetensors     codec weights and controller state
    RUN/checkpoints/step-00001000/ema.safetensors       EMA weights (when EMA is on)
    RUN/checkpoints/step-00001000/discriminator.safetensors
    RUN/checkpoints/step-00001000/state.pt              step, optimizer(s), RNG, schedule
    RUN/checkpoints/latest                              name of the newest complete checkpoint

A checkpoint is written into a temporary folder (removed again if the write fails, e.g. on a full
disk, which is reported as one line), flushed to disk, renamed into place, and only then
named in ``latest`` (itself replaced atomically). A folder is deleted only after it has been renamed out
of the ``step-*`` namespace (to ``.old-*``), so a crash at any moment leaves ``latest`` pointing at a
complete checkpoint and every ``step-*`` folder complete. If a crash falls between moving a checkpoint
of the same step aside and renaming its replacement in, :func:`latest_checkpoint` moves the old one
back. Loading never executes code: safetensors, and ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from targetkl.errors import UserError
from targetkl.fileio import fsync_dir, fsync_file, umask_mode, write_text_atomic

LATEST = "latest"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing or damaged; the message names the file."""


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def state_dict_for_file(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in module.state_dict().items()}


def save_checkpoint(run_dir: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]],
                    state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``tensors[name]`` as ``name.safetensors`` and ``state`` as ``state.pt``; return the folder."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = root / name
    temporary = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{name}-"))
    try:
        for file_name, tensor_dict in tensors.items():
            save_file(tensor_dict, str(temporary / f"{file_name}.safetensors"))
            os.chmod(temporary / f"{file_name}.safetensors", umask_mode())  # safetensors writes its files private
            fsync_file(temporary / f"{file_name}.safetensors")
        with open(temporary / "state.pt", "wb") as handle:  # a full disk is then an OSError, not torch's message
            torch.save(state, handle)
        fsync_file(temporary / "state.pt")
        os.chmod(temporary, umask_mode(folder=True))  # mkdtemp's folder is private; the checkpoint is not
    except (OSError, RuntimeError) as error:
        shutil.rmtree(temporary, ignore_errors=True)  # give the space back: the rerun needs it
        if _out_of_space(error):
            raise CheckpointError(f"{root}: no space left on the device while writing {name}; the last complete "
                                  "checkpoint is kept and the partial one removed; free some space and run the "
                                  "same command to resume") from None
        raise
    if final.exists():
        _move_aside(final)
    os.rename(temporary, final)
    fsync_dir(root)
    write_text_atomic(root / LATEST, name + "\n")
    prune(root, keep=max(keep, 1), current=name)
    return final


def _out_of_space(error: BaseException | None) -> bool:
    """ENOSPC or EDQUOT, raised directly, named by a RuntimeError, or behind torch's writer's own error (its
    ``inline_container`` failure is raised while the file's OSError is being handled)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def prune(root: Path, keep: int, current: str) -> None:
    """Remove all but the newest ``keep`` complete checkpoints and any stale temporary folders."""
    complete = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in complete[:-keep]:
        if old.name != current:
            _move_aside(old)
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _move_aside(folder: Path) -> Path:
    """Rename ``folder`` out of the ``step-*`` namespace in one atomic step; return where it went."""
    aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".old-{folder.name}-")) / "replaced"
    os.rename(folder, aside)
    return aside


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "state.pt").is_file()


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``latest`` names, or ``None`` if the run has no checkpoint yet."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    folder = root / name
    if name.startswith("step-") and not folder.exists():
        for aside in sorted(root.glob(f".old-{name}-*/replaced")):
            if _complete(aside):
                os.rename(aside, folder)
                break
    if not name.startswith("step-") or not _complete(folder):
        raise CheckpointError(f"{pointer}: names {name!r}, which is not a complete checkpoint; "
                              "point it at an existing step-* folder or delete it to start over")
    return folder


def checkpoint_step(folder: Path) -> int:
    """The step a ``step-NNNNNNNN`` checkpoint folder holds."""
    return int(folder.name.split("-")[1])


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({error}); "
                              "restore it or delete the checkpoint folder to fall back to training") from error


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: damaged training state ({str(error).splitlines()[0][:200]}); "
                              "restore it or delete the checkpoint folder") from error


def load_module(module: nn.Module, path: Path) -> None:
    """Load a safetensors file into ``module`` strictly, with a clear error on any mismatch."""
    tensors = load_tensors(path)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: does not match the model in the run's config.json "
                              f"({str(error).splitlines()[0][:200]})") from error
