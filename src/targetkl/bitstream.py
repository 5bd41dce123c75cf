"""The ``.tkl`` file: a Gaussian VAE's latent, entropy-coded under its own prior.

Scheme (measured, not assumed: ``targetkl compress --json`` reports both numbers). For each latent
channel ``c`` of a clip the encoder's posterior is ``N(mu[c, t], sigma[c, t]^2)``. The file stores one
quantization step per channel, rounded to float16,

    step_c = sqrt(2 * pi * e) * exp(mean_t ln sigma[c, t]) * g_c,   g_c in [1/e, e],

where ``g_c`` is found at encode time so that the channel's code length equals its KL (see
``rate_matched_steps``; ``g_c`` stays near 1 wherever the high-resolution argument below holds),
codes the symbols ``q[c, t] = round(mu[c, t] / step_c)`` with a range coder (``constriction``) under the
prior ``N(0, 1)`` integrated over each bin of width ``step_c``, and decodes ``z = q * step_c``.

Why this step: in the high-resolution regime a bin of width ``step`` under a density ``p`` costs
``-ln(p(mu) * step)`` nats, ``0.5 mu^2 + 0.5 ln(2 pi) - ln step``, while the KL the model was trained
to spend is ``0.5 mu^2 + 0.5 sigma^2 - ln sigma - 0.5``. For ``sigma << 1`` the two agree when
``step = sqrt(2 pi e) sigma``, so the file costs what the KL promised; at low rates the bins are as
wide as the prior, the approximation overspends (by 11% at 0.5 kbps on the demo corpus), and ``g_c``
corrects it. Uniform quantization with that step adds latent noise of variance ``step^2 / 12 = 1.42 sigma^2``, a
little more than the ``sigma^2``
the decoder saw in training; `targetkl compress` reports the resulting distortion against the plain decode of
the mean. Channels the model does not use (``sigma ~ 1``) get a step near 4, almost all their symbols are 0,
and they cost almost nothing, as their KL does.

File layout (little endian): the fixed header ``HEADER`` (magic ``TKL1``, format version, sample rate,
hop, frame rate, length in samples, the loudness gain applied before encoding (the model was
trained on audio at ``data.loudness_dbfs``; decompression divides it out), latent channels, frames,
largest symbol magnitude, 8-byte model fingerprint, payload length in 32-bit words), ``latent_dim`` float16 steps, the
payload words, and a
CRC-32 of everything before it. A short, damaged or foreign file is refused with ``BitstreamError``.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import constriction
import numpy as np
import torch

from targetkl.errors import UserError
from targetkl import rate
from targetkl.data.audio import file_entry, gain_for_level, loudness_gain, read_window, write_audio_stream
from targetkl.bottlenecks.gaussian import gaussian_kl_per_value
from targetkl.inference import DEFAULT_BATCH_SIZE, CodecRunner, Encoded
from targetkl.models.codec import Codec, model_fingerprint
from targetkl.fileio import output_path, write_bytes_atomic

MAGIC = b"TKL1"
VERSION = 1
HEADER = struct.Struct("<4sHIHfIfHIH8sI")
CHECKSUM = struct.Struct("<I")
STEP_FACTOR = math.sqrt(2 * math.pi * math.e)
BLOCK_VALUES = 1 << 21
MAX_SECONDS = 24 * 3600
MAX_STEP = 256.0  # a channel the model does not use has a step near 4 (at most about 11 for sigma = 1)
GAIN_RANGE = (1e-4, 1e6)  # loudness gains compress can write: peak-limited loud files to near-silent ones


class BitstreamError(UserError, ValueError):
    """A ``.tkl`` file that is truncated, damaged, of another format version, or from another model."""


@dataclass
class TklHeader:
    sample_rate: int
    hop: int
    frame_rate: float
    num_samples: int
    gain: float
    latent_dim: int
    frames: int
    max_symbol: int
    fingerprint: bytes
    payload_words: int


def quantization_steps(std: torch.Tensor) -> torch.Tensor:
    """``(D, F)`` posterior std -> ``(D,)`` high-resolution steps ``sqrt(2 pi e) * geometric mean over frames``."""
    return STEP_FACTOR * torch.exp(torch.log(std.double()).mean(dim=-1))


def code_length_bits(mean: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Ideal code length per channel, ``(D,)`` bits, of ``round(mean / step)`` under the binned N(0, 1) prior."""
    steps = steps.double()[:, None]
    symbols = torch.round(mean.double() / steps)
    normal = torch.distributions.Normal(0.0, 1.0)
    upper, lower = (symbols + 0.5) * steps, (symbols - 0.5) * steps
    # The bin's mass, computed on the side of the prior where it does not cancel to zero.
    mass = torch.where(symbols > 0, normal.cdf(-lower) - normal.cdf(-upper), normal.cdf(upper) - normal.cdf(lower))
    return -torch.log2(mass.clamp_min(1e-300)).sum(dim=-1)


