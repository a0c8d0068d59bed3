"""One place that turns our exceptions into a one-line message and an exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from pipeline import logs, storage
from pipeline.errors import InternalError, RunFailed, UsageError

log = logging.getLogger("ghostnet_pipeline")

FAILED = 1
USAGE = 2
DRIFT = 4  # nightly --alert-drift: the night committed, and its label or channel drift went over the threshold
AGREEMENT = 5  # nightly --alert-agreement: the night committed, and a candidate agreed with production less than asked



def _exit_codes() -> list[tuple[type[BaseException], int]]:
    """Ordered: subclasses before their bases. A user's wrong weights file is a usage error like a
    wrong input (InputError is a UsageError); an InternalError is ours, and says so."""
    from ghostnet import WeightsError  # with torch: imported here, not when the CLI starts

    return [(UsageError, USAGE), (WeightsError, USAGE), (RunFailed, FAILED), (InternalError, FAILED)]


def guarded(fn: Callable[[], int]) -> int:
    """Run a command; known errors print ``error: ...`` on stderr (a JSON log line with
    ``--log-format json``) and give their exit code."""
    try:
        return fn()
    except KeyboardInterrupt:
        _say("interrupted: shards committed before stay committed; the same command again goes on from there")
        return 130
    except Exception as exc:
        for kind, code in _exit_codes():
            if isinstance(exc, kind):
                _say(f"error: {storage.redact(str(exc))}")
                if os.environ.get("GHOSTNET_DEBUG"):
                    log.exception("traceback")
                elif isinstance(exc, InternalError):
                    # Only our bugs get more than one line: a caller can show the others as they are.
                    _say("this is a bug in ghostnet-pipeline, not a problem with your inputs: please report it "
                         "with the message above (set GHOSTNET_DEBUG=1 for the traceback)")
                return code
        raise


def _say(line: str) -> None:
    if logs.is_json():
        log.error("%s", line, extra={"stage": "exit"})
    else:
        print(line, file=sys.stderr)
