"""Files written whole or not at all: a temporary file in the same folder, fsync, ``os.replace``.

The bottom layer: it imports nothing from the package, so any module may use it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
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


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: all of it or nothing.

    On failure the temporary file is removed and the ``OSError`` names ``path`` (never the temporary).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; name a file to write", str(path))
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def output_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` whose folder exists; ``FileNotFoundError`` with a one-line fix otherwise."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder for {path.name}; create it first")
    return path


def read_json_or_none(path: Path) -> dict | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable (an unfinished result)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
