"""Files written whole or not at all: a temporary file in the same folder, fsync, ``os.replace``.

The bottom layer: it imports nothing from the package, so any module may use it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def umask_mode(folder: bool = False) -> int:
    """The permissions a new file (``0o666``) or folder (``0o777``) gets under the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def _naming(error: OSError, path: Path) -> OSError:
    return OSError(error.errno, error.strerror, str(path))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same suffix, so writers that go by it pick the same format) for the
    block to write; when the block ends without error it is synced, given the permissions the umask gives a
    new file and renamed to ``path``: all of it or nothing. On any error it is removed, and the error of a step
    of this function names ``path`` (never the temporary)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; name a file to write", str(path))
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
        os.close(handle)
    except OSError as error:
        raise _naming(error, path) from error
    temporary = Path(name)
    try:
        yield temporary
        try:
            fsync_file(temporary)
            os.chmod(temporary, umask_mode())
            os.replace(temporary, path)
        except OSError as error:
            raise _naming(error, path) from error
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`: all of it or nothing, with the umask's
    permissions; an ``OSError`` names ``path``."""
    with atomic_path(path) as temporary:
        try:
            temporary.write_bytes(data)
        except OSError as error:
            raise _naming(error, Path(path)) from error


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def output_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` whose folder exists; ``FileNotFoundError`` with a one-line fix otherwise."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder for {path.name}; create it first")
    return path


def without_nan(value):
    """``value`` with every float NaN (in nested dicts and lists too) replaced by ``None``: JSON every reader
    parses, where the standard would not take NaN."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def read_json_or_none(path: Path, kind: type = dict):
    """The JSON value in ``path`` if it is a ``kind`` (an object by default), or ``None`` when it is missing,
    unreadable or of another kind (an unfinished or damaged result, to be computed again)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, kind) else None