def rate_matched_steps(mean: torch.Tensor, std: torch.Tensor, kl_nats: torch.Tensor,
                       iterations: int = 40) -> np.ndarray:
    """Per-channel steps whose code length equals the channel's KL: ``(D, F)`` x3 -> ``(D,)`` float16.

    Starts from the high-resolution step ``sqrt(2 pi e) * sigma`` and scales it by a factor in
    ``[1/e, e]`` found by bisection (code length falls as the step grows). Where ``sigma`` is small the
    factor stays near 1; at low rates, where bins are as wide as the prior, it corrects the
    high-resolution approximation, which would otherwise overspend.
    """
    block = max(1, BLOCK_VALUES // max(mean.shape[-1], 1))  # channels per pass: bounded memory on long files
    steps = []
    for first in range(0, mean.shape[0], block):
        part = slice(first, first + block)
        base = quantization_steps(std[part])
        budget = rate.nats_to_bits(kl_nats[part].double().sum(dim=-1))
        low = torch.full_like(base, -1.0)
        high = torch.full_like(base, 1.0)
        for _ in range(iterations):
            middle = (low + high) / 2
            too_long = code_length_bits(mean[part], base * torch.exp(middle)) > budget
            low = torch.where(too_long, middle, low)
            high = torch.where(too_long, high, middle)
        steps.append(base * torch.exp(high))
    return torch.cat(steps).numpy().astype(np.float16)


def _prior_model(max_symbol: int):
    return constriction.stream.model.QuantizedGaussian(-max_symbol, max_symbol)


def _symbol_scales(steps: np.ndarray, frames: int) -> np.ndarray:
    """Prior std in units of bins, one per symbol in channel-major order: ``(D * F,)``."""
    return np.repeat(1.0 / steps.astype(np.float64), frames)


def _dequantize(symbols: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
    """``(D, F)`` integer symbols times the per-channel steps -> latent ``(D, F)`` float32."""
    return (symbols.double() * torch.from_numpy(steps.astype(np.float64))[:, None]).float()


def decode_latent(model: Codec, latent: torch.Tensor, num_samples: int, gain: float,
                   runner: CodecRunner | None = None) -> np.ndarray:
    """``(D, F)`` latent -> ``(num_samples,)`` (or ``(channels, num_samples)``) audio at the input's loudness (the
    encode gain divided out); a latent longer than ``num_samples`` needs is cut after the decoder's receptive field."""
    runner = runner or CodecRunner(model)
    frames = min(latent.shape[-1], -(-num_samples // model.hop) + runner.decoder_context)
    return runner.decode([latent[:, :frames]], [num_samples])[0] / gain


def _fingerprint_bytes(model: Codec) -> bytes:
    return bytes.fromhex(model_fingerprint(model))


def pack(header: TklHeader, steps: np.ndarray, payload: np.ndarray) -> bytes:
    body = HEADER.pack(MAGIC, VERSION, header.sample_rate, header.hop, header.frame_rate, header.num_samples,
                       header.gain, header.latent_dim, header.frames, header.max_symbol, header.fingerprint,
                       header.payload_words)
    body += steps.astype("<f2").tobytes() + payload.astype("<u4").tobytes()
    return body + CHECKSUM.pack(zlib.crc32(body))


def unpack(data: bytes, source: str = "<bytes>") -> tuple[TklHeader, np.ndarray, np.ndarray]:
    """Parse and check a ``.tkl`` file: ``(header, steps (D,) float16, payload (words,) uint32)``."""
    if len(data) < HEADER.size + CHECKSUM.size:
        raise BitstreamError(f"{source}: truncated .tkl file ({len(data)} bytes); compress the audio again")
    fields = HEADER.unpack_from(data)
    if fields[0] != MAGIC:
        raise BitstreamError(f"{source}: not a .tkl file (magic {fields[0]!r}); make one with `targetkl compress`")
    if fields[1] != VERSION:
        raise BitstreamError(f"{source}: .tkl format version {fields[1]}, this targetkl reads version {VERSION}")
    header = TklHeader(*fields[2:])
    _check_header(header, source)
    expected = HEADER.size + 2 * header.latent_dim + 4 * header.payload_words + CHECKSUM.size
    if len(data) != expected:
        raise BitstreamError(f"{source}: {len(data)} bytes where the header announces {expected}: the file is "
                             "truncated or damaged; compress the audio again")
    (stored_crc,) = CHECKSUM.unpack_from(data, len(data) - CHECKSUM.size)
    if zlib.crc32(data[: -CHECKSUM.size]) != stored_crc:
        raise BitstreamError(f"{source}: checksum mismatch, the file is damaged; compress the audio again")
    offset = HEADER.size
    steps = np.frombuffer(data, dtype="<f2", count=header.latent_dim, offset=offset)
    payload = np.frombuffer(data, dtype="<u4", count=header.payload_words, offset=offset + 2 * header.latent_dim)
    if not (np.all(np.isfinite(steps)) and np.all(steps > 0) and np.all(steps <= MAX_STEP)):
        raise BitstreamError(f"{source}: invalid quantization steps in the header; compress the audio again")
    return header, steps.astype(np.float16), payload.astype(np.uint32)


def _check_header(header: TklHeader, source: str) -> None:
    """Bounds on every header field, checked against each other before anything is allocated."""
    damaged = f"{source}: damaged .tkl header"
    if not (0 < header.sample_rate <= 384000 and 0 < header.hop and 0 < header.latent_dim <= 4096):
        raise BitstreamError(f"{damaged} (sample rate, hop or latent width out of range); compress the audio again")
    if not (math.isfinite(header.frame_rate)
            and abs(header.frame_rate - header.sample_rate / header.hop) <= 1e-3 * header.frame_rate):
        raise BitstreamError(f"{damaged} (frame rate {header.frame_rate:g} Hz is not sample rate / hop); compress "
                             "the audio again")
    if not 0 < header.num_samples <= MAX_SECONDS * header.sample_rate:
        raise BitstreamError(f"{damaged} (length {header.num_samples} samples); compress the audio again")
    if header.frames != -(-header.num_samples // header.hop):
        raise BitstreamError(f"{damaged} ({header.frames} frames for {header.num_samples} samples); compress the "
                             "audio again")
    if not 1 <= header.max_symbol < 2 ** 16:
        raise BitstreamError(f"{damaged} (largest symbol {header.max_symbol}); compress the audio again")
    if not (math.isfinite(header.gain) and GAIN_RANGE[0] <= header.gain <= GAIN_RANGE[1]):
        raise BitstreamError(f"{damaged} (loudness gain {header.gain:g}); compress the audio again")


@torch.no_grad()
def compress(model: Codec, audio: np.ndarray, loudness_dbfs: float,
             runner: CodecRunner | None = None) -> tuple[bytes, dict]:
    """``(samples,)`` (or ``(channels, samples)``) float audio at the model's rate -> ``(.tkl bytes, details)``.

    The audio is brought to ``loudness_dbfs`` RMS as in training; the gain goes into the header.
    ``details`` holds ``symbols`` ``(D, F)`` int32, the decoded latent ``z`` ``(D, F)`` float32, the
    posterior ``mean`` and the clip's KL in bits per frame ``kl_bits_per_frame``.
    """
    gain = loudness_gain(audio, loudness_dbfs)
    runner = runner or CodecRunner(model)
    encoded = runner.encode([np.asarray(audio * gain, dtype=np.float32)])[0]
    return compress_encoded(model, encoded, audio.shape[-1], gain)


def compress_encoded(model: Codec, encoded: Encoded, num_samples: int, gain: float) -> tuple[bytes, dict]:
    """The ``.tkl`` bytes of an already encoded file (its posterior ``z`` = mean and ``std``, ``(D, F)``)."""
    if encoded.std is None:
        raise BitstreamError("compress needs a Gaussian (vae) run, this one has no posterior std; an rvq run's "
                             "codes are written by `targetkl encode`")
    if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
        raise BitstreamError(f"the input's level needs a gain of {gain:g} to reach the model's loudness, outside "
                             f"{GAIN_RANGE[0]:g}-{GAIN_RANGE[1]:g}; is it float audio far above full scale?")
    mean, std = encoded.z.double(), encoded.std.double()
    steps = rate_matched_steps(mean, std, gaussian_kl_per_value(mean, std))
    symbols = torch.round(mean / torch.from_numpy(steps.astype(np.float64))[:, None]).to(torch.int64)
    max_symbol = max(1, int(symbols.abs().max()))
    if max_symbol >= 2 ** 16:
        raise BitstreamError("latent values too large for the .tkl symbol range; is this a trained vae run?")
    frames = symbols.shape[-1]
    encoder = constriction.stream.queue.RangeEncoder()
    flat = symbols.numpy().astype(np.int32).reshape(-1)
    encoder.encode(flat, _prior_model(max_symbol), np.zeros(flat.size), _symbol_scales(steps, frames))
    payload = encoder.get_compressed().astype(np.uint32)
    header = TklHeader(model.sample_rate, model.hop, float(model.frame_rate), num_samples, gain, model.latent_dim,
                       frames, max_symbol, _fingerprint_bytes(model), int(payload.size))
    details = {"symbols": symbols.to(torch.int32), "z": _dequantize(symbols, steps),
               "mean": mean.float(), "gain": gain, "kl_bits_per_frame": float(encoded.bits_per_frame.mean())}
    return pack(header, steps, payload), details


def read_symbols(model: Codec, data: bytes, source: str = "<bytes>") -> tuple[TklHeader, torch.Tensor, torch.Tensor]:
    """Check ``data`` against ``model`` and entropy-decode it: ``(header, symbols (D, F) int32, z (D, F))``."""
    header, steps, payload = unpack(data, source)
    fingerprint = _fingerprint_bytes(model)
    if header.fingerprint != fingerprint:
        raise BitstreamError(f"{source}: compressed by another model (fingerprint {header.fingerprint.hex()}, this run "
                             f"is {fingerprint.hex()}); decompress it with the run that compressed it")
    if (header.sample_rate, header.hop, header.latent_dim) != (model.sample_rate, model.hop, model.latent_dim):
        raise BitstreamError(f"{source}: header does not fit this model; decompress it with the run that compressed it")
    symbols = _decode_symbols(payload, steps, header, source)
    return header, symbols, _dequantize(symbols, steps)


def _decode_symbols(payload: np.ndarray, steps: np.ndarray, header: TklHeader, source: str) -> torch.Tensor:
    """Range-decode ``(D, F)`` int32 symbols, a block of channels at a time (the coder's float64 inputs stay
    within ``BLOCK_VALUES``). A payload that runs out decodes to bounded symbols (``|q| <= max_symbol``);
    any failure of the coder, a Rust panic included, is a ``BitstreamError``."""
    symbols = np.empty((header.latent_dim, header.frames), dtype=np.int32)
    block = max(1, BLOCK_VALUES // max(header.frames, 1))
    try:
        decoder = constriction.stream.queue.RangeDecoder(payload)
        prior = _prior_model(header.max_symbol)
        for first in range(0, header.latent_dim, block):
            part = steps[first:first + block]
            flat = decoder.decode(prior, np.zeros(part.size * header.frames), _symbol_scales(part, header.frames))
            symbols[first:first + part.size] = np.asarray(flat, dtype=np.int32).reshape(part.size, header.frames)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as error:  # constriction's PanicException derives from BaseException
        raise BitstreamError(f"{source}: the payload does not decode ({type(error).__name__}); compress the audio "
                             "again") from error
    return torch.from_numpy(symbols)


def _finite(audio: np.ndarray, source: str) -> np.ndarray:
    if not np.all(np.isfinite(audio)):
        raise BitstreamError(f"{source}: the latent decodes to non-finite audio; the file is damaged, compress the "
                             "audio again")
    return audio


@torch.no_grad()
def decompress(model: Codec, data: bytes, source: str = "<bytes>",
               runner: CodecRunner | None = None) -> tuple[np.ndarray, TklHeader]:
    """``.tkl`` bytes -> ``(audio (samples,) float32, header)``."""
    header, _, z = read_symbols(model, data, source)
    return _finite(decode_latent(model, z, header.num_samples, header.gain, runner), source), header


@dataclass
class CompressedFile:
    """What :func:`compress_file` wrote. ``report``: ``input``, ``output``, ``seconds``, ``frames``, the rates
    ``kl_kbps`` (the file's KL), ``payload_kbps`` (entropy-coded symbols only) and ``file_kbps`` (header and
    checksum included), ``payload_bytes``, ``file_bytes``. ``latent``: ``(D, F)`` as decompression decodes it;
    ``posterior_mean``: ``(D, F)`` before quantization; ``gain``: the loudness gain in the header."""

    report: dict
    latent: torch.Tensor
    posterior_mean: torch.Tensor
    gain: float


@torch.no_grad()
def compress_file(model: Codec, audio_path: str | Path, out_path: str | Path, loudness_dbfs: float,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> CompressedFile:
    """Compress one audio file, read from disk in chunks, and check that the written file decodes to the same
    symbols. Distortion is measured elsewhere (:mod:`targetkl.eval.compressed`)."""
    out_path = output_path(out_path)
    entry = file_entry(audio_path)
    sample_rate = model.sample_rate
    length = entry.length_at(sample_rate)
    gain = gain_for_level(entry.rms, entry.peak, loudness_dbfs)
    runner = CodecRunner(model, batch_size=batch_size)
    encoded = runner.encode_reader([length], lambda _, start, stop: read_window(
        entry, start, stop - start, sample_rate, gain, model.audio_channels))[0]
    data, details = compress_encoded(model, encoded, length, gain)
    write_bytes_atomic(out_path, data)
    header, symbols, z = read_symbols(model, data, out_path.name)
    if not torch.equal(symbols, details["symbols"]):
        raise BitstreamError(f"{out_path}: symbols did not survive the round trip; please report this as a bug")
    seconds = length / sample_rate
    payload_bits = 32 * header.payload_words
    report = {"input": str(audio_path), "output": str(out_path), "seconds": seconds, "frames": header.frames,
              "kl_kbps": rate.bits_per_frame_to_kbps(details["kl_bits_per_frame"], model.frame_rate),
              "payload_kbps": rate.payload_kbps(payload_bits / 8, seconds),
              "file_kbps": rate.payload_kbps(len(data), seconds),
              "payload_bytes": payload_bits // 8, "file_bytes": len(data)}
    return CompressedFile(report, z, details["mean"], gain)


def decompress_file(model: Codec, tkl_path: str | Path, out_path: str | Path,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Decode a ``.tkl`` file into a 16-bit wav, written chunk by chunk as it is decoded."""
    tkl_path = Path(tkl_path)
    try:
        data = tkl_path.read_bytes()
    except OSError as error:
        raise BitstreamError(f"{tkl_path}: cannot read ({error.strerror})") from error
    header, _, z = read_symbols(model, data, str(tkl_path))
    runner = CodecRunner(model, batch_size=batch_size)
    pieces = ((first, _finite(audio, str(tkl_path)) / header.gain) for _, first, audio in runner.decode_pieces([z]))
    samples = write_audio_stream(out_path, model.sample_rate, pieces, header.num_samples, model.audio_channels)
    return {"samples": samples, "sample_rate": header.sample_rate, "frames": header.frames}
