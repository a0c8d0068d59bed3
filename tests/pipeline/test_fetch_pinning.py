"""Fetch pins what was listed (#23): an object that changed between the listing and the read is a
``read_error`` saying so, never a row labeled from other bytes than its etag names. On S3 every
read asks ``If-Match`` on the listed etag (moto's server answers 412 as S3 does); a local file's
listed etag is its mtime, compared after the read."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

import ghostnet
from ghostnet.audio import DEFAULT_FRONTEND
from pipeline import discover, storage
from pipeline.audio import read_and_decode_audio
from pipeline.decode import read_and_decode
from pipeline.schema import SHARD
from tests import corpus


def listed(uri: str) -> pa.Table:
    """The items of ``uri`` as the listing gave them, as the decode stage receives them."""
    rows = pa.concat_tables(pa.Table.from_batches([b]) for b in discover.list_inputs([uri]))
    modality = discover.modality_column(rows["uri"])
    return rows.append_column("modality", modality).append_column(SHARD, pa.array([0] * rows.num_rows, pa.int32()))


def png(seed: int) -> bytes:
    return corpus.encode(corpus.gradient(40, 30, seed=seed), "PNG")


def wav(seconds: float) -> bytes:
    sink = io.BytesIO()
    sf.write(sink, np.sin(np.arange(int(16000 * seconds)) / 7.0).astype(np.float32), 16000, format="WAV")
    return sink.getvalue()


@pytest.fixture(scope="module")
def meta() -> ghostnet.ModelMeta:
    return ghostnet.create_model("ghostnet_050", num_classes=3).meta


def test_a_local_file_changed_after_listing_is_a_read_error(tmp_path, meta):
    (tmp_path / "same.png").write_bytes(png(0))
    (tmp_path / "changed.png").write_bytes(png(1))
    items = listed(str(tmp_path))
    time.sleep(0.01)
    (tmp_path / "changed.png").write_bytes(png(2))
    os.utime(tmp_path / "changed.png")

    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in read_and_decode(items, metas=[meta]).to_pylist()}

    assert rows["same.png"]["status"] == "ok"
    assert rows["changed.png"]["status"] == "read_error"
    assert rows["changed.png"]["error"] == storage.CHANGED


def test_an_s3_object_replaced_after_listing_is_a_read_error(s3fs_client, bucket, meta):
    s3fs_client.pipe_file(f"{bucket}/in/same.png", png(0))
    s3fs_client.pipe_file(f"{bucket}/in/changed.png", png(1))
    s3fs_client.pipe_file(f"{bucket}/in/clip.wav", wav(3.0))
    items = listed(f"s3://{bucket}/in")
    s3fs_client.pipe_file(f"{bucket}/in/changed.png", png(2))
    s3fs_client.pipe_file(f"{bucket}/in/clip.wav", wav(2.0))
    images = items.filter(pa.compute.equal(items["modality"], "image"))
    sounds = items.filter(pa.compute.equal(items["modality"], "audio"))

    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in read_and_decode(images, metas=[meta]).to_pylist()}
    windows = [r for b in read_and_decode_audio(sounds, frontends=[DEFAULT_FRONTEND]) for r in b.to_pylist()]

    assert rows["same.png"]["status"] == "ok"
    assert (rows["changed.png"]["status"], rows["changed.png"]["error"]) == ("read_error", storage.CHANGED)
    assert [(w["status"], w["error"]) for w in windows] == [("read_error", storage.CHANGED)], windows


def test_a_manifest_etag_of_its_own_making_is_not_pinned(tmp_path, meta):
    """A manifest may carry etags the store did not give (an inventory of another system): those
    cannot name a version, so the read is not pinned and the item is labeled."""
    (tmp_path / "a.png").write_bytes(png(0))
    items = listed(str(tmp_path)).set_column(1, "etag", pa.array(["v7"], pa.string()))

    [row] = read_and_decode(items, metas=[meta]).to_pylist()

    assert row["status"] == "ok"
