"""Running a codec on real audio: batched, in chunks of bounded size, on any device.

Long audio is cut into chunks of ``chunk_frames`` latent frames. Each chunk is processed with
``context`` frames of its neighbours on both sides (the codec's receptive field, computed from its
layers by :func:`receptive_field_frames`) and only its own frames are kept, so the chunked latent and
audio equal the whole-file ones up to float rounding (``tests/test_scale.py`` checks 1e-5). Pieces
of the same length, from one file or many, run as one batch of at most ``batch_size``; batching changes
only float rounding, never which samples a frame sees.

Audio is float32 at the model's rate, ``(samples,)`` for a mono model and ``(channels, samples)`` for one of
several channels; latents are ``(latent_dim, frames)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


DEFAULT_CHUNK_SECONDS = 30.0
DEFAULT_BATCH_SIZE = 16
MAX_BATCH_SECONDS = 60.0  # audio in one batch, at most: long pieces batch fewer at a time


def choose_device(name: str | None = "auto") -> torch.device:
    """``auto`` (or ``None``) picks CUDA when there is one. On CUDA, TF32 is allowed for matmuls and
    convolutions: the losses are spectral L1 distances far above TF32's 1e-3 relative error, and the KL is
    computed in float32 from the bottleneck's output."""
    from targetkl.config import ConfigError

    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"--device {name}: not a device ({error}); use auto, cpu, cuda[:N] or mps") from None
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": lambda: torch.backends.mps.is_available(),
                 "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}
    if device.type not in available:
        raise ConfigError(f"--device {name}: {device.type} devices cannot run the codec; use auto, cpu, cuda[:N] "
                          "or mps")
    if not available[device.type]():
        raise ConfigError(f"--device {name}: no {device.type} device is available here; use auto or cpu")
    counts = {"cuda": torch.cuda.device_count, "xpu": lambda: torch.xpu.device_count()}
    if device.index is not None and device.type in counts and device.index >= counts[device.type]():
        raise ConfigError(f"--device {name}: this machine has {counts[device.type]()} {device.type} device(s); "
                          f"use {device.type}:0 to {device.type}:{counts[device.type]() - 1}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _conv_reach(module: nn.Module) -> tuple[float, float]:
    """``(reach, scale)`` of one conv: how many of its input steps one output sees beyond itself (both sides
    together), and its output steps per input step."""
    kernel, dilation, stride = module.kernel_size[0], module.dilation[0], module.stride[0]
    if isinstance(module, nn.ConvTranspose1d):
        return math.ceil((dilation * (kernel - 1) + 1) / stride), float(stride)
    return (kernel - 1) * dilation, 1.0 / stride


def receptive_field_frames(codec: nn.Module) -> tuple[int, int]:
    """``(encoder, decoder)`` receptive fields in latent frames: what the architecture declares, else upper
    bounds summed over every convolution (``nn.Conv1d`` and ``nn.ConvTranspose1d``, weight-normed or not).

    A latent frame depends on at most ``encoder * hop`` input samples around it; an output sample on at
    most ``decoder`` latent frames around its own.
    """
    declared = getattr(codec, "declared_receptive_field", None)
    if declared is not None:
        return int(declared[0]), int(declared[1])
    reaches = []
    for part in (codec.encoder, codec.decoder):
        total, steps_per_unit = 0.0, 1.0  # units: the part's input steps
        for module in part.modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                reach, scale = _conv_reach(module)
                total += reach / steps_per_unit
                steps_per_unit *= scale
        reaches.append(total)
    return math.ceil(reaches[0] / codec.hop) + 1, math.ceil(reaches[1]) + 1


@dataclass
class Encoded:
    """One file's latent: ``z`` ``(D, F)`` (the posterior mean for a VAE), ``bits_per_frame`` ``(F,)`` float64,
    ``std`` ``(D, F)`` and ``kl_nats`` ``(F,)`` float64 for a VAE, ``codes`` ``(n_codebooks, F)`` for RVQ, else
    ``None``; on the CPU."""

    z: torch.Tensor
    bits_per_frame: torch.Tensor
    std: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    kl_nats: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.z.shape[-1])


@dataclass
class Piece:
    """Input span ``[start, stop)`` of one item, of which output units ``[keep_start, keep_stop)`` are kept."""

    item: int
    start: int
    stop: int
    keep_start: int
    keep_stop: int


def plan_pieces(item: int, units: int, chunk: int, context: int) -> list[Piece]:
    """Cover ``units`` steps with cores of ``chunk`` units, each read with ``context`` units either side."""
    if units <= chunk:
        return [Piece(item, 0, units, 0, units)]
    pieces = []
    for core in range(0, units, chunk):
        end = min(core + chunk, units)
        start, stop = max(0, core - context), min(units, end + context)
        pieces.append(Piece(item, start, stop, core - start, end - start))
    return pieces


