"""Planning in bounded memory (pipeline/plan.py), on tables and local disk, no Ray.

Backs docs/operations.md §6, "Shards are stable": the same listing cuts the same shards; they are
disjoint and together cover the listing; what is labeled is decided per hash partition and equals
the whole-table anti-join.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline import plan
from pipeline.plan import cut_shards, read_shard, spill_keys, spill_listing


def listing(entries: list[tuple[str, str, int]], batch: int = 7) -> list[pa.RecordBatch]:
    table = pa.table({"uri": [e[0] for e in entries], "etag": [e[1] for e in entries],
                      "size_bytes": pa.array([e[2] for e in entries], pa.int64())})
    return table.to_batches(max_chunksize=batch)


def shards_of(planned: plan.Plan) -> dict[str, int]:
    found = {}
    for shard in planned.shards:
        for row in pa.concat_tables(read_shard(shard.path, 1000)).to_pylist():
            assert row["uri"] not in found, "shards are disjoint"
            found[row["uri"]] = row["_shard"]
            assert row["_shard"] == shard.index
    return found


def cut(tmp_path: Path, name: str, entries, labeled=None, shard_size: int = 5) -> plan.Plan:
    spilled = spill_listing(listing(entries), tmp_path / name / "listing", ["image"])
    keys = spill_keys(listing(labeled), tmp_path / name / "labeled") if labeled else None
    return cut_shards(spilled, keys, modality="image", shard_size=shard_size, folder=tmp_path / name / "shards")


def test_shards_are_stable_disjoint_and_cover_the_listing_once(tmp_path):
    photos = [(f"s3://b/p{i:03d}.jpg", f"e{i}", 100 + i) for i in range(37)]
    manifest_a = [*photos[:25], ("s3://b/notes.txt", "x", 1)]
    manifest_b = [*photos[20:], (photos[3][0], "e3-other-copy", 999)]  # duplicates across manifests

    first = cut(tmp_path, "first", manifest_a + manifest_b)
    again = cut(tmp_path, "again", manifest_a + manifest_b)

    assert first.items_listed == 37 and first.duplicates == 6 and first.items == 37
    assert shards_of(first) == shards_of(again), "the same listing cuts the same shards"
    assert set(shards_of(first)) == {p[0] for p in photos}, "together they cover the listing once"
    assert all(s.items <= 5 for s in first.shards) and first.shards_listed == len(first.shards) == 8
    kept = {r["uri"]: r["etag"] for s in first.shards for r in pa.concat_tables(read_shard(s.path, 99)).to_pylist()}
    assert kept[photos[3][0]] == "e3", "the first listed copy of a URI stays"


def test_an_object_changed_between_two_listings_keeps_its_shard_and_is_labeled_again(tmp_path):
    photos = [(f"s3://b/p{i:03d}.jpg", f"e{i}", 100 + i) for i in range(23)]
    changed = list(photos)
    changed[7] = (photos[7][0], "e7-new", 4242)

    before = cut(tmp_path, "before", photos)
    after = cut(tmp_path, "after", changed, labeled=photos)

    assert after.items_labeled == 22 and after.items == 1
    [(uri, shard)] = shards_of(after).items()
    assert uri == photos[7][0] and shard == shards_of(before)[uri]


@pytest.mark.parametrize("seed", range(5))
def test_the_per_partition_diff_equals_the_whole_table_anti_join(tmp_path, seed):
    rng = random.Random(seed)
    universe = [f"s3://bucket/{rng.choice('abc')}/{i:05d}.jpg" for i in range(400)]
    history = [(u, f"v{rng.randint(0, 2)}", rng.choice([100, 200])) for u in rng.sample(universe, 250)]
    history += [(u, None, None) for u in rng.sample(universe, 20)]  # listed once without etag or size
    listed = [(u, f"v{rng.randint(0, 2)}", rng.choice([100, 200])) for u in rng.sample(universe, 300)]
    listed += [(u, None, None) for u, e, _ in history[-20:][:10]]

    planned = cut(tmp_path, "p", listed, labeled=history, shard_size=37)

    whole = pa.table({"uri": [e[0] for e in listed], "etag": [e[1] for e in listed],
                      "size_bytes": pa.array([e[2] for e in listed], pa.int64())})
    whole = whole.take(pc.sort_indices(whole, [("uri", "ascending")]))
    first = whole.group_by("uri", use_threads=False).aggregate([("etag", "first"), ("size_bytes", "first")])
    keys = pa.table({"u": first["uri"], "e": pc.fill_null(first["etag_first"], ""),
                     "s": pc.fill_null(first["size_bytes_first"], -1)})
    done = pa.table({"u": [h[0] for h in history], "e": [h[1] or "" for h in history],
                     "s": [-1 if h[2] is None else h[2] for h in history]})
    expected = set(keys.join(done, keys=["u", "e", "s"], join_type="left anti")["u"].to_pylist())
    assert set(shards_of(planned)) == expected
    assert planned.items_labeled == len(keys) - len(expected)
