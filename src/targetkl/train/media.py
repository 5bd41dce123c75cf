"""What a run shows in TensorBoard besides scalars: held-out audio, spectrograms, latent histograms.

At step 0 and at every checkpoint, rank 0 writes for each of ``train.log_audio_clips`` fixed held-out
clips (the first ones of the held-out split, each cut to its first :data:`CLIP_SECONDS`):

- ``audio/clipN/input`` and ``audio/clipN/reconstruction``: 16-bit WAV (a stereo model's mix), each
  captioned with the clip's rate in kbps (from the KL, in eval mode, as ``eval`` measures it): the caption is
  the audio's label and description and, since TensorBoard's audio dashboard shows neither per step, also the
  text ``caption/clipN`` (Text dashboard);
- ``spectrogram/clipN``: the input's and the reconstruction's log-mel spectrograms side by side (input
  left), as an image with low frequencies at the bottom;
- ``latent/channel_mean``, ``latent/channel_std`` and ``latent/posterior_std``: histograms over latent
  channels of the posterior means' mean and std and of the mean posterior std (``latent_stats.json``).

A custom-scalars chart ``rate`` draws the measured rate against its target (training batches and the
held-out split). Nothing here draws from torch's random generator, so a run trains the same with or
without it, and a resumed run logs the same clips.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch

from targetkl import rate
from targetkl.inference import CodecRunner
from targetkl.losses import magnitude, mel_filterbank

CLIP_SECONDS = 10.0
MEL_BANDS = 80
DYNAMIC_RANGE_DB = 80.0

RATE_CHART = {"rate": {"measured rate and its target (kbps)": [
    "Multiline", [r"^rate/kbps$", r"^rate/target_kbps$", r"^held_out/rate_kbps$", r"^held_out/target_kbps$"]]}}


def media_clips(held_out, count: int) -> list[np.ndarray]:
    """The first ``count`` clips of ``held_out`` (an ``AudioSet``), each cut to :data:`CLIP_SECONDS`; a file that
    cannot be read any more is left out."""
    from targetkl.data import DataError

    limit = int(CLIP_SECONDS * held_out.sample_rate)
    audios = []
    for index in range(min(count, len(held_out))):
        try:
            audios.append(held_out.read(index, 0, min(held_out.length(index), limit)))
        except DataError:
            continue
    return audios


def log_mel_image(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(H, 2W + 2, 3)`` uint8: both clips' log-mel spectrograms (dB below the reference's peak, clipped at
    :data:`DYNAMIC_RANGE_DB`) through the magma colour map, a white gap between them."""
    from matplotlib import colormaps

    n_fft = 2 ** int(round(np.log2(sample_rate * 0.064)))
    filters = mel_filterbank(sample_rate, n_fft, MEL_BANDS)
    mels = []
    for audio in (reference, estimate):
        mono = torch.from_numpy(np.asarray(audio, dtype=np.float32).reshape(-1, audio.shape[-1]).mean(axis=0))
        mels.append((filters @ magnitude(mono[None], n_fft)[0]).clamp_min(1e-10).log10().mul(20).numpy())
    peak = mels[0].max()
    scaled = [np.clip((mel - peak + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB, 0, 1)[::-1] for mel in mels]
    gap = np.ones((MEL_BANDS, 2))
    colours = colormaps["magma"](np.concatenate([scaled[0], gap, scaled[1]], axis=1))[..., :3]
    colours[:, scaled[0].shape[1]:scaled[0].shape[1] + 2] = 1.0
    return (colours * 255).astype(np.uint8)


def _wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    mono = np.asarray(audio, dtype=np.float32).reshape(-1, audio.shape[-1]).mean(axis=0)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(mono, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_summary(tag: str, audio: np.ndarray, sample_rate: int, caption: str):
    """A TensorBoard audio summary (the audio plugin's tensor form: WAV bytes and a markdown caption)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.audio import metadata
    from tensorboard.util import tensor_util

    meta = metadata.create_summary_metadata(display_name=tag, description=caption,
                                            encoding=metadata.Encoding.Value("WAV"))
    tensor = tensor_util.make_tensor_proto(np.array([[_wav_bytes(audio, sample_rate), caption.encode()]],
                                                    dtype=object))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)])


@torch.no_grad()
def log_media(writer, model: torch.nn.Module, audios: list[np.ndarray], step: int,
              target_kbps: float | None, stats: dict | None) -> None:
    """Write this step's audio, spectrograms and latent histograms (see the module docstring) to ``writer``
    (a ``SummaryWriter``)."""
    sample_rate = model.sample_rate
    if audios:
        decoded, encoded = CodecRunner(model).reconstruct(audios)
        target = f" (target {target_kbps:.3f})" if target_kbps is not None else ""
        for index, (audio, decode, code) in enumerate(zip(audios, decoded, encoded)):
            kbps = rate.bits_per_frame_to_kbps(float(code.bits_per_frame.mean()), model.frame_rate)
            caption = f"clip {index}, step {step}: {kbps:.3f} kbps{target}"
            file_writer = writer._get_file_writer()
            file_writer.add_summary(audio_summary(f"audio/clip{index}/input", audio, sample_rate, caption), step)
            file_writer.add_summary(audio_summary(f"audio/clip{index}/reconstruction", decode, sample_rate,
                                                  caption), step)
            writer.add_text(f"caption/clip{index}", caption, step)
            writer.add_image(f"spectrogram/clip{index}", log_mel_image(audio, decode, sample_rate), step,
                             dataformats="HWC")
    for key in ("mean", "std", "posterior_std"):
        if stats and stats.get(key):
            writer.add_histogram(f"latent/{'channel_' + key if key != 'posterior_std' else key}",
                                 np.asarray(stats[key]), step)
    writer.flush()