def batches_of_pieces(pieces: list[Piece], batch_size: int, max_units: int | None = None) -> Iterator[list[Piece]]:
    """Pieces of equal input length grouped into batches of at most ``batch_size`` pieces and ``max_units``
    input units (at least one piece), in order of first use."""
    groups: dict[int, list[Piece]] = {}
    for piece in pieces:
        groups.setdefault(piece.stop - piece.start, []).append(piece)
    for length, group in groups.items():
        size = batch_size if max_units is None else max(1, min(batch_size, max_units // max(length, 1)))
        for first in range(0, len(group), size):
            yield group[first:first + size]


class CodecRunner:
    """Encode and decode with ``model`` in eval mode on ``device``, batched and in chunks."""

    def __init__(self, model: nn.Module, device: torch.device | str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 chunk_seconds: float = DEFAULT_CHUNK_SECONDS):
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.batch_size = max(1, int(batch_size))
        self.hop = model.hop
        self.channels = getattr(model, "audio_channels", 1)
        self.chunk_frames = max(1, int(round(chunk_seconds * model.frame_rate)))
        self.encoder_context, self.decoder_context = receptive_field_frames(model)
        self.max_batch_frames = max(1, int(MAX_BATCH_SECONDS * model.frame_rate))

    # ------------------------------------------------------------------ encode
    def frames_of(self, samples: int) -> int:
        return max(1, -(-samples // self.hop))

    @torch.no_grad()
    def encode(self, audios: list[np.ndarray]) -> list[Encoded]:
        """Each ``(samples,)`` (or ``(channels, samples)``) array, zero-padded to a whole number of frames, to its
        :class:`Encoded`."""
        return self.encode_reader([a.shape[-1] for a in audios],
                                  lambda item, start, stop: _window(audios[item], start, stop))

    @torch.no_grad()
    def encode_reader(self, lengths: list[int], read: Callable[[int, int, int], np.ndarray]) -> list[Encoded]:
        """Like :meth:`encode`, reading item ``i``'s samples ``[start, stop)`` with ``read(i, start, stop)``
        (zero past its end), so a long file is never in memory whole."""
        frames = [self.frames_of(n) for n in lengths]
        pieces = [p for i, f in enumerate(frames) for p in plan_pieces(i, f, self.chunk_frames, self.encoder_context)]
        parts: dict[int, list[tuple[int, dict]]] = {i: [] for i in range(len(lengths))}
        was_training = self.model.training
        self.model.eval()
        for batch in batches_of_pieces(pieces, self.batch_size, self.max_batch_frames):
            audio = np.stack([read(p.item, p.start * self.hop, p.stop * self.hop) for p in batch])
            out = self.model.encode(torch.from_numpy(audio).to(self.device).reshape(len(batch), self.channels, -1))
            for row, piece in enumerate(batch):
                keep = slice(piece.keep_start, piece.keep_stop)
                parts[piece.item].append((piece.start + piece.keep_start, {
                    "z": (out.mean if out.mean is not None else out.z)[row, :, keep].float().cpu(),
                    "bits": out.bits_per_frame[row, keep].double().cpu(),
                    "std": out.std[row, :, keep].float().cpu() if out.std is not None else None,
                    "codes": out.codes[row, :, keep].cpu() if out.codes is not None else None,
                    "kl": (out.kl_nats_per_frame[row, keep].double().cpu()
                           if out.kl_nats_per_frame is not None else None)}))
        self.model.train(was_training)
        return [_join(parts[i]) for i in range(len(lengths))]

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, latents: list[torch.Tensor], lengths: list[int] | None = None) -> list[np.ndarray]:
        """Each ``(D, F)`` latent to ``(F * hop,)`` (or ``(channels, F * hop)``) audio, cut to ``lengths[i]``
        samples when given."""
        shape = () if self.channels == 1 else (self.channels,)
        outputs = [np.zeros((*shape, z.shape[-1] * self.hop), dtype=np.float32) for z in latents]
        for item, start, audio in self.decode_pieces(latents):
            outputs[item][..., start:start + audio.shape[-1]] = audio
        if lengths is not None:
            outputs = [out[..., :n] for out, n in zip(outputs, lengths)]
        return outputs

    @torch.no_grad()
    def decode_pieces(self, latents: list[torch.Tensor]) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(item, first sample, audio)`` for every decoded chunk, item by item in order of samples."""
        pieces = [p for i, z in enumerate(latents) for p in plan_pieces(i, z.shape[-1], self.chunk_frames,
                                                                         self.decoder_context)]
        was_training = self.model.training
        self.model.eval()
        pending: dict[tuple[int, int], np.ndarray] = {}
        order = [(p.item, p.start + p.keep_start) for p in pieces]
        next_index = 0
        for batch in batches_of_pieces(pieces, self.batch_size, self.max_batch_frames):
            z = torch.stack([latents[p.item][:, p.start:p.stop] for p in batch]).float().to(self.device)
            audio = self.model.decode(z).float().cpu().numpy()
            if self.channels == 1:
                audio = audio[:, 0]
            for row, piece in enumerate(batch):
                kept = audio[row, ..., piece.keep_start * self.hop: piece.keep_stop * self.hop]
                pending[(piece.item, piece.start + piece.keep_start)] = kept
            while next_index < len(order) and order[next_index] in pending:
                item, frame = order[next_index]
                yield item, frame * self.hop, pending.pop(order[next_index])
                next_index += 1
        self.model.train(was_training)

    def reconstruct(self, audios: list[np.ndarray]) -> tuple[list[np.ndarray], list[Encoded]]:
        """Encode and decode: each decode cut to its input's length, with the encodings."""
        encoded = self.encode(audios)
        return self.decode([e.z for e in encoded], [a.shape[-1] for a in audios]), encoded


def _window(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    out = np.zeros((*audio.shape[:-1], stop - start), dtype=np.float32)
    part = audio[..., start:stop]
    out[..., :part.shape[-1]] = part
    return out


def _join(parts: list[tuple[int, dict]]) -> Encoded:
    parts.sort(key=lambda item: item[0])
    values = [p for _, p in parts]

    def cat(key: str, dim: int):
        if values[0][key] is None:
            return None
        return torch.cat([v[key] for v in values], dim=dim)

    return Encoded(z=cat("z", -1), bits_per_frame=cat("bits", -1), std=cat("std", -1), codes=cat("codes", -1),
                   kl_nats=cat("kl", -1))
