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
