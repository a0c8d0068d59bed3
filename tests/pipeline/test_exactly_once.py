"""The exactly-once check before a commit, on tables (no Ray): what it lets through and what not."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.commit import CommitError, check_exactly_once


def staged(*rows: tuple[str, int]) -> pa.Table:
    return pa.table({"uri": [u for u, _ in rows], "segment": pa.array([s for _, s in rows], pa.int32())})


ITEMS = pa.table({"uri": ["a.wav", "b.jpg", "c.jpg"]})


def test_one_row_per_image_and_per_audio_window_passes():
    check_exactly_once(staged(("a.wav", 0), ("a.wav", 1), ("b.jpg", 0), ("c.jpg", 0)), ITEMS)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ((("a.wav", 0), ("b.jpg", 0), ("b.jpg", 0), ("c.jpg", 0)), "1 duplicate rows staged \\(e.g. 'b.jpg'\\)"),
        ((("a.wav", 0), ("c.jpg", 0)), "1 items without a row, 0 unexpected \\(e.g. 'b.jpg'\\)"),
        ((("a.wav", 0), ("b.jpg", 0), ("c.jpg", 0), ("z.jpg", 0)), "0 items without a row, 1 unexpected"),
    ],
)
def test_duplicates_gaps_and_strangers_stop_the_commit(rows, message):
    with pytest.raises(CommitError, match=message):
        check_exactly_once(staged(*rows), ITEMS)
