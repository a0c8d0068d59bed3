"""Log lines for a person (``text``, the default) or a machine (``json``: one JSON object per line).

A JSON line holds ``time``, ``level``, ``logger`` and ``message``, and where the line is about a run,
its ``run_id``, ``shard``, ``stage`` and ``counts`` (rows per status), passed as ``extra``. Every
string in it is redacted (:func:`pipeline.storage.redact`): no credential reaches a log.

In ``json`` mode the lines of Ray's own Python loggers on the driver go through the same formatter,
Ray's C++ components write JSON too (``RAY_BACKEND_LOG_JSON``), and the workers' lines stay in Ray's
log files instead of being copied to the driver's stderr with a ``(pid=...)`` prefix.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

from pipeline import storage

__all__ = ["FORMATS", "JsonFormatter", "configure", "is_json"]

FORMATS = ("text", "json")
FIELDS = ("run_id", "shard", "stage", "counts", "items", "items_per_s", "eta_s")
TEXT = "%(levelname)s %(name)s: %(message)s"
RAY_LOGGERS = ("ray", "ray.data")

_json = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None},
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(_redacted(entry), default=str)


def _redacted(value):
    if isinstance(value, str):
        return storage.redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def configure(fmt: str = "text", *, verbose: bool = False) -> None:
    """Set up the process's logging: ``fmt`` one of :data:`FORMATS`, INFO with ``verbose``."""
    global _json
    _json = fmt == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if _json else logging.Formatter(TEXT))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    if _json:
        os.environ["RAY_BACKEND_LOG_JSON"] = "1"
        import ray.data  # noqa: F401 - it configures its loggers on import: ours replace theirs after

        for name in RAY_LOGGERS:
            logger = logging.getLogger(name)
            for old in list(logger.handlers):
                if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                    logger.removeHandler(old)
            logger.addHandler(handler)
        logging.getLogger("ghostnet_pipeline.progress").setLevel(logging.INFO)


def is_json() -> bool:
    return _json
