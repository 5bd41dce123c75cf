"""The rate-distortion sweep: one target-KL VAE per bitrate against RVQ, fixed-beta, latent-width and
classic-codec baselines, all measured on the same held-out clips.

Layout of a sweep folder::

    SWEEP/runs/<system>-<label>/      a training run (reused when finished, resumed when interrupted)
    SWEEP/runs/<system>-<label>/sweep_eval.json   its evaluation (reused when the run has not changed)
    SWEEP/runs/vae-<label>/sweep_tkl.json         the same VAE as .tkl files (system ``tkl``)
    SWEEP/classic/<codec>-<setting>.json          a classic codec's evaluation
    SWEEP/audio/<system>-<label>/clipN.wav        decoded examples; SWEEP/audio/original/clipN.wav
    SWEEP/rd.csv, rd.json, rd.png, report.html    written by ``targetkl.eval.report``
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from targetkl import rate
from targetkl.errors import UserError
from targetkl.bitstream import compress, decompress
from targetkl.config import Config, resolve
from targetkl.data import AudioClip, load_folder
from targetkl.data.audio import write_example_clips
from targetkl.eval.asr import recognizer_for
from targetkl.eval.classic import CLASSIC_CODECS, run_classic
from targetkl.eval.geometry import GEOMETRY_CLIPS, latent_geometry
from targetkl.eval.measure import ClipTally, measure_rate_and_distortion
from targetkl.eval.report import ROW_KEYS, TARGET_KL_SYSTEM, write_report
from targetkl.inference import DEFAULT_BATCH_SIZE, CodecRunner, choose_device
from targetkl.runs import load_run
from targetkl.fileio import read_json_or_none, without_nan, write_text_atomic
from targetkl.checkpoints import checkpoint_step, latest_checkpoint
from targetkl.train.trainer import Trainer

log = logging.getLogger("targetkl.sweep")

DEFAULT_BETAS = (1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_AE_WIDTHS = (2, 4, 8)
RVQ_MAX_CODEBOOK_BITS = 10
# The preset that gives a preset's codec in another architecture at the same rate and frame rate.
ARCHITECTURE_PRESETS = {("tiny", "oobleck"): "oobleck-tiny", ("oobleck-tiny", "dac"): "tiny",
                        ("dac-44k", "oobleck"): "oobleck-44k", ("oobleck-44k", "dac"): "dac-44k"}
ARCHITECTURE_KEYS = ("architecture", "encoder_dim", "decoder_dim", "strides", "latent_dim")  # and its own section


def architecture_flags(preset_name: str, architecture: str) -> dict[str, object]:
    """Config overrides that turn ``preset_name``'s codec into ``architecture`` (``{}`` if it is one already)."""
    from targetkl.config import preset

    base = preset(preset_name)
    if base.model.architecture == architecture:
        return {}
    partner = ARCHITECTURE_PRESETS.get((preset_name, architecture))
    if partner is None:
        raise SweepError(f"--architectures {architecture}: no {architecture} counterpart of preset {preset_name} "
                         f"(known: {', '.join(f'{a} -> {b}' for (a, _), b in ARCHITECTURE_PRESETS.items())})")
    import dataclasses

    model = preset(partner).model
    flags = {f"model.{key}": getattr(model, key) for key in ARCHITECTURE_KEYS}
    settings = model.entries.get(architecture)
    if settings is not None:
        flags.update({f"model.{architecture}.{f.name}": getattr(settings, f.name)
                      for f in dataclasses.fields(settings)})
    return flags


class SweepError(UserError, ValueError):
    """A sweep request that cannot work; the message says which value and what to do."""


@dataclass
class SweepPoint:
    """One system at one operating point.

    ``flags`` are the config overrides of a trained point (``section.key -> value``); ``setting`` is a
    classic codec's setting. ``target_kbps`` is the rate asked for (``None`` for a fixed beta or a
    plain autoencoder, whose rate nobody chose). ``bitstream``: also measured as ``.tkl`` files (the
    target-KL VAEs); ``rated``: has an honest bitrate (not a plain autoencoder's float latent).
    """

    system: str
    label: str
    target_kbps: float | None
    flags: dict[str, object] = field(default_factory=dict)
    setting: str | None = None
    bitstream: bool = False
    rated: bool = True
    row: dict[str, object] = field(default_factory=dict)  # extra columns of its result row

    @property
    def name(self) -> str:
        return f"{self.system}-{self.label}"


