"""The one error vocabulary of the pipeline, split by blame.

- :class:`UsageError`: something the user can fix in the flags, the config file or the inputs.
  Raised only where those are read; the CLI maps it, and only it, to exit 2.
- :class:`RunFailed`: the run stopped for a reason the user can act on (too many bad items, a
  weights file that changed under the run). What committed before stays committed; exit 1.
- :class:`InternalError`: a bug in this tool, never bad input. The CLI says to report it.

A bad input *item* is none of these: it becomes a row with a status and an error.
"""

from __future__ import annotations

__all__ = ["InternalError", "RunFailed", "UsageError"]


class UsageError(ValueError):
    """A flag, a setting or an input is wrong; the message says what to write instead."""


class RunFailed(RuntimeError):
    """The run stopped; the message says why, what stays committed and what to do."""


class InternalError(RuntimeError):
    """An invariant of this tool broke: a bug to report, not a problem with the inputs."""
