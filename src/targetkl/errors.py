"""The base of every "bad input" exception: the CLI prints its one-line message instead of a traceback.

The bottom layer: it imports nothing, so ``targetkl --help`` and every module may use it. A module that
refuses input defines its own subclass (``ConfigError``, ``DataError``, ``BitstreamError``, ...).
"""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix; ``str(error)`` is one line that names the file and the fix."""


USER_ERRORS = (UserError, FileNotFoundError)
