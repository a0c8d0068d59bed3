"""Log lines for a person (``text``, the default) or a machine (``json``: one JSON object per line).

A JSON line holds ``time``, ``level``, ``logger`` and ``message``, and where the line is about a run,
its ``run_id``, ``shard``, ``stage`` and ``counts`` (rows per status), passed as ``extra``. Every
string in it is redacted (:func:`pipeline.storage.redact`): no credential reaches a log.

In ``json`` mode the lines of Ray's own Python loggers on the driver go through the same formatter:
``ray`` propagates to the root handler (a handler on ``ray`` itself would get its formatter replaced by
``ray.init``'s text one), and Ray Data, which rebuilds the handlers of ``ray.data`` from its logging
config whenever a dataset's context is set, is pointed at :data:`RAY_DATA_CONFIG`, whose console
handler is :class:`JsonHandler`. Python warnings become log lines, Ray's C++ components write JSON
too (``RAY_BACKEND_LOG_JSON``), and the workers' lines stay in Ray's log files instead of being
copied to the driver's stderr with a ``(pid=...)`` prefix.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from pipeline import storage

__all__ = ["FORMATS", "JsonFormatter", "JsonHandler", "configure", "is_json"]

FORMATS = ("text", "json")
FIELDS = ("run_id", "shard", "stage", "counts", "items", "items_per_s", "eta_s")
TEXT = "%(levelname)s %(name)s: %(message)s"
RAY_DATA_CONFIG = Path(__file__).with_name("ray_data_logging.yaml")  # read through RAY_DATA_LOGGING_CONFIG

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


def _redacted(value: object) -> object:
    if isinstance(value, str):
        return storage.redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class JsonHandler(logging.StreamHandler[TextIO]):
    """stderr, one :class:`JsonFormatter` line per record; Ray Data builds it from :data:`RAY_DATA_CONFIG`."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())


def configure(fmt: str = "text", *, verbose: bool = False) -> None:
    """Set up the process's logging: ``fmt`` one of :data:`FORMATS`, INFO with ``verbose``."""
    global _json
    _json = fmt == "json"
    handler: logging.Handler
    if _json:
        handler = JsonHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    if _json:
        _route_ray_through_root()


def _route_ray_through_root() -> None:
    os.environ["RAY_BACKEND_LOG_JSON"] = "1"
    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(RAY_DATA_CONFIG)
    from ray.data._internal.logging import configure_logging

    configure_logging()  # what importing ray.data did with its default config, now with ours
    ray_logger = logging.getLogger("ray")
    for old in list(ray_logger.handlers):
        if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
            ray_logger.removeHandler(old)
    ray_logger.propagate = True
    logging.captureWarnings(True)
    logging.getLogger("ghostnet_pipeline.progress").setLevel(logging.INFO)


def is_json() -> bool:
    return _json
