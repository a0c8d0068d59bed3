"""The exactly-once check before a shard commits, on tables (no Ray): what it lets through and what not.

Backs docs/reliability.md, "How exactly-once holds": every item of a shard has rows, nothing else
does, each (uri, segment) appears once, and every audio file's segments are 0..n-1 with no gap.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.commit import check_rows
from pipeline.errors import InternalError


def rows(*keys: tuple[str, int]) -> pa.Table:
    return pa.table({"uri": [u for u, _ in keys], "segment": pa.array([s for _, s in keys], pa.int32())})


ITEMS = pa.array(["a.wav", "b.jpg", "c.jpg"])


def test_one_row_per_image_and_per_audio_window_passes():
    check_rows(rows(("a.wav", 0), ("a.wav", 1), ("a.wav", 2), ("b.jpg", 0), ("c.jpg", 0)), ITEMS, where="shard 0")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ((("a.wav", 0), ("b.jpg", 0), ("b.jpg", 0), ("c.jpg", 0)), "1 items have a segment twice \\(e.g. 'b.jpg'\\)"),
        ((("a.wav", 0), ("c.jpg", 0)), "1 items without a row, 0 rows of items it does not have \\(e.g. 'b.jpg'\\)"),
        ((("a.wav", 0), ("b.jpg", 0), ("c.jpg", 0), ("z.jpg", 0)), "0 items without a row, 1 rows of items"),
        # a lost middle window: 0, 1, 3 of a.wav
        ((("a.wav", 0), ("a.wav", 1), ("a.wav", 3), ("b.jpg", 0), ("c.jpg", 0)), "1 items miss a segment"),
        # a lost first window
        ((("a.wav", 1), ("a.wav", 2), ("b.jpg", 0), ("c.jpg", 0)), "1 items miss a segment"),
    ],
)
def test_duplicates_gaps_and_strangers_stop_the_commit(keys, message):
    with pytest.raises(InternalError, match=message):
        check_rows(rows(*keys), ITEMS, where="shard 0")
