"""The one error vocabulary of the pipeline, split by blame.

- :class:`UsageError`: something the user can fix in the flags, the config file or the inputs.
  Raised only where those are read; the CLI maps it, and only it, to exit 2.
  :class:`InputError` is the one an ``--input`` raises when it names nothing usable.
- :class:`RunFailed`: the run stopped for a reason the user can act on (too many bad items, a
  weights file that changed under the run). What committed before stays committed; exit 1.
- :class:`InternalError`: a bug in this tool, never bad input. The CLI says to report it.

A bad input *item* is none of these: it becomes a row with a status and an error.
"""

from __future__ import annotations

__all__ = ["InputError", "InternalError", "RunFailed", "UsageError", "raised_by_us"]


class UsageError(ValueError):
    """A flag, a setting or an input is wrong; the message says what to write instead."""


class InputError(UsageError):
    """An ``--input`` that names nothing usable: missing, or a manifest without a ``uri`` column."""


class RunFailed(RuntimeError):
    """The run stopped; the message says why, what stays committed and what to do."""


class InternalError(RuntimeError):
    """An invariant of this tool broke: a bug to report, not a problem with the inputs."""


def raised_by_us(exc: BaseException) -> BaseException | None:
    """The :class:`RunFailed` or :class:`InternalError` behind ``exc``, when a worker raised it and
    Ray handed it over wrapped (``RayTaskError.cause``, exception chaining); else None. Ray Data
    appends its retry advice to the message; that part is not ours and goes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (RunFailed, InternalError)) and not hasattr(current, "cause"):
            message = str(current).split(_RAY_DATA_SUFFIX, 1)[0]
            return current if message == str(current) else type(current)(message)
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return None


_RAY_DATA_SUFFIX = "\nFailed to apply UDF transform"
