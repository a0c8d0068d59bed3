"""One place that turns our exceptions into a one-line message and an exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from ghostnet import WeightsError
from pipeline import storage
from pipeline.commit import CommitError
from pipeline.discover import InputError
from pipeline.lock import LockHeld
from pipeline.run import RunFailed

FAILED = 1
USAGE = 2
LOCKED = 3

# Ordered: subclasses before their bases.
_EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (LockHeld, LOCKED),
    (InputError, USAGE),
    (WeightsError, FAILED),
    (RunFailed, FAILED),
    (CommitError, FAILED),
    (FileNotFoundError, USAGE),
    (ValueError, USAGE),
]


def guarded(fn: Callable[[], int]) -> int:
    """Run a command; known errors print ``error: ...`` on stderr and give their exit code."""
    try:
        return fn()
    except KeyboardInterrupt:
        print("interrupted: nothing was committed by this run", file=sys.stderr)
        return 130
    except Exception as exc:
        for kind, code in _EXIT_CODES:
            if isinstance(exc, kind):
                print(f"error: {storage.redact(str(exc))}", file=sys.stderr)
                if os.environ.get("GHOSTNET_DEBUG"):
                    logging.getLogger("ghostnet_pipeline").exception("traceback")
                else:
                    print("(set GHOSTNET_DEBUG=1 for the traceback)", file=sys.stderr)
                return code
        raise
