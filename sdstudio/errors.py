"""User-facing errors.

Every error a user can cause (bad config, bad file, unreachable provider) is an ``SdstudioError`` whose
message is one line naming the problem and, where possible, what to do. The CLI prints that line and
exits 2; tracebacks are for ``SDSTUDIO_DEBUG=1`` only.
"""
from __future__ import annotations


class SdstudioError(Exception):
    """Base class for errors whose message is meant for the user as-is."""


class ConfigError(SdstudioError):
    """A job configuration (YAML, JSON, CLI flags, widget values) is invalid."""


class StoreError(SdstudioError):
    """metadata.db cannot be opened, migrated or written."""


class JobBusy(SdstudioError):
    """The job is running in another process (its lease is held by a live process)."""
