"""One writer per run folder: an advisory lock on ``RUN/.lock`` while a process trains the run.

The lock is ``flock(2)`` on an open file, so the kernel drops it when its process exits, however it
exits: a run killed with SIGKILL leaves no stale lock behind, and the next ``train`` resumes it. The
file holds the owner's pid, which the refusal names. Without ``fcntl`` (not POSIX) nothing is locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from targetkl.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"


class RunFolderError(UserError, RuntimeError):
    """The run folder cannot be trained into: another process holds it, or it is not a folder."""


class RunLock:
    """``acquire()`` or raise :class:`RunFolderError`; ``release()`` (idempotent) gives the folder back."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._handle = None

    def acquire(self) -> RunLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunFolderError(f"{self.run_dir}: exists and is not a folder; choose another --out")
        if fcntl is None or self._handle is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(f"{self.run_dir}: another process (pid {owner}) is training this run; wait for "
                                 "it to finish, stop it, or train into another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def check(self) -> None:
        """Raise now if the folder is taken, without keeping it (to refuse before loading any data)."""
        if self._handle is None:
            self.acquire()
            self.release()
