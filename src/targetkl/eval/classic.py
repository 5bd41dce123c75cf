"""Classic codecs as rate-distortion baselines: Opus (opus-tools), MP3 (lame) and Codec 2, run through
the real command-line tools on the same held-out clips as the learned codecs.

The rate of a classic codec is measured from its payload bytes, not its nominal setting: Opus packets
without the Ogg framing and the two header packets, the whole MP3 stream (written without tags), and
the raw Codec 2 bit file. Each decoded clip is resampled to the input rate and aligned to the input
(MP3 and Codec 2 add delay) before any metric is computed.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from targetkl.errors import UserError


class CodecToolError(UserError, RuntimeError):
    """A classic codec's command-line tool is missing or failed; the message names the package."""


@dataclass(frozen=True)
class ClassicCodec:
    """One codec: its tools, the Debian package that ships them, and the settings a sweep tries.

    ``settings`` are nominal bitrates in kbps (Codec 2: its mode names, e.g. ``"1300"`` or ``"700C"``).
    """

    name: str
    tools: tuple[str, ...]
    package: str
    settings: tuple[str, ...]
    coded_rate: int | None

    def check_tools(self) -> None:
        missing = [tool for tool in self.tools if shutil.which(tool) is None]
        if missing:
            raise CodecToolError(f"the {self.name} baseline needs {', '.join(missing)} from the Debian package "
                                 f"{self.package}: apt-get install {self.package}")

    def nominal_kbps(self, setting: str) -> float:
        """The setting's nominal rate in kbps (Codec 2 mode ``"700C"`` is 700 bit/s)."""
        if self.name == "codec2":
            return float(setting.rstrip("C")) / 1000
        return float(setting)


CLASSIC_CODECS: dict[str, ClassicCodec] = {
    "opus": ClassicCodec("opus", ("opusenc", "opusdec"), "opus-tools", ("6", "8", "12", "16", "24"), None),
    "mp3": ClassicCodec("mp3", ("lame",), "lame", ("8", "16", "24", "32"), None),
    "codec2": ClassicCodec("codec2", ("c2enc", "c2dec"), "codec2", ("700C", "1300", "2400", "3200"), 8000),
}


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of the packets of a single-stream Ogg file, in order (pages parsed by hand)."""
    sizes, current, offset = [], 0, 0
    while offset < len(data):
        if data[offset:offset + 4] != b"OggS":
            raise CodecToolError("opusenc wrote a file that is not a valid Ogg stream")
        segments = data[offset + 26]
        lacing = data[offset + 27: offset + 27 + segments]
        for value in lacing:
            current += value
            if value < 255:
                sizes.append(current)
                current = 0
        offset += 27 + segments + sum(lacing)
    return sizes


def opus_payload_bytes(path: Path) -> int:
    """Bytes of the Opus audio packets: the Ogg framing and the OpusHead/OpusTags packets left out."""
    return sum(ogg_packet_sizes(path.read_bytes())[2:])


def _run(command: list[str], codec: ClassicCodec) -> None:
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        raise CodecToolError(f"{command[0]} (package {codec.package}) failed with exit status {result.returncode}: "
                             f"{result.stderr.decode(errors='replace').strip()[-300:]}")


def encode_decode(codec: ClassicCodec, setting: str, wav: Path, work: Path) -> tuple[Path, int]:
    """Run one encode/decode round trip on a 16-bit WAV; returns ``(decoded file, payload bytes)``."""
    if codec.name == "opus":
        coded, decoded = work / "coded.opus", work / "decoded.wav"
        _run(["opusenc", "--quiet", "--bitrate", setting, str(wav), str(coded)], codec)
        _run(["opusdec", "--quiet", "--rate", "48000", str(coded), str(decoded)], codec)
        return decoded, opus_payload_bytes(coded)
    if codec.name == "mp3":
        rate_khz = f"{sf.info(str(wav)).samplerate / 1000:g}"
        coded, decoded = work / "coded.mp3", work / "decoded.wav"
        _run(["lame", "--quiet", "-t", "--cbr", "-b", setting, "--resample", rate_khz, str(wav), str(coded)], codec)
        _run(["lame", "--quiet", "--decode", str(coded), str(decoded)], codec)
        return decoded, coded.stat().st_size
    coded, decoded_raw = work / "coded.bit", work / "decoded.raw"
    raw = work / "input.raw"
    audio, _ = sf.read(str(wav), dtype="int16")
    raw.write_bytes(audio.tobytes())
    _run(["c2enc", setting, str(raw), str(coded)], codec)
    _run(["c2dec", setting, str(coded), str(decoded_raw)], codec)
    decoded = work / "decoded.wav"
    pcm = np.frombuffer(decoded_raw.read_bytes(), dtype="<i2")
    sf.write(str(decoded), pcm, 8000, subtype="PCM_16")
    return decoded, coded.stat().st_size


def best_lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> int:
    """The delay in samples (``0..max_lag``) of ``decoded`` relative to ``reference``: the lag of the
    largest cross-correlation, found with an FFT."""
    n = len(reference) + len(decoded)
    size = 1 << (n - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(reference, size)), size)
    return int(np.argmax(correlation[: max_lag + 1]))


def shift(decoded: np.ndarray, lag: int, length: int) -> np.ndarray:
    """Drop the first ``lag`` samples and cut or zero-pad to ``length``."""
    out = np.zeros(length, dtype=np.float64)
    piece = decoded[lag: lag + length]
    out[: len(piece)] = piece
    return out


def _to_rate(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float64)
    return soxr.resample(np.asarray(audio, dtype=np.float64), rate_in, rate_out)


def run_classic(codec_name: str, setting: str, clips: list[np.ndarray], sample_rate: int,
                max_delay_seconds: float = 0.1, sizes: list[int] | None = None) -> tuple[list[np.ndarray], int]:
    """Code each clip (``(samples,)`` floats at ``sample_rate``) with one codec setting.

    Returns the decoded clips, resampled to ``sample_rate`` and aligned with one delay for the setting
    (the median of the per-clip cross-correlation lags, so one noisy clip cannot misalign it), and the
    total payload bytes over all clips; each clip's payload bytes are appended to ``sizes`` when given.
    """
    codec = CLASSIC_CODECS[codec_name]
    codec.check_tools()
    decoded_clips, payload = [], 0
    with tempfile.TemporaryDirectory(prefix=f"targetkl-{codec_name}-") as tmp:
        work = Path(tmp)
        for audio in clips:
            coded_rate = codec.coded_rate or sample_rate
            wav = work / "input.wav"
            sf.write(str(wav), np.clip(_to_rate(audio, sample_rate, coded_rate), -1, 1), coded_rate, subtype="PCM_16")
            decoded_path, size = encode_decode(codec, setting, wav, work)
            decoded, rate_out = sf.read(str(decoded_path), dtype="float64")
            decoded_clips.append(_to_rate(decoded, rate_out, sample_rate))
            payload += size
            if sizes is not None:
                sizes.append(size)
    max_lag = int(max_delay_seconds * sample_rate)
    lags = [best_lag(np.asarray(a, dtype=np.float64), d, max_lag) for a, d in zip(clips, decoded_clips)]
    lag = int(statistics.median(lags))
    return [shift(d, lag, len(a)) for a, d in zip(clips, decoded_clips)], payload
