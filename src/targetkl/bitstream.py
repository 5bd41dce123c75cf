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
corrects it. Uniform quantization with that step adds latent noise of variance ``step^2 / 12 = 1.42 sigma^2``, a little more than the ``sigma^2``
the decoder saw in training; the report gives the resulting distortion against the plain decode of the
mean. Channels the model does not use (``sigma ~ 1``) get a step near 4, almost all their symbols are 0,
and they cost almost nothing, as their KL does.

File layout (little endian): the fixed header ``HEADER`` (magic ``TKL1``, format version, sample rate,
hop, frame rate, length in samples, the loudness gain applied before encoding (the model was
trained on audio at ``data.loudness_dbfs``; decompression divides it out), latent channels, frames,
largest symbol magnitude, 8-byte model fingerprint, payload length in 32-bit words), ``latent_dim`` float16 steps, the payload words, and a
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
import soundfile as sf
import torch

from targetkl import rate
from targetkl.data import load_audio
from targetkl.data.audio import loudness_gain
from targetkl.eval.metrics import clip_metrics
from targetkl.bottlenecks.gaussian import gaussian_kl_per_value
from targetkl.models.codec import Codec, model_fingerprint
from targetkl.train.checkpoint import write_bytes_atomic

MAGIC = b"TKL1"
VERSION = 1
HEADER = struct.Struct("<4sHIHfIfHIH8sI")
CHECKSUM = struct.Struct("<I")
STEP_FACTOR = math.sqrt(2 * math.pi * math.e)


class BitstreamError(ValueError):
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


def rate_matched_steps(mean: torch.Tensor, std: torch.Tensor, kl_nats: torch.Tensor, iterations: int = 40) -> np.ndarray:
    """Per-channel steps whose code length equals the channel's KL: ``(D, F)`` x3 -> ``(D,)`` float16.

    Starts from the high-resolution step ``sqrt(2 pi e) * sigma`` and scales it by a factor in
    ``[1/e, e]`` found by bisection (code length falls as the step grows). Where ``sigma`` is small the
    factor stays near 1; at low rates, where bins are as wide as the prior, it corrects the
    high-resolution approximation, which would otherwise overspend.
    """
    base = quantization_steps(std)
    budget = kl_nats.double().sum(dim=-1) / math.log(2)
    low = torch.full_like(base, -1.0)
    high = torch.full_like(base, 1.0)
    for _ in range(iterations):
        middle = (low + high) / 2
        too_long = code_length_bits(mean, base * torch.exp(middle)) > budget
        low = torch.where(too_long, middle, low)
        high = torch.where(too_long, high, middle)
    return (base * torch.exp(high)).numpy().astype(np.float16)


def _prior_model(max_symbol: int):
    return constriction.stream.model.QuantizedGaussian(-max_symbol, max_symbol)


def _symbol_scales(steps: np.ndarray, frames: int) -> np.ndarray:
    """Prior std in units of bins, one per symbol in channel-major order: ``(D * F,)``."""
    return np.repeat(1.0 / steps.astype(np.float64), frames)


