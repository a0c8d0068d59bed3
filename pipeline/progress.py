"""Progress a person or a log can follow: committed shards out of the total, rows per status, ETA.

On a terminal one status line is rewritten in place; elsewhere (a log file, a Ray job's log) each
committed shard is one line; with ``--log-format json``, one JSON log line (:mod:`pipeline.logs`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pipeline import logs
from pipeline.record import ShardRecord

__all__ = ["Progress", "eta"]

log = logging.getLogger("ghostnet_pipeline.progress")


def eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    def __init__(self, *, shards: int, items: int, stream: TextIO | None = None, run_id: str | None = None) -> None:
        self.stream = stream or sys.stderr
        self.json = logs.is_json()
        self.interactive = self.stream.isatty() and not self.json
        self.run_id = run_id
        self.shards, self.items = shards, items
        self.started = time.monotonic()
        self.done_shards = self.done_items = 0
        self.rows: dict[str, int] = {}
        self.rate = 0.0  # items committed per second so far
        self.remaining: float | None = None  # seconds to the last commit at that rate; None before the first

    def committed(self, shard: ShardRecord) -> None:
        self.done_shards += 1
        self.done_items += shard.items
        for status, count in shard.rows_per_status.items():
            self.rows[status] = self.rows.get(status, 0) + count
        elapsed = time.monotonic() - self.started
        rate = self.rate = self.done_items / elapsed if elapsed > 0 else 0.0
        remaining = self.remaining = (self.items - self.done_items) / rate if rate > 0 else None
        statuses = " · ".join(f"{k} {v:,}" for k, v in sorted(self.rows.items()))
        if self.json:
            log.info("committed shard %d (%d/%d)", shard.shard, self.done_shards, self.shards, extra={
                "run_id": self.run_id, "shard": shard.shard, "stage": "commit", "counts": shard.rows_per_status,
                "items": shard.items, "items_per_s": round(rate, 3),
                "eta_s": None if remaining is None else round(remaining, 1)})
            return
        if self.interactive:
            line = (f"shards {self.done_shards}/{self.shards} · {statuses} · {rate:,.1f} items/s · "
                    f"ETA {eta(remaining)}")
            self.stream.write("\r\033[K" + line)
        else:
            shard_statuses = ", ".join(f"{k} {v}" for k, v in sorted(shard.rows_per_status.items()))
            self.stream.write(
                f"committed shard {shard.shard} ({self.done_shards}/{self.shards}): {shard.items} items, "
                f"{shard.rows} rows ({shard_statuses}) in {shard.commit_s:.1f} s of commit; "
                f"{rate:,.1f} items/s, ETA {eta(remaining)}\n"
            )
        self.stream.flush()

    def close(self) -> None:
        if self.interactive and self.done_shards:
            self.stream.write("\n")
            self.stream.flush()
