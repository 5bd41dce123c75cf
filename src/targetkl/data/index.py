"""The index of a corpus: one probe of every audio file, cached, so training never loads the corpus.

``--data`` names one of three sources, all indexed the same way:

- a folder of audio files (searched recursively), with optional ``captions.jsonl`` / captions CSV;
- a manifest file (``.jsonl`` lines ``{"path": ..., "caption": ...}`` or a ``.csv`` with a ``path``
  column and an optional ``caption`` column); relative paths are relative to the manifest's folder;
- WebDataset tar shards, a path or brace pattern (``shards/train-{000000..000199}.tar``): every audio
  member of a shard is one clip, its caption taken from the member of the same key ending in ``.json``
  (``caption`` or ``text``), ``.txt`` or ``.caption``. Members are read by their byte offset in the tar.

An entry records the file's native ``sample_rate``, ``channels`` and ``frames``, its ``duration`` (s),
its mono ``rms`` and ``peak`` (from which the loudness gain of any target level follows), ``caption``,
``label``, the size and modification time it was probed at, and, for a tar member, ``offset`` and
``size`` of its bytes. Files that cannot be used are listed under ``skipped`` with their reason.

The index is cached under ``$TARGETKL_CACHE`` (default ``~/.cache/targetkl/index``) in a file named by
a hash of the source; :func:`ensure_index` re-probes only files that are new or changed since (size
or modification time) and drops files that are gone. Probing runs in worker processes.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import math
import os
import stat
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from targetkl.errors import UserError
from targetkl.fileio import write_text_atomic

log = logging.getLogger("targetkl.data")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
INDEX_FORMAT, INDEX_VERSION = "targetkl-index", 1
PROBE_BLOCK = 1 << 20
SHORT_SECONDS = 0.05  # a file shorter than this is used, with a warning (it is mostly padding)
CAPTION_SUFFIXES = (".json", ".txt", ".caption")


class DataError(UserError, ValueError):
    """A data set that cannot be used; the message names the path and the fix."""


@dataclass
class IndexEntry:
    """One usable audio file (or tar member). ``path`` is what the source calls it (relative to a folder,
    as listed in a manifest, ``shard.tar#member`` in a shard); ``file`` is where its bytes are."""

    path: str
    file: str
    sample_rate: int
    channels: int
    frames: int
    rms: float
    peak: float
    size: int
    mtime_ns: int
    caption: str | None = None
    label: str | None = None
    domain: str | None = None  # music, speech, effects...: metrics are reported per domain where a source has them
    offset: int | None = None
    member_size: int | None = None
    warning: str | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def length_at(self, sample_rate: int) -> int:
        """Length in samples once resampled to ``sample_rate``."""
        if sample_rate == self.sample_rate:
            return self.frames
        return self.frames * sample_rate // self.sample_rate

    def to_json(self) -> dict:
        row = {k: v for k, v in self.__dict__.items() if v is not None}
        row["duration"] = round(self.duration, 6)
        return row

    @classmethod
    def from_json(cls, row: dict) -> "IndexEntry":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass
class CorpusIndex:
    """The usable entries of a source, in a stable order (sorted by ``path``), and the skipped files."""

    source: str
    kind: str
    entries: list[IndexEntry]
    skipped: dict[str, str] = field(default_factory=dict)
    cache_file: Path | None = None

    @property
    def hours(self) -> float:
        return sum(e.duration for e in self.entries) / 3600

    def summary(self) -> str:
        text = f"{len(self.entries)} files, {self.hours:.2f} h in {self.source}"
        return text + (f"; {len(self.skipped)} skipped" if self.skipped else "")


# --------------------------------------------------------------------------- sources
def source_kind(source: str) -> str:
    """``folder``, ``manifest`` or ``shards`` for a ``--data`` value; ``DataError`` if it is none of them."""
    if "://" in source or source.startswith("pipe:"):
        raise DataError(f"{source}: remote shards cannot be read by offset; mount the bucket (s3fs, gcsfuse) or copy "
                        "the shards to disk and pass their local path pattern")
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.suffix == ".tar" or "{" in source:
        return "shards"
    if path.is_file() and path.suffix.lower() in (".jsonl", ".csv"):
        return "manifest"
    if path.is_file():
        raise DataError(f"{source}: not a folder, a .jsonl/.csv manifest or .tar shards; pass one of those as --data")
    raise DataError(f"{source}: no such folder or file; pass a folder of audio (make one with `targetkl corpus`), a "
                    "manifest (.jsonl/.csv) or WebDataset shards")


def find_audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def read_captions(root: Path) -> tuple[dict[str, dict], list[str]]:
    """Captions keyed by path relative to ``root`` (also by file stem, for AudioCaps-style CSVs).

    Reads ``captions.jsonl`` lines ``{"path", "caption"[, "label"]}`` or any ``*.csv`` with a ``caption``
    column and a ``path``, ``file_name`` or ``youtube_id`` column. Returns ``(captions, problems)``.
    """
    captions: dict[str, dict] = {}
    problems: list[str] = []
    jsonl = root / "captions.jsonl"
    if jsonl.is_file():
        rows, problems = _read_jsonl(jsonl, need_caption=True)
        captions.update({row["path"]: row for row in rows})
    for table in sorted(root.glob("*.csv")):
        rows, table_problems = _read_csv(table, need_caption=True)
        problems += table_problems
        for row in rows:
            captions.setdefault(row["path"], row)
    return captions, problems


def _read_jsonl(path: Path, need_caption: bool) -> tuple[list[dict], list[str]]:
    rows, problems = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"]:
                raise ValueError("needs a string field 'path'")
            if need_caption and not isinstance(row.get("caption"), str):
                raise ValueError("needs a string field 'caption'")
        except ValueError as error:
            problems.append(f"{path}:{number}: bad caption line ({error})")
            continue
        for key in ("caption", "label", "domain"):
            if row.get(key) is not None and not isinstance(row[key], str):
                problems.append(f"{path}:{number}: its {key} is not text; the audio is used without it")
                row[key] = None
        rows.append(row)
    return rows, problems


def _read_csv(path: Path, need_caption: bool) -> tuple[list[dict], list[str]]:
    rows, problems = [], []
    with open(path, newline="", errors="replace") as handle:
        reader = csv.DictReader(handle)
        try:
            fields = reader.fieldnames or []
            key = next((k for k in ("path", "file_name", "youtube_id") if k in fields), None)
            if key is None or (need_caption and "caption" not in fields):
                return rows, problems
            for row in reader:
                if not row.get(key) or (need_caption and not row.get("caption")):
                    problems.append(f"{path}:{reader.line_num}: bad row (empty {key}"
                                    f"{' or caption' if need_caption else ''})")
                    continue
                rows.append({"path": row[key], "caption": row.get("caption") or None,
                             "label": row.get("label") or None, "domain": row.get("domain") or None})
        except csv.Error as error:  # a NUL byte, a field over the csv module's limit
            problems.append(f"{path}:{reader.line_num}: unreadable CSV ({error}); the rows from here on are left out, "
                            "fix the file")
    return rows, problems


def expand_shards(pattern: str) -> list[str]:
    """The shard paths of a brace pattern, via the ``webdataset`` package."""
    try:
        from webdataset.shardlists import expand_urls
    except ImportError as error:
        raise DataError(f"{pattern}: reading WebDataset shards needs the webdataset package: pip install webdataset") \
            from error
    shards = list(expand_urls(pattern))
    missing = [s for s in shards if not Path(s).is_file()]
    if missing:
        raise DataError(f"{missing[0]}: shard not found ({len(missing)} of {len(shards)} missing); check the pattern")
    return shards


def _candidates(source: str, kind: str) -> tuple[list[dict], list[str]]:
    """What the source lists: ``[{path, file, caption?, label?, offset?, member_size?}]`` and problems."""
    if kind == "folder":
        root = Path(source)
        captions, problems = read_captions(root)
        rows = []
        for file in find_audio_files(root):
            relative = file.relative_to(root).as_posix()
            meta = captions.get(relative) or captions.get(Path(relative).stem) or {}
            rows.append({"path": relative, "file": str(file), "caption": meta.get("caption"),
                         "label": meta.get("label"), "domain": meta.get("domain")})
        return rows, problems
    if kind == "manifest":
        manifest = Path(source)
        rows, problems = (_read_jsonl if manifest.suffix.lower() == ".jsonl" else _read_csv)(manifest, False)
        if not rows and not problems:
            raise DataError(f"{manifest}: no rows with a 'path'; write one line per file, e.g. "
                            '{"path": "a.wav", "caption": "..."}')
        folder = manifest.parent.resolve()
        for row in [row for row in rows if "\0" in row["path"]]:
            problems.append(f"{manifest}: the path {row['path']!r} holds a NUL byte; left out")
        rows = [row for row in rows if "\0" not in row["path"]]
        for row in rows:
            file = Path(row["path"]).expanduser()
            file = Path(os.path.realpath(file if file.is_absolute() else folder / file))
            row["file"] = str(file)
            # one name however the manifest spells it (./a.wav, a.wav, /abs/a.wav, a link to it): its split
            row["path"] = file.relative_to(folder).as_posix() if file.is_relative_to(folder) else str(file)
        return rows, problems
    rows, problems = [], []
    shards = expand_shards(source)
    root = os.path.commonpath([os.path.dirname(shard) for shard in shards])
    for shard in shards:
        rows += _shard_members(shard, os.path.relpath(shard, root), problems)
    return rows, problems


def _shard_members(shard: str, name: str, problems: list[str]) -> list[dict]:
    """Audio members of one tar with their byte ranges and the captions of their siblings; each is called
    ``name#member``, ``name`` the shard's path below the shards' common folder (so a member's split does not
    depend on where the shards lie or how the pattern was spelled)."""
    try:
        with tarfile.open(shard, "r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            texts = {}
            for member in members:
                stem, suffix = os.path.splitext(member.name)
                if suffix in CAPTION_SUFFIXES and member.size < 1 << 20:
                    texts[stem] = (suffix, tar.extractfile(member).read().decode("utf-8", errors="replace"))
    except (OSError, tarfile.TarError) as error:
        problems.append(f"{shard}: unreadable shard ({error})")
        return []
    rows = []
    for member in members:
        stem, suffix = os.path.splitext(member.name)
        if suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        caption = label = domain = None
        if stem in texts:
            kind, text = texts[stem]
            if kind == ".json":
                try:
                    meta = json.loads(text)
                    caption, label, domain = meta.get("caption") or meta.get("text"), meta.get("label"), \
                        meta.get("domain")
                except (ValueError, AttributeError):
                    problems.append(f"{shard}#{stem}.json: bad JSON")
            else:
                caption = text.strip() or None
        rows.append({"path": f"{name}#{member.name}", "file": shard, "caption": caption, "label": label,
                     "domain": domain if isinstance(domain, str) else None,
                     "offset": member.offset_data, "member_size": member.size})
    return rows


# --------------------------------------------------------------------------- probing
def open_sound(file: str, offset: int | None = None, member_size: int | None = None) -> sf.SoundFile:
    """A seekable ``SoundFile`` of a file on disk, or of a tar member's bytes (read once, a clip's size)."""
    if offset is None:
        return sf.SoundFile(file)
    with open(file, "rb") as handle:
        handle.seek(offset)
        data = handle.read(member_size)
    return sf.SoundFile(io.BytesIO(data))


def wav_declared_frames(head: bytes, size: int) -> tuple[int, int] | None:
    """``(frames the RIFF/WAVE header declares, frames the file's ``size`` bytes hold)`` from the file's first
    bytes ``head``, or ``None`` when it is not a WAV with a plain ``fmt``/``data`` header. libsndfile
    quietly clips the declared length to the file, so a truncated WAV is found here."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, block_align = 12, 0
    while position + 8 <= len(head):
        chunk, length = head[position:position + 4], int.from_bytes(head[position + 4:position + 8], "little")
        if chunk == b"fmt " and position + 22 <= len(head):
            block_align = int.from_bytes(head[position + 20:position + 22], "little")
        if chunk == b"data":
            if not block_align or length == 0xFFFFFFFF:  # no format yet, or a streamed file of unknown length
                return None
            return length // block_align, max(size - position - 8, 0) // block_align
        position += 8 + length + (length & 1)
    return None


def _declared_frames(candidate: dict) -> tuple[int, int] | None:
    try:
        with open(candidate["file"], "rb") as handle:
            handle.seek(candidate.get("offset") or 0)
            head = handle.read(4096)
            size = candidate.get("member_size") or os.fstat(handle.fileno()).st_size
    except OSError:
        return None
    return wav_declared_frames(head, size)


def probe(candidate: dict) -> dict:
    """Read a file once: ``{frames, sample_rate, channels, rms, peak[, warning]}`` or ``{reason}``."""
    try:
        with open_sound(candidate["file"], candidate.get("offset"), candidate.get("member_size")) as sound:
            promised, sample_rate, channels = sound.frames, sound.samplerate, sound.channels
            frames, squares, peak = 0, 0.0, 0.0
            while True:
                block = sound.read(PROBE_BLOCK, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                if not np.isfinite(block).all():
                    return {"reason": "non-finite: the file holds NaN or Inf samples"}
                mono = block.mean(axis=1)
                squares += float(np.sum(mono.astype(np.float64) ** 2))
                peak = max(peak, float(np.max(np.abs(mono))))
                frames += block.shape[0]
    except Exception as error:  # soundfile raises several types for damaged files
        detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        return {"reason": f"unreadable audio ({detail})"}
    if frames == 0:
        return {"reason": "empty: the file holds no samples"}
    result = {"frames": frames, "sample_rate": int(sample_rate), "channels": int(channels),
              "rms": math.sqrt(squares / frames), "peak": peak}
    name = str(candidate.get("path", candidate["file"])).lower()
    declared = _declared_frames(candidate) if name.endswith(".wav") else None
    if declared and declared[0] > declared[1]:
        promised = declared[0]
    warnings = []
    if promised > 0 and frames < promised:
        warnings.append(f"truncated: the header promises {promised} frames, the file holds {frames}")
    if frames < SHORT_SECONDS * sample_rate:
        warnings.append(f"very short: {frames} samples ({1000 * frames / sample_rate:.2g} ms), mostly padding in a "
                        "training segment")
    if warnings:
        result["warning"] = "; ".join(warnings)
    return result


def _stat(candidate: dict) -> tuple[int, int, tuple[int, int]]:
    """``(size, mtime_ns, (device, inode))`` of a regular file; ``OSError`` for anything else (a FIFO would block
    its reader)."""
    status = os.stat(candidate["file"])
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or folder)")
    return status.st_size, status.st_mtime_ns, (status.st_dev, status.st_ino)


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


# --------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    return Path(os.environ.get("TARGETKL_CACHE") or Path.home() / ".cache" / "targetkl" / "index")


def canonical_source(source: str | Path) -> str:
    """``source`` as an absolute path (a folder or manifest with its links resolved; a shard pattern made
    absolute, its braces kept): what the source means from any working folder."""
    text = str(source)
    if "://" in text or text.startswith("pipe:"):
        return text
    if "{" in text:
        return os.path.abspath(os.path.expanduser(text))
    return str(Path(text).expanduser().resolve())


def index_file(source: str | Path) -> Path:
    key = canonical_source(source)
    return cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.jsonl"


def _load_cache(path: Path, source: str) -> dict[str, dict]:
    """Cached rows (entries and skipped files) by path; empty when missing, foreign or damaged."""
    try:
        with open(path) as lines:  # read a line at a time: the file's text is never in memory whole
            header = json.loads(next(lines))
            if header.get("format") != INDEX_FORMAT or header.get("version") != INDEX_VERSION or \
                    header.get("source") != source:
                return {}
            return {row["path"]: row for row in map(json.loads, lines) if "path" in row}
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError):
        return {}


def ensure_index(source: str | Path, workers: int | None = None, progress: bool = True) -> CorpusIndex:
    """The index of ``source``, probing only what is new or changed since the cached one; writes the cache."""
    source = str(source)
    kind = source_kind(source)
    canonical = canonical_source(source)  # every file below is found from here: absolute, whatever the cwd
    candidates, problems = _candidates(canonical, kind)
    for problem in problems:
        _warn_once(problem)
    cache = index_file(source)
    cached = _load_cache(cache, canonical)
    cached_count = len(cached)
    rows: dict[str, dict] = {}
    to_probe: list[tuple[dict, tuple[int, int]]] = []
    skipped: dict[str, str] = {}
    first_name: dict[tuple, str] = {}  # a file (or tar member) listed under several names is used under its first
    other_names: dict[tuple, list[str]] = {}
    for candidate in candidates:
        try:
            *stamp, identity = _stat(candidate)
        except OSError as error:
            skipped[candidate["path"]] = (error.strerror if error.errno == errno.EINVAL
                                          else f"unreadable audio ({error.strerror})")
            continue
        key = (*identity, candidate.get("offset"))
        if key in first_name:
            other_names.setdefault(key, []).append(candidate["path"])
            continue
        first_name[key] = candidate["path"]
        stamp = tuple(stamp)
        old = cached.pop(candidate["path"], None)  # each cached row is merged once, then freed
        if old is not None and (old.get("size"), old.get("mtime_ns")) == stamp and \
                old.get("offset") == candidate.get("offset"):
            rows[candidate["path"]] = {**old, **{k: candidate.get(k) for k in ("file", "caption", "label", "domain")}}
        else:
            to_probe.append((candidate, stamp))
    if to_probe:
        for (candidate, stamp), result in zip(to_probe, _probe_all([c for c, _ in to_probe], workers, progress)):
            rows[candidate["path"]] = {**candidate, **result, "size": stamp[0], "mtime_ns": stamp[1]}
    entries = []
    for path in sorted(rows):
        row = rows[path]
        if "reason" in row:
            skipped[path] = row["reason"]
        else:
            entries.append(IndexEntry.from_json(row))
    if to_probe or len(rows) != cached_count:
        header = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "source": canonical, "kind": kind,
                  "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": len(entries), "skipped": len(skipped)}
        body = [json.dumps(header)] + [json.dumps(_drop_none(rows[p])) for p in sorted(rows)]
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cache, "\n".join(body) + "\n")
        except OSError as error:
            log.warning("could not cache the index in %s (%s); it will be rebuilt next time", cache, error.strerror)
    for key, names in other_names.items():
        _warn_once(f"{first_name[key]}: listed {len(names) + 1} times (also as {', '.join(names[:3])}"
                   f"{'...' if len(names) > 3 else ''}); used once")
    for path, reason in skipped.items():
        _warn_once(f"skipping {path}: {reason}")
    probed = {candidate["path"] for candidate, _ in to_probe}
    for entry in entries:
        if entry.warning and entry.path in probed:
            _warn_once(f"{entry.path}: {entry.warning}; using what it holds")
    return CorpusIndex(source, kind, entries, skipped, cache)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Log a file's problem once per process (training indexes its corpus once per split)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def _drop_none(row: dict) -> dict:
    return {k: v for k, v in row.items() if v is not None}


def _probe_all(candidates: list[dict], workers: int | None, progress: bool) -> list[dict]:
    workers = default_workers() if workers is None else max(1, workers)
    bar = tqdm(total=len(candidates), desc="indexing audio", disable=not progress, leave=False, unit="file")
    try:
        if workers == 1 or len(candidates) < 64:
            results = []
            for candidate in candidates:
                results.append(probe(candidate))
                bar.update(1)
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for result in pool.map(probe, candidates, chunksize=16):
                results.append(result)
                bar.update(1)
            return results
    finally:
        bar.close()
