"""Errors the user can act on. Each message is one paragraph: what was wrong, how to fix it."""

from __future__ import annotations


class MiIdeasError(Exception):
    """Base class of every error mi-ideas reports to the user without a traceback."""

    #: process exit code the CLI uses for this error
    exit_code = 1


class UsageError(MiIdeasError):
    """The command line or arguments were wrong (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A config did not validate; the message has one line per bad field."""


class HostError(UsageError):
    """The set of installed plugins is inconsistent (e.g. two ideas with one name)."""


class PluginLoadError(HostError):
    """A plugin failed to load while MI_IDEAS_STRICT_PLUGINS is set, or has a bad hookimpl."""


class UnknownIdeaError(UsageError):
    """No idea has the given name."""


class RunError(MiIdeasError):
    """A run failed after it started; its directory is marked failed (exit code 1)."""

    def __init__(self, message: str, run_dir: str | None = None):
        super().__init__(message)
        self.run_dir = run_dir


class RemoteRunError(MiIdeasError):
    """A remote (NDIF) request failed: server error, bad key, unreachable host, lost job."""