def rvq_layout(kbps: float, frame_rate: float) -> tuple[int, int]:
    """``(n_codebooks, codebook_size)`` whose rate ``n * log2(K) * frame_rate`` is exactly ``kbps``.

    Prefers the largest codebook of at most ``2**10`` entries that divides the bits per frame evenly.
    """
    bits = rate.kbps_to_bits_per_frame(kbps, frame_rate)
    for codebook_bits in range(RVQ_MAX_CODEBOOK_BITS, 0, -1):
        codebooks = bits / codebook_bits
        if abs(codebooks - round(codebooks)) < 1e-9 and round(codebooks) >= 1:
            return int(round(codebooks)), 2 ** codebook_bits
    raise SweepError(f"{kbps:g} kbps is {bits:g} bits per {frame_rate:g} Hz frame, which no whole number of "
                     f"codebooks of 2..{2 ** RVQ_MAX_CODEBOOK_BITS} entries spends; choose a rate that is a whole "
                     "number of bits per frame for the RVQ baseline")


def plan_sweep(kbps: list[float], baselines: list[str], frame_rate: float, betas: tuple[float, ...] = DEFAULT_BETAS,
               ae_widths: tuple[int, ...] = DEFAULT_AE_WIDTHS,
               architectures: dict[str, dict[str, object]] | None = None) -> list[SweepPoint]:
    """Every point of a sweep, in the order they are run: target-KL VAEs first, then the baselines.

    ``architectures`` maps further codec architectures to their config overrides (``architecture_flags``):
    each adds a target-KL line, system ``vae-<architecture>``, at the same bitrates."""
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise SweepError(f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if not kbps or any(not (k > 0 and math.isfinite(k)) for k in kbps):
        raise SweepError(f"--kbps must list positive bitrates, got {kbps}")
    points = [SweepPoint(TARGET_KL_SYSTEM, f"{k:g}kbps", k, {"model.bottleneck": "vae", "rate.target_kbps": k},
                         bitstream=True) for k in kbps]
    for name, flags in (architectures or {}).items():
        points += [SweepPoint(f"{TARGET_KL_SYSTEM}-{name}", f"{k:g}kbps", k,
                              {**flags, "model.bottleneck": "vae", "rate.target_kbps": k}) for k in kbps]
    for baseline in baselines:
        if baseline in TRAINED_BASELINES:
            points += TRAINED_BASELINES[baseline](kbps, frame_rate, betas, ae_widths)
        else:
            codec = CLASSIC_CODECS[baseline]
            points += [SweepPoint(baseline, setting, codec.nominal_kbps(setting), setting=setting)
                       for setting in codec.settings]
    return points


def _rvq_points(kbps, frame_rate, betas, ae_widths) -> list[SweepPoint]:
    """The RVQ bottleneck in the same codec, with as many codebook bits per frame as each bitrate spends."""
    points = []
    for k in kbps:
        codebooks, size = rvq_layout(k, frame_rate)
        points.append(SweepPoint("rvq", f"{k:g}kbps", k, {
            "model.bottleneck": "rvq", "model.rvq.codebooks": codebooks, "model.rvq.codebook_size": size}))
    return points


def _beta_points(kbps, frame_rate, betas, ae_widths) -> list[SweepPoint]:
    """The Gaussian bottleneck with a hand-tuned KL weight: the rate lands wherever it lands."""
    return [SweepPoint("beta", f"{b:g}", None, {"model.bottleneck": "vae", "rate.controller": "fixed",
                                                 "rate.fixed.beta": b}, row={"beta": b}) for b in betas]


def _ae_points(kbps, frame_rate, betas, ae_widths) -> list[SweepPoint]:
    """Plain autoencoders: no honest bitrate, so they are listed by latent width."""
    return [SweepPoint("ae", f"width{w}", None, {"model.bottleneck": "ae", "model.latent_dim": w}, rated=False)
            for w in ae_widths]


# The trained baselines: ``--baselines`` name -> its points (the sweep's one map from names to config entries).
TRAINED_BASELINES = {"rvq": _rvq_points, "beta": _beta_points, "ae": _ae_points}
BASELINES = (*TRAINED_BASELINES, *CLASSIC_CODECS)


def check_tools(baselines: list[str]) -> None:
    """Fail before any training when a classic codec's tool is missing."""
    for baseline in baselines:
        if baseline in CLASSIC_CODECS:
            CLASSIC_CODECS[baseline].check_tools()


class Sweep:
    """Runs a planned sweep in ``out``; every finished point is kept, so running again continues."""

    def __init__(self, data: str | Path, out: str | Path, preset: str = "tiny", config_files: list[str] | None = None,
                 assignments: list[str] | None = None, perceptual: bool = True, example_clips: int = 3,
                 progress: bool = True, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.data, self.out = Path(data), Path(out).resolve()  # rd.json names the same files from any working folder
        self.preset, self.files, self.assignments = preset, list(config_files or []), list(assignments or [])
        self.perceptual, self.progress = perceptual, progress
        self.device_name, self.device, self.batch_size = device, choose_device(device), batch_size
        self.base = resolve(preset, self.files, self.assignments)
        held_out = load_folder(self.data, self.base.model.sample_rate, "held_out", self.base.data.valid_percent,
                               self.base.data.loudness_dbfs, progress=False, channels=self.base.model.audio_channels)
        self.held_out: list[AudioClip] = held_out.clips
        self.domains = [entry.domain for entry in held_out.entries]  # each held-out clip's, in order
        self.example_clips = self.held_out[:example_clips]
        self.recognizer = recognizer_for(self.data)  # speech sources: wer and cer of every system
        self.trained: list[str] = []

    def config_for(self, point: SweepPoint) -> Config:
        flags = {**point.flags, "train.device": self.device_name}
        return resolve(self.preset, self.files, self.assignments, flags=flags)

    def originals(self) -> list[str]:
        return write_example_clips(self.out / "audio" / "original", [c.audio for c in self.example_clips],
                               self.base.model.sample_rate)

    def run_point(self, point: SweepPoint) -> list[dict]:
        """The point's rows: one, plus a ``tkl`` row for a target-KL VAE (its ``.tkl`` files)."""
        if point.setting is not None:
            return [self._classic(point)]
        row = self._trained(point)
        if not point.bitstream:
            return [row]
        return [row, self._tkl(point, self.out / "runs" / point.name)]

    def _tkl(self, point: SweepPoint, run: Path) -> dict:
        """Compress every held-out clip into a ``.tkl`` bitstream and measure the decompressed audio."""
        cache = run / "sweep_tkl.json"
        step = self._finished_step(run)
        cached = read_json_or_none(cache)
        if (_usable(cached) and cached.get("step") == step and cached.get("perceptual") == self.perceptual
                and cached.get("speech") == (self.recognizer is not None)):
            return self._placed(cached, f"tkl-{point.label}", run)
        loaded = load_run(run, self.device)
        sample_rate = loaded.config.model.sample_rate
        runner = CodecRunner(loaded.model, batch_size=self.batch_size)
        payload_bits, file_bytes, decoded = [], 0, []
        for clip in self.held_out:
            data, _ = compress(loaded.model, clip.audio, loaded.config.data.loudness_dbfs, runner)
            audio, header = decompress(loaded.model, data, runner=runner)
            payload_bits.append(32 * header.payload_words)
            file_bytes += len(data)
            decoded.append(audio)
        seconds = sum(audio.shape[-1] for audio in decoded) / sample_rate
        row = {"system": "tkl", "label": point.label, "target_kbps": point.target_kbps,
               "file_kbps": rate.payload_kbps(file_bytes, seconds), "run": str(run), "step": step,
               "perceptual": self.perceptual, "speech": self.recognizer is not None,
               "audio": self._examples(f"tkl-{point.label}", decoded, sample_rate),
               **self._distortion(decoded, sample_rate, payload_bits)}
        return _save_row(cache, self._placed(row, f"tkl-{point.label}", run))

    def _placed(self, row: dict, audio_name: str, run: Path | None = None, controlled: bool = True) -> dict:
        """``row`` with its paths in this sweep folder as it is now (absolute: ``rd.json`` names the same files from
        any working folder, also for a cached row written before the folder moved), its rate error and whether
        that is off target (``rate.off_target``; never for a classic codec, whose nominal rate is its own setting,
        not a target the toolkit controls: ``controlled`` False)."""
        row["audio"] = [str(self.out / "audio" / audio_name / Path(p).name) for p in row.get("audio") or []]
        if run is not None:
            row["run"] = str(run)
        row["rate_error_percent"] = rate.rate_error_percent(row.get("rate_kbps"), row.get("target_kbps"))
        row["controlled"] = controlled
        row["off_target"] = controlled and rate.off_target(row.get("rate_kbps"), row.get("target_kbps"))
        return row

    def _distortion(self, decoded: list[np.ndarray], sample_rate: int,
                    bits: list[float] | None = None) -> dict[str, float]:
        """The row's metrics (``ROW_KEYS``: each registered metric aggregated as its entry says, with its 95%
        interval) over the held-out clips against their decoded versions; with each clip's payload ``bits``, also
        ``rate_kbps`` and its interval. Where the source gives clips a domain, the same per domain under
        ``by_domain``."""
        tally = ClipTally(sample_rate, self.perceptual, self.recognizer)
        for index, (clip, audio) in enumerate(zip(self.held_out, decoded)):
            tally.add(clip, audio, None if bits is None else bits[index], clip.audio.shape[-1] / sample_rate)
        summary = tally.summary(rate.bps_to_kbps)
        kept = (*ROW_KEYS, "rate_kbps", "rate_kbps_lo", "rate_kbps_hi")

        def row_part(measured: dict) -> dict:
            return {key: measured[key] for key in kept if key in measured}

        result = row_part(summary)
        if "by_domain" in summary:
            result["by_domain"] = {domain: {"clips": measured["clips"], **row_part(measured)}
                                   for domain, measured in summary["by_domain"].items()}
        return result

    def _examples(self, name: str, decoded: list[np.ndarray], sample_rate: int) -> list[str]:
        """Write the decoded versions of the example clips (the first held-out ones) under ``audio/name``."""
        return write_example_clips(self.out / "audio" / name, decoded[: len(self.example_clips)], sample_rate)

    def _trained(self, point: SweepPoint) -> dict:
        config = self.config_for(point)
        run = self.out / "runs" / point.name
        cache = run / "sweep_eval.json"
        finished = self._finished_step(run) == config.train.steps
        cached = read_json_or_none(cache) if finished else None
        if (_usable(cached) and cached.get("step") == config.train.steps
                and cached.get("perceptual") == self.perceptual
                and cached.get("speech") == (self.recognizer is not None)):
            if "smoothness_slope_lo" not in cached:  # a row measured before the latent's geometry (with intervals)
                cached.update(self._geometry(load_run(run, self.device).model))
                _save_row(cache, cached)
            return self._placed(cached, point.name, run)
        if not finished:
            Trainer(config, self.data, run, progress=self.progress).run().finished()
            self.trained.append(point.name)
        loaded = load_run(run, self.device)
        result = measure_rate_and_distortion(loaded.model, self.held_out, perceptual=self.perceptual,
                                             batch_size=self.batch_size, recognizer=self.recognizer)
        decoded = CodecRunner(loaded.model, batch_size=self.batch_size).reconstruct(
            [clip.audio for clip in self.example_clips])[0]
        row = {"system": point.system, "label": point.label, "target_kbps": point.target_kbps,
               "rate_kbps": result["rate_kbps"], "step": loaded.step,
               "perceptual": self.perceptual, "speech": self.recognizer is not None,
               "audio": self._examples(point.name, decoded, config.model.sample_rate),
               **{k: result[k] for k in ("rate_kbps_lo", "rate_kbps_hi", "latent_use", "latent_use_lo",
                                         "latent_use_hi", *ROW_KEYS) if k in result}}
        if "by_domain" in result:
            row["by_domain"] = {domain: {k: values[k] for k in ("clips", "rate_kbps", "rate_kbps_lo", "rate_kbps_hi",
                                                                 *ROW_KEYS) if k in values}
                                for domain, values in result["by_domain"].items()}
        row.update(self._geometry(loaded.model))
        if not point.rated:
            row["rate_kbps"] = row["rate_kbps_lo"] = row["rate_kbps_hi"] = None
            row["latent_values_per_second"] = config.model.latent_dim * config.model.frame_rate
        row.update(point.row)
        return _save_row(cache, self._placed(row, point.name, run))

    def _geometry(self, model) -> dict:
        """The latent's geometry on the first held-out clips (:func:`targetkl.eval.geometry.latent_geometry`)."""
        clips = [self.held_out[i].audio for i in range(min(GEOMETRY_CLIPS, len(self.held_out)))]
        return latent_geometry(model, clips, batch_size=self.batch_size)

    @staticmethod
    def _finished_step(run: Path) -> int | None:
        folder = latest_checkpoint(run) if run.is_dir() else None
        return checkpoint_step(folder) if folder is not None else None

    def _classic(self, point: SweepPoint) -> dict:
        cache = self.out / "classic" / f"{point.name}.json"
        cached = read_json_or_none(cache)
        if (_usable(cached) and cached.get("perceptual") == self.perceptual
                and cached.get("speech") == (self.recognizer is not None)
                and cached.get("clips") == len(self.held_out)):
            return self._placed(cached, point.name, controlled=False)
        sample_rate = self.base.model.sample_rate
        audio = [clip.audio for clip in self.held_out]
        sizes: list[int] = []
        decoded, payload = run_classic(point.system, point.setting, audio, sample_rate, sizes=sizes)
        row = {"system": point.system, "label": point.label, "target_kbps": point.target_kbps,
               "payload_bytes": payload, "clips": len(audio), "perceptual": self.perceptual,
               "speech": self.recognizer is not None,
               "audio": self._examples(point.name, decoded, sample_rate),
               **self._distortion(decoded, sample_rate, [8 * size for size in sizes])}
        return _save_row(cache, self._placed(row, point.name, controlled=False))

    def run(self, points: list[SweepPoint]) -> list[dict]:
        rows = []
        for point in tqdm(points, desc="sweep", disable=not self.progress, dynamic_ncols=True):
            for row in self.run_point(point):
                if row["off_target"]:
                    log.warning("%s %s: %s", row["system"], row["label"],
                                rate.off_target_text(row["rate_kbps"], row["target_kbps"]))
                rows.append(row)
        return rows


def _usable(cached: dict | None) -> bool:
    """A cached row that holds what a row needs (a damaged or foreign cache file is computed again)."""
    return cached is not None and isinstance(cached.get("system"), str) and isinstance(cached.get("label"), str) \
        and "rate_kbps" in cached and isinstance(cached.get("audio", []), list) \
        and all(isinstance(cached.get(key), (int, float, type(None))) for key in ("rate_kbps", "mel_distance"))


def _save_row(cache: Path, row: dict) -> dict:
    """Write a point's row (NaN as null) atomically to its cache file; return the row."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cache, json.dumps(_clean(row), indent=2) + "\n")
    return row


def _clean(row: dict) -> dict:
    return without_nan(row)


def run_sweep(data: str | Path, out: str | Path, kbps: list[float], baselines: list[str], preset: str = "tiny",
              config_files: list[str] | None = None, assignments: list[str] | None = None,
              betas: tuple[float, ...] = DEFAULT_BETAS,
              ae_widths: tuple[int, ...] = DEFAULT_AE_WIDTHS, perceptual: bool = True,
              progress: bool = True, device: str | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, architectures: list[str] | None = None) -> tuple[list[dict], Sweep]:
    """Plan, run (or continue) and report a sweep; returns the rows and the sweep (``sweep.trained`` names
    the points trained by this call)."""
    check_tools(baselines)
    channels = resolve(preset, config_files, assignments).model.audio_channels
    classic = [name for name in baselines if name in CLASSIC_CODECS]
    if channels > 1 and classic:
        raise SweepError(f"--baselines {','.join(classic)}: the classic codecs are run on mono audio, and this sweep's "
                         f"codecs have {channels} channels; leave them out (or sweep a mono preset)")
    sweep = Sweep(data, out, preset, config_files, assignments, perceptual, progress=progress, device=device,
                  batch_size=batch_size)
    extra = {name: architecture_flags(preset, name) for name in architectures or []
             if name != sweep.base.model.architecture}
    points = plan_sweep(kbps, baselines, sweep.base.model.frame_rate, betas, ae_widths, extra)
    for point in points:  # a target the codec cannot carry fails now, not after the points before it have trained
        if point.setting is None:
            sweep.config_for(point)
    rows = sweep.run(points)
    write_report(Path(out), [_clean(r) for r in rows], sweep.originals(), preset=preset, data=str(data))
    return rows, sweep
