"""User-facing errors: each names the problem and the fix in one line.

The CLI turns any :class:`MechrecallError` into that line and exit code 2; library users
catch it like any exception.
"""

from __future__ import annotations


class MechrecallError(Exception):
    """A problem with the user's input or files, not a bug: the message says what to do."""


class ConfigError(MechrecallError):
    """An option or preset value is out of range or unknown."""


class RunDirError(MechrecallError):
    """A path is not a run (or world) directory, or is one of the wrong kind or state."""


class OutputBusyError(RunDirError):
    """Another process holds the lock of an output path (it is writing there now)."""


class ArtifactError(MechrecallError):
    """An artifact is missing, corrupt or does not match the manifest."""


class ModelNotAvailableError(MechrecallError):
    """A checkpoint cannot be found offline (local directory or Hugging Face cache)."""
