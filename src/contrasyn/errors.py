"""Exceptions that carry a message a user can act on.

Every error caused by the user's input (a path, a file, a config value) is raised as a
``ContrasynError`` subclass so the CLI can print it in one line without a traceback.
"""

from __future__ import annotations


class ContrasynError(Exception):
    """Base class for errors the user can fix; the CLI prints only the message."""


class DataError(ContrasynError):
    """A dataset file or folder is missing, unreadable, corrupt or inconsistent."""


class ConfigError(ContrasynError):
    """A configuration value is invalid or unknown."""


class CheckpointError(ContrasynError):
    """A checkpoint is missing, truncated, tampered with or from an incompatible version."""


class TrainingError(ContrasynError):
    """Training diverged or collapsed (a loss became NaN or infinite, or a discriminator won
    outright for too long); the last good checkpoint is kept."""


class OutputError(ContrasynError, OSError):
    """A file could not be written (disk full, permission denied, read-only filesystem...).

    The message names the file; the previous version of it, if any, is left untouched (every
    file is written through ``checkpoint.atomic_write``). It is also an ``OSError`` carrying
    the original ``errno``, so code that catches ``OSError`` keeps working."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        if errno is None:
            OSError.__init__(self, message)
        else:
            OSError.__init__(self, errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LockError(ContrasynError):
    """A model folder is being written by another process (``contrasyn.api.lock``)."""
