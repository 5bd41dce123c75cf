"""The registry of foreign checkpoint formats that ``targetkl import`` reads.

A format is one module that calls :func:`register_format` with a :class:`ForeignFormat`: ``detect(path)`` says
whether ``path`` (a file or folder) is in that format, without reading weights; ``read(path)`` returns a
:class:`ForeignCodec`. Nothing else asks which format a source is. Reading never executes code: safetensors, JSON,
and ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from targetkl.errors import UserError

BUILT_IN = ("targetkl.foreign.targetkl_run", "targetkl.foreign.dac", "targetkl.foreign.stable_audio",
            "targetkl.foreign.diffusers")


class ForeignCheckpointError(UserError, ValueError):
    """A foreign checkpoint that cannot be read or does not describe a model we can build."""


@dataclass
class ForeignCodec:
    """What a source holds, in this toolkit's terms.

    ``settings``: ``--set`` keys that build the source's encoder and decoder (``model.*``, and any training setting
    the source implies, such as DAC's crop). ``weights``: the codec's tensors under our names (``encoder.*``,
    ``decoder.*``, and ``bottleneck.*`` when the source's quantizer or controller is kept); the encoder's last
    convolution emits ``encoder_output``: ``"latent"`` (``latent_dim`` channels, a deterministic latent such as
    DAC's) or ``"posterior"`` (``2 x latent_dim``: mean then raw scale, Stable Audio's VAE). ``bottleneck``: the
    bottleneck the source is (``vae``, ``rvq`` or ``ae``); ``bottleneck_settings``: the ``--set`` keys that keep
    the source's own bottleneck (DAC's quantizer as ``rvq``). ``discriminator``: its weights under our names when
    the source has a discriminator we build, else ``None``. ``notes``: what the import should tell the user."""

    kind: str
    settings: dict[str, Any]
    weights: dict[str, torch.Tensor]
    encoder_output: str
    bottleneck: str
    bottleneck_settings: dict[str, Any] = field(default_factory=dict)
    discriminator: dict[str, torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)
    base_config: dict[str, Any] | None = None  # a whole config to start from (a targetkl run), else a preset


@dataclass(frozen=True)
class ForeignFormat:
    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path], ForeignCodec]


FORMATS: dict[str, ForeignFormat] = {}


def register_format(entry: ForeignFormat) -> ForeignFormat:
    FORMATS[entry.name] = entry
    return entry


def load_formats() -> dict[str, ForeignFormat]:
    for module in BUILT_IN:
        importlib.import_module(module)
    return FORMATS


def read_source(path: str | Path) -> ForeignCodec:
    """The codec ``path`` holds, read by the first format that recognizes it; one line when none does."""
    path = Path(path)
    if not path.exists():
        raise ForeignCheckpointError(f"{path}: not found; pass a DAC weights file (.pth), a stable-audio-tools "
                                     "model folder or weights file, a diffusers AutoencoderOobleck folder or a "
                                     "targetkl run folder")
    for entry in load_formats().values():
        if entry.detect(path):
            return entry.read(path)
    kinds = "; ".join(f"{entry.name}: {entry.description}" for entry in FORMATS.values())
    raise ForeignCheckpointError(f"{path}: not a checkpoint this toolkit can import ({kinds})")


def whole_frames_seconds(seconds: float, sample_rate: int, hop: int) -> float:
    """``seconds`` rounded to a whole number (at least 1) of ``hop``-sample latent frames: a training crop the
    source's codec can take."""
    return max(1, round(seconds * sample_rate / hop)) * hop / sample_rate


def _is_torch_package(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/.data/extern_modules" in name or name.endswith(".data/version") for name in names) and not any(
        name.endswith("/data.pkl") for name in names)


def load_weights_only(path: Path, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers, never code. A torch.package
    (pickled code), a hostile pickle, a truncated or foreign file is a one-line error ending in ``fix``."""
    if _is_torch_package(path):
        raise ForeignCheckpointError(f"{path}: a torch.package (pickled code, which is never executed here); {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as error:
        detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise ForeignCheckpointError(f"{path}: not a readable weights-only torch file ({detail}); {fix}") from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise ForeignCheckpointError(f"{path}: not a readable safetensors file ({detail})") from None


def named_tensors(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ForeignCheckpointError(f"{path}: its state_dict holds something other than named tensors")
    return state
