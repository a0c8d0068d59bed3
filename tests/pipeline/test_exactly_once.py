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


def errors(*pairs: tuple[str, str | None]) -> pa.Table:
    return pa.table({"uri": [f"{i}.jpg" for i in range(len(pairs))], "segment": pa.array([0] * len(pairs), pa.int32()),
                     "status": [s for s, _ in pairs], "error": pa.array([e for _, e in pairs], pa.string())})


def test_the_model_failing_every_row_of_a_shard_the_same_way_is_our_bug():
    """#17 "a failure of the same exception type across every item of a shard fails the run as an
    internal error"; a mix of errors, or any row that is not a model_error, is the inputs' and goes
    to the error-rate gate instead."""
    from pipeline.commit import check_model_errors

    with pytest.raises(InternalError, match="all its 3 rows with RuntimeError"):
        check_model_errors(errors(*[("model_error", "RuntimeError: boom")] * 3), where="shard 4")
    check_model_errors(errors(("model_error", "RuntimeError: boom"), ("model_error", "ValueError: nan")), where="s")
    check_model_errors(errors(("model_error", "RuntimeError: boom"), ("decode_error", "OSError: truncated")),
                       where="s")
    check_model_errors(errors(("model_error", "RuntimeError: boom")), where="one item alone is its own")
