"""The errors a user can fix: one base class, one subclass per kind.

The command line catches :class:`DiffdeblurError` only and prints its message as one line; any
other exception is a bug and keeps its traceback. Every message names the file, key or option at
fault. The subclasses also derive from the built-in type they replace (ValueError, KeyError,
RuntimeError), so ``except ValueError`` in user code keeps working.
"""
from __future__ import annotations


class DiffdeblurError(Exception):
    """Base class of every user-facing diffdeblur error (one-line message)."""


class ConfigError(DiffdeblurError, ValueError):
    """A config file, override, hyper-parameter or option is invalid; the message names it."""


class UnknownNameError(DiffdeblurError, KeyError):
    """A name (model, objective, data source) is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its argument; this message is already a sentence
        return str(self.args[0]) if self.args else ""


class CheckpointError(DiffdeblurError, ValueError):
    """A checkpoint or weights file is missing, corrupt or incompatible; the message names the file."""


class ImageError(DiffdeblurError, ValueError):
    """An image could not be read or written; the message names the file and the problem."""


class TrainingError(DiffdeblurError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume state, bad data); one-line message."""


class DeviceError(DiffdeblurError, ValueError):
    """The requested compute device is unknown or not available."""


class OutputError(DiffdeblurError, OSError):
    """An output file or folder cannot be created or written; the message names it and why."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) after saving what it could; the message (one line) says where.

    A KeyboardInterrupt, not a DiffdeblurError: code that catches Ctrl-C keeps working, and the
    command line exits with 130 after printing the message."""
