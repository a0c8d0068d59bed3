"""Discovery on real storage (moto S3, local disk): prefixes, globs, manifests, paging, duplicates.

The items are read as a run plans them: :func:`discover.list_inputs` streamed into
:func:`plan.spill_listing` and cut into shards by :func:`plan.cut_shards`.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipeline import discover, plan
from pipeline.errors import InputError
from pipeline.kinds import Modality
from pipeline.schema import ITEMS, MODELS, SHARD


def items(inputs: list[str], modalities: Sequence[Modality] = (Modality.IMAGE,)) -> pa.Table:
    """The items of ``inputs`` a run of ``modalities`` would label, each once, sorted by URI."""
    with tempfile.TemporaryDirectory() as work:
        listing = plan.spill_listing(discover.list_inputs(inputs), Path(work) / "listing", modalities)
        shards = [
            table
            for modality in modalities
            for shard in plan.cut_shards(listing, None, modality=modality, shard_size=10**6,
                                         folder=Path(work) / modality).shards
            for table in plan.read_shard(shard.path, 10**6)
        ]
        found = pa.concat_tables([plan.SHARD_ITEMS.empty_table(), *shards])
    return found.drop_columns([SHARD, MODELS]).sort_by("uri")  # the plan's own columns


def uris(table: pa.Table) -> list[str]:
    return table["uri"].to_pylist()


BIG = [f"big/x/img{i:04d}.jpg" for i in range(1100)]  # one part listed in two pages
SMALL = [f"{d // 5}/{d}/img{i:04d}.jpg" for d in range(13) for i in range(10)]  # 13 parts, two levels down


@pytest.fixture(scope="module")
def s3_tree(s3fs_client) -> str:
    """1,230 images under sub-prefixes, plus files that are not items."""
    bucket = "discover-" + secrets.token_hex(4)
    s3fs_client.mkdir(bucket)
    files = {f"{bucket}/in/{name}": b"x" for name in BIG + SMALL}
    files |= {f"{bucket}/in/top.PNG": b"png", f"{bucket}/in/notes.txt": b"no", f"{bucket}/in/0/a.wav": b"wav"}
    s3fs_client.pipe(files)
    return f"s3://{bucket}/in"


def test_s3_prefix_is_listed_completely_in_parallel_parts(s3fs_client, s3_tree):
    table = items([s3_tree])

    expected = [f"{s3_tree}/{name}" for name in BIG + SMALL]
    assert uris(table) == sorted([*expected, f"{s3_tree}/top.PNG"])
    assert table.schema.equals(ITEMS)
    info = s3fs_client.info(expected[0])
    row = table.filter(pc.equal(table["uri"], expected[0])).to_pylist()[0]
    assert row == {"uri": expected[0], "etag": info["ETag"].strip('"'), "size_bytes": 1, "modality": "image"}


def test_auto_modality_and_overlapping_inputs_give_each_object_once(s3_tree):
    table = items([s3_tree, f"{s3_tree}/0", f"{s3_tree}/0/a.wav"], list(Modality))

    assert table.num_rows == len(BIG) + len(SMALL) + 2
    assert len(set(uris(table))) == table.num_rows
    assert table.filter(pc.equal(table["modality"], "audio"))["uri"].to_pylist() == [f"{s3_tree}/0/a.wav"]


def test_globs_on_s3_and_local_disk(s3_tree, tmp_path):
    one_level = items([f"{s3_tree}/2/*/img000*.jpg"])
    assert uris(one_level) == [f"{s3_tree}/2/{d}/img{i:04d}.jpg" for d in (10, 11, 12) for i in range(10)]
    assert items([f"{s3_tree}/big/*/img1*.jpg"]).num_rows == 100
    assert items([f"{s3_tree}/*.png"]).num_rows == 0  # case matters in names, as on S3
    assert uris(items([f"{s3_tree}/*.PNG"])) == [f"{s3_tree}/top.PNG"]

    for path in ("a/x.jpg", "a/b/y.jpg", "a/b/c/z.png", "w.jpg"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    assert uris(items([f"{tmp_path}/a/*.jpg"])) == [f"{tmp_path}/a/x.jpg"]
    assert uris(items([f"{tmp_path}/a/**/*.jpg"])) == [f"{tmp_path}/a/b/y.jpg", f"{tmp_path}/a/x.jpg"]
    assert items([f"{tmp_path}/**"]).num_rows == 4
    assert items([f"{tmp_path}/nothing/*.jpg"]).num_rows == 0


def test_local_folder_walk_matches_the_files_on_disk(tmp_path):
    expected = []
    for d in range(40):
        for i in range(5):
            path = tmp_path / f"d{d % 4}" / f"e{d}" / f"{i}.jpeg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"y" * i)
            expected.append(str(path))

    table = items([str(tmp_path)])

    assert uris(table) == sorted(expected)
    assert table["size_bytes"].to_pylist() == [int(u[-6]) for u in sorted(expected)]
    local = fsspec.filesystem("file")
    assert table["etag"].to_pylist() == [discover._etag(local.info(u)) for u in sorted(expected)]


def test_manifests_text_csv_and_parquet(s3fs_client, s3_tree, tmp_path):
    some = [f"{s3_tree}/1/{d}/img{i:04d}.jpg" for d in (5, 6) for i in range(3)]
    missing = f"{s3_tree}/gone.jpg"
    (tmp_path / "list.txt").write_text("# made by hand\n\n" + "\n".join([*some, missing]) + "\n")
    (tmp_path / "list.csv").write_text("uri,note\n" + "".join(f"{u},x\n" for u in some))
    pq.write_table(pa.table({"uri": some}), tmp_path / "plain.parquet")

    for name in ("list.txt", "list.csv", "plain.parquet"):
        table = items([str(tmp_path / name)])
        assert uris(table) == sorted(some + ([missing] if name == "list.txt" else [])), name
        looked_up = table.filter(pc.equal(table["uri"], some[0])).to_pylist()[0]
        assert looked_up["etag"] == s3fs_client.info(some[0])["ETag"].strip('"')
    gone = items([str(tmp_path / "list.txt")]).to_pylist()[-1]
    assert gone == {"uri": missing, "etag": None, "size_bytes": None, "modality": "image"}


def test_inventory_style_manifest_is_taken_as_it_is(s3fs_client, s3_tree, tmp_path):
    bucket = s3_tree.split("/")[2]
    # 200k entries with etag and size: no lookups (none of these objects exist), read in batches.
    n = 200_000
    ids = pa.array(range(n)).cast(pa.string())
    names = pc.binary_join_element_wise(f"s3://{bucket}/huge/", ids, ".jpg", "")
    inventory = pa.table({"uri": names, "etag": ids, "size": pa.array(range(n), pa.int32()), "other": ids})
    pq.write_table(inventory, tmp_path / "inventory.parquet", row_group_size=50_000)
    s3fs_client.put(str(tmp_path / "inventory.parquet"), f"{bucket}/inventory.parquet")
    pacsv.write_csv(inventory.select(["uri", "etag", "size"]), tmp_path / "inventory.csv")

    for manifest in (f"s3://{bucket}/inventory.parquet", str(tmp_path / "inventory.csv")):
        table = items([manifest])
        assert table.num_rows == n
        assert uris(table) == sorted(names.to_pylist())
        first = table.slice(0, 1).to_pylist()[0]
        assert first == {"uri": f"s3://{bucket}/huge/0.jpg", "etag": "0", "size_bytes": 0, "modality": "image"}


def test_unusable_inputs_say_what_to_fix(bucket, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        items([f"s3://{bucket}/no-such-prefix"])
    pq.write_table(pa.table({"path": ["a.jpg"]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no 'uri' column"):
        items([str(tmp_path / "bad.parquet")])
    (tmp_path / "bad.csv").write_text("path\na.jpg\n")
    with pytest.raises(InputError, match="no 'uri' column"):
        items([str(tmp_path / "bad.csv")])


def test_s3_listing_streams_page_by_page_and_can_stop_early(s3fs_client, s3_tree, monkeypatch):
    """operations §6 / DESIGN "flat driver memory": a prefix's pages reach the planner as they are
    listed, at most PAGES_AHEAD ahead of it; a consumer that stops early leaves nothing running."""
    monkeypatch.setattr(discover, "PAGES_AHEAD", 1)
    pages = discover.list_tree(s3fs_client, s3_tree.removeprefix("s3://") + "/big")
    first = next(pages)
    assert first.num_rows == discover.PAGE_ROWS
    pages.close()
    rest = list(discover.list_tree(s3fs_client, s3_tree.removeprefix("s3://") + "/big"))
    assert sum(b.num_rows for b in rest) == len(BIG)


def test_a_listing_cut_by_a_transient_error_goes_on_after_its_last_page(s3fs_client, s3_tree, monkeypatch):
    """DESIGN "every item accounted for": a listing part that S3 drops halfway is listed again, and
    the objects already handed to the planner are not handed over twice."""
    listed = s3fs_client._iterdir
    cuts = []

    async def cut_once(bucket, **kwargs):
        seen = 0
        async for info in listed(bucket, **kwargs):
            yield info
            seen += 1
            if not cuts and seen == discover.PAGE_ROWS + 50:
                cuts.append(seen)
                raise OSError("SlowDown: Please reduce your request rate.")

    monkeypatch.setattr(s3fs_client, "_iterdir", cut_once)
    batches = list(discover.list_tree(s3fs_client, s3_tree.removeprefix("s3://") + "/big"))

    got = [u for b in batches for u in b.column("uri").to_pylist()]
    assert cuts, "the fault was never injected"
    assert sorted(got) == sorted(f"{s3_tree}/{name}" for name in BIG)
    assert len(got) == len(set(got))
