"""The toolkit from Python, without the CLI: ``targetkl.load(path)`` opens a run folder or an export.

    vae = targetkl.load("runs/vae-2kbps")            # or an export folder
    z = vae.encode(audio, sample_rate=44100)         # (batch, latent_dim, frames), posterior mean
    audio_out = vae.decode(z)                        # (batch, 1, frames * hop) at vae.sample_rate
    scaled = (z - vae.latent_mean[:, None]) / vae.latent_std[:, None]   # for a diffusion model
    mean, std = vae.posterior(audio, 44100)          # both (batch, latent_dim, frames)
    kbps = vae.rate(audio, 44100)                    # what the clip costs, as `targetkl eval` measures it
    data = vae.compress(audio, 44100)                # .tkl bytes; vae.decompress(data) -> (channels, samples)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import soxr
import torch

from targetkl import rate
from targetkl.config import Config, from_dict
from targetkl.data.audio import fit_channels, gain_for_level
from targetkl.errors import UserError
from targetkl.inference import CodecRunner
from targetkl.models.codec import Codec, build_codec

log = logging.getLogger("targetkl")


class LoadError(UserError, ValueError):
    """A path that is neither a run folder nor an export."""


class Autoencoder:
    """A trained codec with its units.

    ``sample_rate`` (Hz) and ``frame_rate`` (latent frames per second); ``rate_kbps``: the measured
    held-out rate (``None`` when none was measured); ``latent_stats``: ``{"mean", "std"}`` per channel
    over training clips (an export measures them on ``--stats-clips`` clips; a run folder holds those
    measured at its checkpoint, ``latent_stats.json``), also as ``latent_mean`` and ``latent_std`` tensors
    (``None`` without statistics); ``loudness_dbfs``: the RMS level the model was trained at.
    """

    def __init__(self, model: Codec, config: Config, rate_kbps: float | None = None,
                 latent_stats: dict | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.sample_rate, self.frame_rate, self.hop = model.sample_rate, model.frame_rate, model.hop
        self.audio_channels = model.audio_channels
        self.latent_dim = model.latent_dim
        self.rate_kbps = rate_kbps
        self.latent_stats = latent_stats
        self.loudness_dbfs = config.data.loudness_dbfs
        stats = latent_stats or {}
        self.latent_mean = torch.tensor(stats["mean"]) if "mean" in stats else None
        self.latent_std = torch.tensor(stats["std"]) if "std" in stats else None

    def to(self, device: str | torch.device) -> Autoencoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def _prepare(self, audio, sample_rate: int, normalize: bool) -> torch.Tensor:
        """Any of ``(samples,)``, ``(channels, samples)``, ``(batch, channels, samples)`` (NumPy or torch, any
        rate) -> ``(batch, audio_channels, samples')`` float32 at the model's rate, each clip at the model's level
        (the gain of its mix, as in training). Channels are fitted as training reads files: a mono model gets the
        mix, a stereo one a mono clip in both channels or a clip's first two channels."""
        array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        array = array.astype(np.float64)
        if array.ndim == 1:
            array = array[None, None]
        elif array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(f"audio of shape {array.shape}: pass (samples,), (channels, samples) or "
                             "(batch, channels, samples)")
        if array.shape[-1] == 0 or array.shape[0] == 0:
            raise ValueError(f"audio of shape {array.shape} holds no samples; pass at least one")
        if not np.isfinite(array).all():
            raise ValueError("audio holds NaN or Inf samples; clean it first")
        fitted = np.stack([fit_channels(clip.T, self.audio_channels).reshape(array.shape[-1], -1) for clip in array])
        if sample_rate != self.sample_rate:
            fitted = np.stack([soxr.resample(clip, sample_rate, self.sample_rate) for clip in fitted])
        fitted = fitted.reshape(len(array), -1, self.audio_channels).transpose(0, 2, 1)
        if normalize:
            mixes = fitted.mean(axis=1)
            gains = [gain_for_level(float(np.sqrt(np.mean(mix ** 2))), float(np.max(np.abs(mix))),
                                    self.loudness_dbfs) for mix in mixes]
            fitted = fitted * np.asarray(gains)[:, None, None]
        return torch.from_numpy(np.ascontiguousarray(fitted, dtype=np.float32))

    @torch.no_grad()
    def encode(self, audio, sample_rate: int, sample: bool = False, normalize: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Audio -> latents ``(batch, latent_dim, ceil(samples / hop))`` on ``self.device``: the posterior
        mean, or with ``sample=True`` a draw ``mean + std * noise``. ``normalize`` brings each clip to the
        training loudness first (as training did)."""
        x = self.model.pad(self._prepare(audio, sample_rate, normalize).to(self.device))
        encoded = self.model.encode(x)
        mean = encoded.mean if encoded.mean is not None else encoded.z
        if not sample or encoded.std is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(self.device)
        return mean + encoded.std * noise

    @torch.no_grad()
    def posterior(self, audio, sample_rate: int, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Audio -> ``(mean, std)``, each ``(batch, latent_dim, frames)`` on ``self.device``: the posterior
        q(z|x) = N(mean, std^2) per value. ``std`` is ``None`` for a deterministic bottleneck (rvq, ae)."""
        x = self.model.pad(self._prepare(audio, sample_rate, normalize).to(self.device))
        encoded = self.model.encode(x)
        return (encoded.mean if encoded.mean is not None else encoded.z), encoded.std

    def rate(self, audio, sample_rate: int, normalize: bool = True) -> float:
        """What the audio costs in kbps: ``frame_rate * mean bits per frame / 1000`` over every frame of every
        clip, from the KL (a VAE; the bottleneck's bits otherwise) in eval mode with the final rate trim
        applied, as ``targetkl eval`` measures held-out audio (one clip: the number eval gives that clip)."""
        prepared = self._prepare(audio, sample_rate, normalize).numpy()
        clips = [clip[0] if self.audio_channels == 1 else clip for clip in prepared]
        encoded = CodecRunner(self.model, self.device).encode(clips)
        bits = sum(float(item.bits_per_frame.sum()) for item in encoded)
        frames = sum(item.frames for item in encoded)
        return rate.bits_per_frame_to_kbps(bits / frames, self.frame_rate)

    def compress(self, audio, sample_rate: int) -> bytes:
        """One clip (``(samples,)`` or ``(channels, samples)``) -> the bytes of a ``.tkl`` file, as ``targetkl
        compress`` writes it (the loudness gain goes into the header). A Gaussian (vae) run only."""
        from targetkl.bitstream import compress

        prepared = self._prepare(audio, sample_rate, normalize=False)
        if len(prepared) != 1:
            raise ValueError(f"audio of {len(prepared)} clips: compress one clip at a time")
        clip = prepared[0].numpy()
        data, _ = compress(self.model, clip[0] if self.audio_channels == 1 else clip, self.loudness_dbfs,
                           CodecRunner(self.model, self.device))
        return data

    def decompress(self, data: bytes) -> torch.Tensor:
        """``.tkl`` bytes -> audio ``(audio_channels, samples)`` at ``sample_rate``, as ``targetkl decompress``
        decodes them (``BitstreamError`` for damaged bytes or bytes of another model)."""
        from targetkl.bitstream import decompress

        audio, _ = decompress(self.model, bytes(data), runner=CodecRunner(self.model, self.device))
        return torch.from_numpy(np.asarray(audio, dtype=np.float32).reshape(self.audio_channels, -1))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(batch, latent_dim, frames)`` -> audio ``(batch, audio_channels, frames * hop)`` at
        ``sample_rate``. ``ValueError`` for latents of another shape or holding NaN/Inf."""
        latents = torch.as_tensor(latents)
        if latents.ndim != 3 or latents.shape[1] != self.latent_dim or latents.shape[-1] == 0:
            raise ValueError(f"latents of shape {tuple(latents.shape)}: pass (batch, {self.latent_dim}, frames)")
        if not torch.isfinite(latents).all():
            raise ValueError("latents hold NaN or Inf; decode finite latents")
        return self.model.decode(latents.to(self.device, torch.float32))


def load(path: str | Path, device: str | torch.device = "cpu") -> Autoencoder:
    """Open a run folder (its newest checkpoint; EMA weights when kept) or a ``targetkl export`` folder.
    ``LoadError`` (one line naming the file) for anything else, damaged or foreign."""
    path = Path(path)
    info_file = path / "targetkl.json"
    if info_file.is_file():
        return _load_export(path, info_file, device)
    if (path / "config.json").is_file():
        from targetkl.export import measured_rate
        from targetkl.latent_stats import FILE_NAME, read_run_statistics
        from targetkl.runs import load_run

        loaded = load_run(path, "cpu")
        stats = read_run_statistics(path, loaded.step)
        if stats is not None:
            _check_stats(stats, loaded.model.latent_dim, path / FILE_NAME)
        else:
            log.warning("%s: no latent statistics for step %d (training writes them at each checkpoint); "
                        "latent_mean and latent_std are None: export the run with `targetkl export` to measure "
                        "them", path / FILE_NAME, loaded.step)
        return Autoencoder(loaded.model, loaded.config, measured_rate(path, loaded.step), stats, device)
    raise LoadError(f"{path}: neither a run folder (config.json and checkpoints/) nor an export (targetkl.json)")


def _load_export(path: Path, info_file: Path, device: str | torch.device) -> Autoencoder:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from targetkl.export import FORMATS

    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError) as error:
        raise LoadError(f"{info_file}: not readable JSON ({error}); export the run again") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict) or info.get("format") not in FORMATS:
        raise LoadError(f"{info_file}: not a targetkl export (it needs a 'config' object and a 'format' of "
                        f"{' or '.join(FORMATS)}); export the run again with `targetkl export`")
    config = from_dict(info["config"], where=str(info_file))
    model = build_codec(config)
    weights = path / ("diffusion_pytorch_model.safetensors" if info["format"] == "diffusers" else "model.safetensors")
    try:
        tensors = load_file(str(weights))
        if info["format"] == "stable-audio-tools":
            from targetkl.foreign.stable_audio import to_ours

            tensors = to_ours(tensors, len(config.model.strides))[0]
        if info["format"] in ("diffusers", "stable-audio-tools"):
            for part in ("encoder", "decoder"):
                getattr(model, part).load_state_dict(
                    {k[len(part) + 1:]: v for k, v in tensors.items() if k.startswith(part + ".")})
        else:
            model.load_state_dict(tensors)
    except (OSError, SafetensorError, RuntimeError, ValueError) as error:
        raise LoadError(f"{weights}: does not hold this export's weights ({str(error).splitlines()[0][:160]}); "
                        "export the run again") from None
    stats = info.get("latent_stats")
    if stats is not None:
        _check_stats(stats, model.latent_dim, info_file)
    return Autoencoder(model, config, info.get("rate_kbps"), stats, device)


def _check_stats(stats, latent_dim: int, info_file: Path) -> None:
    """``latent_stats`` must hold ``latent_dim`` finite means and positive finite stds."""
    try:
        mean = np.asarray(stats["mean"], dtype=np.float64)
        std = np.asarray(stats["std"], dtype=np.float64)
    except (TypeError, KeyError, ValueError):
        mean = std = np.empty(0)
    if mean.shape != (latent_dim,) or std.shape != (latent_dim,) or not np.isfinite(mean).all() \
            or not np.isfinite(std).all() or (std <= 0).any():
        raise LoadError(f"{info_file}: latent_stats needs {latent_dim} finite means and {latent_dim} positive finite "
                        "stds; export the run again")
