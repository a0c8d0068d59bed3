"""Failpoints: named places where a test makes this process fail on purpose; inert unless set.

The places are named in the code with ``failpoints.hit("shard.before-commit")``. A test turns one
on in the environment of the process it starts (TiKV's fail-rs does the same)::

    GHOSTNET_FAILPOINTS="shard.before-commit=kill@2"       # SIGKILL the process group, 2nd time there
    GHOSTNET_FAILPOINTS="shard.after-commit=kill@3;..."    # several, separated by ';'

``kill`` kills the process and its group (the driver with its private Ray), as a lost machine
would. Without the variable every ``hit`` is a dictionary lookup that finds nothing.

The places: ``shard.before-commit`` (a shard's files are written and it is listed as pending, its
transaction not made) and ``shard.after-commit`` (its transactions are made and its record written).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

__all__ = ["ENV", "hit"]

ENV = "GHOSTNET_FAILPOINTS"
ACTIONS = ("kill",)


def _parse(value: str) -> dict[str, tuple[str, int]]:
    points = {}
    for spec in filter(None, (part.strip() for part in value.split(";"))):
        name, _, action = spec.partition("=")
        action, _, nth = action.partition("@")
        if action not in ACTIONS:
            raise ValueError(f"{ENV}: unknown action {action!r} in {spec!r} (known: {', '.join(ACTIONS)})")
        points[name] = (action, int(nth or 1))
    return points


_POINTS = _parse(os.environ.get(ENV, ""))
_hits: Counter[str] = Counter()


def hit(name: str) -> None:
    """Pass the failpoint ``name``: fail here if the environment asks for it at this hit."""
    if name not in _POINTS:
        return
    _hits[name] += 1
    action, nth = _POINTS[name]
    if _hits[name] == nth and action == "kill":
        sys.stderr.flush()
        os.killpg(os.getpgrp(), signal.SIGKILL)