def _dequantize(symbols: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
    """``(D, F)`` integer symbols times the per-channel steps -> latent ``(D, F)`` float32."""
    return (symbols.double() * torch.from_numpy(steps.astype(np.float64))[:, None]).float()


def _decode_latent(model: Codec, latent: torch.Tensor, num_samples: int, gain: float) -> np.ndarray:
    """``(D, F)`` latent -> ``(num_samples,)`` audio at the input's loudness (the encode gain divided out)."""
    model.eval()
    return model.decode(latent[None])[0, 0, :num_samples].float().numpy() / gain


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
    if not np.all(np.isfinite(steps)) or np.any(steps <= 0) or not header.gain > 0:
        raise BitstreamError(f"{source}: invalid quantization steps in the header; compress the audio again")
    return header, steps.astype(np.float16), payload.astype(np.uint32)


@torch.no_grad()
def compress(model: Codec, audio: np.ndarray, loudness_dbfs: float) -> tuple[bytes, dict]:
    """Mono ``(samples,)`` float audio at the model's rate -> ``(.tkl bytes, details)``.

    The audio is brought to ``loudness_dbfs`` RMS as in training; the gain goes into the header.
    ``details`` holds ``symbols`` ``(D, F)`` int32, the decoded latent ``z`` ``(D, F)`` float32, the
    posterior ``mean`` and the clip's KL in bits per frame ``kl_bits_per_frame``.
    """
    model.eval()
    gain = loudness_gain(audio, loudness_dbfs)
    tensor = model.pad(torch.as_tensor(audio * gain, dtype=torch.float32)[None, None])
    encoded = model.encode(tensor)
    if encoded.std is None:
        raise BitstreamError("compress needs a Gaussian (vae) run, this one has no posterior std; an rvq run's "
                             "codes are written by `targetkl encode`")
    mean, std = encoded.mean[0].double(), encoded.std[0].double()
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
    header = TklHeader(model.sample_rate, model.hop, float(model.frame_rate), len(audio), gain, model.latent_dim, frames,
                       max_symbol, _fingerprint_bytes(model), int(payload.size))
    details = {"symbols": symbols.to(torch.int32), "z": _dequantize(symbols, steps),
               "mean": mean.float(), "gain": gain, "kl_bits_per_frame": float(encoded.bits_per_frame.double().mean())}
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
    decoder = constriction.stream.queue.RangeDecoder(payload)
    count = header.latent_dim * header.frames
    try:
        flat = decoder.decode(_prior_model(header.max_symbol), np.zeros(count), _symbol_scales(steps, header.frames))
    except (ValueError, RuntimeError, OverflowError) as error:
        raise BitstreamError(f"{source}: the payload does not decode ({error}); compress the audio again") from error
    symbols = torch.from_numpy(np.asarray(flat, dtype=np.int32).reshape(header.latent_dim, header.frames))
    return header, symbols, _dequantize(symbols, steps)


@torch.no_grad()
def decompress(model: Codec, data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, TklHeader]:
    """``.tkl`` bytes -> ``(audio (samples,) float32, header)``."""
    header, _, z = read_symbols(model, data, source)
    return _decode_latent(model, z, header.num_samples, header.gain), header


@torch.no_grad()
def compress_file(model: Codec, audio_path: str | Path, out_path: str | Path, loudness_dbfs: float) -> dict:
    """Compress one audio file; returns the report (rates in kbps, distortion of the decompressed audio).

    ``kl_kbps``: the clip's KL rate; ``payload_kbps``: entropy-coded symbols only; ``file_kbps``: the
    whole file, header and checksum included. Distortions compare the decompressed audio with the input
    and with the plain decode of the posterior mean.
    """
    audio = load_audio(audio_path, model.sample_rate)
    data, details = compress(model, audio, loudness_dbfs)
    out_path = Path(out_path)
    write_bytes_atomic(out_path, data)
    header, symbols, z = read_symbols(model, data, str(out_path))
    if not torch.equal(symbols, details["symbols"]):
        raise BitstreamError(f"{out_path}: symbols did not survive the round trip; please report this as a bug")
    decompressed = _decode_latent(model, z, len(audio), details["gain"])
    mean_decoded = _decode_latent(model, details["mean"], len(audio), details["gain"])
    seconds = len(audio) / model.sample_rate
    payload_bits = 32 * header.payload_words
    vs_input = clip_metrics(audio, decompressed, model.sample_rate, perceptual=False)
    vs_mean = clip_metrics(mean_decoded, decompressed, model.sample_rate, perceptual=False)
    mean_vs_input = clip_metrics(audio, mean_decoded, model.sample_rate, perceptual=False)
    return {"input": str(audio_path), "output": str(out_path), "seconds": seconds, "frames": header.frames,
            "kl_kbps": rate.bits_per_frame_to_kbps(details["kl_bits_per_frame"], model.frame_rate),
            "payload_kbps": payload_bits / seconds / 1000, "file_kbps": 8 * len(data) / seconds / 1000,
            "payload_bytes": payload_bits // 8, "file_bytes": len(data),
            "mel_distance": vs_input["mel_distance"], "mel_distance_mean_decode": mean_vs_input["mel_distance"],
            "mel_distance_vs_mean_decode": vs_mean["mel_distance"], "snr_vs_mean_decode_db": _snr_db(mean_decoded, decompressed)}


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return 10 * math.log10((signal + 1e-12) / (noise + 1e-12))


def decompress_file(model: Codec, tkl_path: str | Path, out_path: str | Path) -> dict:
    tkl_path = Path(tkl_path)
    try:
        data = tkl_path.read_bytes()
    except OSError as error:
        raise BitstreamError(f"{tkl_path}: cannot read ({error.strerror})") from error
    audio, header = decompress(model, data, str(tkl_path))
    sf.write(str(out_path), audio, model.sample_rate, subtype="PCM_16")
    return {"samples": header.num_samples, "sample_rate": header.sample_rate, "frames": header.frames}
