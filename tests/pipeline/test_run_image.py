"""The image pipeline end to end on real components: moto S3, a local Ray, deltalake and DuckDB reading back."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from analytics import views
from analytics.views import query
from jobs import cli
from pipeline.config import RunConfig
from pipeline.delta import open_table
from pipeline.run import run
from pipeline.schema import PREDICTIONS
from tests import corpus
from tests.conftest import SECRET_KEY
from tests.output import committed, run_records

pytestmark = pytest.mark.usefixtures("ray_local")


def upload(fs, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        fs.pipe_file(f"{bucket}/{prefix}/{name}", data)


def test_mixed_corpus_from_s3_to_s3(s3fs_client, bucket):
    cases = corpus.mixed_images()
    upload(s3fs_client, bucket, "in", {name: data for name, (data, _) in cases.items()})
    s3fs_client.pipe_file(f"{bucket}/in/notes.txt", b"not an item: no input extension")
    output = f"s3://{bucket}/out"

    result = run(RunConfig(inputs=(f"s3://{bucket}/in",), output=output, model="ghostnet_050",
                           weights="random", num_classes=10, max_error_rate=1.0, run_date="2026-11-27"))

    assert result.committed and result.items == len(cases)
    table = committed(output)
    rows = {r["uri"].rsplit("/in/", 1)[1]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted(cases), "exactly one row per object, nothing else"
    for name, (_, expected) in cases.items():
        row = rows[name]
        assert row["status"] == expected, (name, row["status"], row["error"])
        if expected == "ok":
            assert row["error"] is None and row["label"] is not None
            assert len(row["topk_ids"]) == 5 and row["channel_weights"]
            assert all(0.0 <= cw["min"] <= cw["max"] <= 1.0 for cw in row["channel_weights"])
        else:
            assert row["error"] and row["label"] is None
    assert set(table.column("run_date").to_pylist()) == {date(2026, 11, 27)}
    assert table.schema.remove_metadata().field("channel_weights").type == PREDICTIONS.field("channel_weights").type

    [record] = run_records(output)
    ok = sum(1 for _, s in cases.values() if s == "ok")
    assert record.committed and record.rows_per_status["ok"] == ok
    assert record.not_items == {".txt": 1}, "what is not an item is counted, by extension"

    con = views.connect(output)
    assert con.execute("SELECT DISTINCT count FROM channel_stats").fetchall() == [(ok,)]

    keys = s3fs_client.find(f"{bucket}/out")
    assert keys and all(s3fs_client.info(k)["size"] > 0 for k in keys), "no zero-byte folder markers"
    everything = b"".join(s3fs_client.cat_file(p) for p in keys)
    assert SECRET_KEY.encode() not in everything


def awkward_images() -> dict[str, bytes]:
    """An animated GIF, a 16-bit grey PNG and an EXIF-rotated JPEG, each beside a plain PNG of the
    pixels it must be labeled by (its first frame, its values scaled to 8 bits, upright) and one of
    the pixels it must not (the second frame, the values clipped, the image as stored)."""
    first, second = corpus.gradient(120, 90, seed=1), corpus.gradient(120, 90, seed=2)
    gif = io.BytesIO()
    first.save(gif, "GIF", save_all=True, append_images=[second], duration=100)
    frames = Image.open(io.BytesIO(gif.getvalue()))
    frames.seek(1)
    second_frame = frames.convert("RGB")
    frames.seek(0)
    ramp = np.tile(np.arange(128, dtype=np.uint16) * 516, (96, 1))  # 0 .. 65532
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = corpus.encode(corpus.gradient(160, 80, seed=3), "JPEG", quality=95, exif=exif.tobytes())
    as_stored = Image.open(io.BytesIO(rotated))
    return {
        "animated.gif": gif.getvalue(),
        "animated-first.png": corpus.encode(frames.convert("RGB"), "PNG"),
        "animated-second.png": corpus.encode(second_frame, "PNG"),
        "grey16.png": corpus.encode(Image.fromarray(ramp), "PNG"),
        "grey16-scaled.png": corpus.encode(Image.fromarray((ramp / 65535 * 255 + 0.5).astype(np.uint8)), "PNG"),
        "grey16-clipped.png": corpus.encode(Image.fromarray(np.minimum(ramp, 255).astype(np.uint8)), "PNG"),
        "rotated.jpg": rotated,
        "rotated-upright.png": corpus.encode(ImageOps.exif_transpose(as_stored).convert("RGB"), "PNG"),
        "rotated-as-stored.png": corpus.encode(as_stored.convert("RGB"), "PNG"),
    }


def rows_by_name(output: str) -> dict[str, dict]:
    result = query(output, "SELECT uri, status, error, label, embedding FROM predictions")
    return {Path(row[0]).name: dict(zip(result.columns, row, strict=True)) for row in result.rows}


def test_cli_run_on_a_folder_labels_awkward_images_and_a_rerun_adds_nothing(tmp_path, capsys):
    """docs/reliability.md through `ghostnet-pipeline run` on a local folder and a manifest:
    Bad inputs: an animated GIF is labeled by its first frame, a 16-bit grey PNG scaled (not clipped),
    an EXIF-rotated JPEG upright (each row's embedding is that of the plain PNG of those pixels);
    an object listed in a manifest that does not exist is a `read_error` row; the same object named
    by the folder and the manifest is one row. Faults: the same command again labels nothing, exit 0."""
    images = tmp_path / "in"
    images.mkdir()
    for name, data in awkward_images().items():
        (images / name).write_bytes(data)
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{images / 'rotated.jpg'}\n{images / 'gone.jpg'}\n")
    output = str(tmp_path / "out")
    command = ["run", "--input", str(images), "--input", str(manifest), "--output", output,
               "--model", "ghostnet_050", "--weights", "random", "--num-classes", "10", "--embeddings"]

    assert cli.main(command) == 0
    first = capsys.readouterr().out
    assert cli.main(command) == 0
    again = capsys.readouterr().out

    assert "committed run" in first and "nothing to label" in again
    rows = rows_by_name(output)
    assert sorted(rows) == sorted([*awkward_images(), "gone.jpg"]), "one row per object, the overlap once"
    assert rows["gone.jpg"]["status"] == "read_error" and "not found" in rows["gone.jpg"]["error"]
    assert all(row["status"] == "ok" for name, row in rows.items() if name != "gone.jpg")
    for item, same, other in [("animated.gif", "animated-first.png", "animated-second.png"),
                              ("grey16.png", "grey16-scaled.png", "grey16-clipped.png"),
                              ("rotated.jpg", "rotated-upright.png", "rotated-as-stored.png")]:
        embedding = np.array(rows[item]["embedding"])
        to_same = np.abs(embedding - rows[same]["embedding"]).max()
        to_other = np.abs(embedding - rows[other]["embedding"]).max()
        assert to_same < 1e-4 * np.abs(embedding).max() < to_other, (item, to_same, to_other)
    [(count, distinct)] = query(output, "SELECT count(*), count(DISTINCT uri) FROM predictions").rows
    assert count == distinct == 10
    assert query(output, "SELECT count(*) FROM runs").rows == [(1,)]


def test_output_files_hold_rows_per_file_in_row_groups_of_row_group_size(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for i in range(70):
        corpus.gradient(40 + i, 30, seed=i).save(images / f"g{i:02d}.jpg")
    config = RunConfig(inputs=(str(images),), output=str(tmp_path / "out"), model="ghostnet_050",
                       weights="random", num_classes=4, batch_size=8, rows_per_file=32, row_group_size=16)

    run(config)

    table = open_table(str(tmp_path / "out" / "predictions"), "predictions")
    files = [pq.ParquetFile(uri).metadata for uri in table.file_uris()]
    rows = sorted((m.num_rows for m in files), reverse=True)
    assert sum(rows) == 70
    assert len(rows) < 70 // 8  # fewer files than model batches: blocks were bundled
    assert all(r >= 32 for r in rows[:-2]), rows  # only the shard's last bundles may be short
    groups = [m.row_group(g).num_rows for m in files for g in range(m.num_row_groups)]
    assert max(groups) == 16 and sum(groups) == 70, groups


def test_a_run_commits_shard_by_shard_and_statistics_reconcile(tmp_path):
    """docs/operations.md, choosing the shard size: a run of N items commits ceil(N / --shard-size)
    shards, each one Delta transaction, with channel statistics whose counts equal its ok rows."""
    images = tmp_path / "in"
    images.mkdir()
    for i in range(11):
        corpus.gradient(48, 40, seed=i).save(images / f"g{i:02d}.png")
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    output = str(tmp_path / "out")

    record = run(RunConfig(inputs=(str(images),), output=output, model="ghostnet_050", weights="random",
                           num_classes=4, shard_size=4, max_error_rate=0.5))

    assert record.committed and record.shards_total == record.shards_committed == 3
    assert [s.items for s in sorted(record.shards, key=lambda s: s.shard)] == [4, 4, 4]
    table = open_table(f"{output}/predictions", "predictions")
    writes = [h for h in table.history() if h["operation"] == "WRITE"]
    assert sorted(int(h["shard"]) for h in writes) == [0, 1, 2], "one transaction per shard"
    rows = committed(output)
    assert rows.num_rows == 12 and pc.count_distinct(rows["uri"]).as_py() == 12
    shard_sums = committed(output, "channel_stats")
    per_shard = shard_sums.group_by("shard").aggregate([("count", "max")]).to_pylist()
    ok_per_shard = {s.shard: s.rows_per_status.get("ok", 0) for s in record.shards}
    assert {r["shard"]: r["count_max"] for r in per_shard} == ok_per_shard


def test_cli_exit_codes_for_unusable_inputs_and_too_many_failures(tmp_path, capsys):
    """docs/reliability.md through `ghostnet-pipeline run`. Bad inputs: a manifest without a `uri`
    column, an input that does not exist: exit 2, the message names the columns or the path.
    Faults: more than --max-error-rate of the items fail: exit 1, nothing committed, a message with
    how many and which kinds."""
    images = tmp_path / "in"
    images.mkdir()
    corpus.gradient(64, 64).save(images / "good.png")
    for i in range(3):
        (images / f"bad{i}.jpg").write_bytes(b"garbage")
    (tmp_path / "no-uri.csv").write_text(f"path,size\n{images / 'good.png'},1\n")
    output = str(tmp_path / "out")

    def cli_run(*flags: str) -> tuple[int, str]:
        code = cli.main(["run", "--output", output, "--model", "ghostnet_050", "--weights", "random",
                         "--num-classes", "3", *flags])
        return code, capsys.readouterr().err

    code, err = cli_run("--input", str(tmp_path / "no-uri.csv"))
    assert code == 2 and "has no 'uri' column (columns: ['path', 'size'])" in err, err
    code, err = cli_run("--input", str(tmp_path / "missing"))
    assert code == 2 and f"input '{tmp_path / 'missing'}' does not exist" in err, err
    code, err = cli_run("--input", str(images), "--max-error-rate", "0.5")
    assert code == 1 and re.search(r"3 of the 4 items of shard 0 failed .*decode_error", err), err
    assert query(output, "SELECT count(*) FROM predictions").rows == [(0,)]
    assert query(output, "SELECT status FROM runs").rows == [("failed",)]
    assert not list((tmp_path / "out" / "predictions").glob("run_date=*/*.parquet")), "its files were removed"


def test_top1_matches_timm_on_photos(tmp_path):
    timm = pytest.importorskip("timm")
    import torch
    from timm.data import create_transform, resolve_data_config

    import ghostnet

    photos = corpus.photos()
    images = tmp_path / "photos"
    images.mkdir()
    for name, image in photos.items():
        image.save(images / f"{name}.jpg", quality=95)
    reference = timm.create_model("ghostnet_100", pretrained=False).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    weights = tmp_path / "ghostnet_100.safetensors"
    model = ghostnet.create_model("ghostnet_100")
    model.load_state_dict(reference.state_dict())
    ghostnet.save_weights(model, weights)

    result = run(RunConfig(inputs=(str(images),), output=str(tmp_path / "out"), model="ghostnet_100",
                           weights=str(weights), topk=3))

    transform = create_transform(**resolve_data_config({}, model=reference))
    table = committed(str(tmp_path / "out"))
    assert result.committed and table.num_rows == len(photos)
    for row in table.to_pylist():
        image = photos[Path(row["uri"]).stem]
        with torch.no_grad():
            logits = reference(transform(image).unsqueeze(0))
        assert row["status"] == "ok"
        assert row["topk_ids"][0] == int(logits.argmax()), row["uri"]


def test_cli_run_exit_codes_and_no_secret_in_logs(tmp_path, s3fs_client, bucket):
    for i in range(3):
        s3fs_client.pipe_file(f"{bucket}/in/img{i}.png", corpus.encode(corpus.gradient(50, 40, i), "PNG"))
    out = f"s3://{bucket}/cli-out"
    cmd = [sys.executable, "-m", "jobs.cli", "run", "--input", f"s3://{bucket}/in", "--output", out,
           "--model", "ghostnet_050", "--weights", "random", "--num-classes", "5"]

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    usage = subprocess.run([*cmd[:4], "--output", out], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "committed run" in done.stdout and "ok 3" in done.stdout
    assert usage.returncode == 2 and "missing --input, --model" in usage.stderr
    assert SECRET_KEY not in done.stdout + done.stderr + usage.stderr


def test_a_single_channel_model_labels_colour_and_grey_images_end_to_end(tmp_path):
    """#17 item 6, README "any GhostNet checkpoint": a ghostnet_050 checkpoint with in_chans=1 labels
    RGB, RGBA and grey inputs through the whole run; each image reaches the model as timm's
    loader makes it (Pillow's grey conversion, then the resize and crop), so top-k equals the
    checkpoint applied to that by hand."""
    import torch

    import ghostnet
    from ghostnet.transforms import resize_crop

    model = ghostnet.create_model("ghostnet_050", num_classes=6, in_chans=1)
    ghostnet.init_random(model, 7)
    weights = tmp_path / "grey.safetensors"
    ghostnet.save_weights(model, weights)
    images = tmp_path / "in"
    images.mkdir()
    photos = corpus.photos()
    cases = {"colour.jpg": photos["flower"], "alpha.png": photos["flower"].convert("RGBA"),
             "grey.png": next(iter(photos.values())).convert("L")}
    for name, image in cases.items():
        image.save(images / name)

    result = run(RunConfig(inputs=(str(images),), output=str(tmp_path / "out"), model="ghostnet_050",
                           weights=str(weights), topk=3))

    table = committed(str(tmp_path / "out"))
    assert result.committed and table.num_rows == len(cases)
    reference = ghostnet.create_model("ghostnet_050", weights=str(weights)).eval()
    for row in table.to_pylist():
        assert row["status"] == "ok", row["error"]
        crop = resize_crop(Image.open(images / Path(row["uri"]).name).convert("RGB"), reference.meta)
        assert crop.shape[-1] == 1
        pixels = torch.from_numpy(crop).unsqueeze(0)
        with torch.no_grad():
            logits = reference(ghostnet.normalize(pixels, meta=reference.meta))
        assert row["topk_ids"] == logits.topk(3).indices[0].tolist(), row["uri"]


def test_hub_weights_without_a_pin_label_a_whole_run_pinned_to_the_file_the_hub_gave(tmp_path, ray_tmp):
    """#26: `--weights hf-hub:...` without `--weights-sha256` ended as an internal error (the digest
    of the loaded file was dropped). The hub is a local cache here (HF_HUB_OFFLINE, no network),
    laid out as huggingface_hub keeps it; the rows carry the digest of the file it holds."""
    weights = Path(__file__).resolve().parents[2] / "ghostnet" / "data" / "demo_image.safetensors"
    cache, commit = tmp_path / "hub", "0" * 40
    repo = cache / "models--timm--ghostnet_050.demo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(weights, repo / "snapshots" / commit / "model.safetensors")
    images = tmp_path / "in"
    images.mkdir()
    for i in range(3):
        corpus.gradient(60, 40, seed=i).save(images / f"p{i}.png")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TMPDIR": ray_tmp}

    done = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--input", str(images), "--output",
                           str(tmp_path / "out"), "--model", "ghostnet_050",
                           "--weights", "hf-hub:timm/ghostnet_050.demo"],
                          env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    rows = committed(str(tmp_path / "out"))
    assert rows.num_rows == 3 and set(rows["status"].to_pylist()) == {"ok"}
    assert set(rows["weights_sha256"].to_pylist()) == {hashlib.sha256(weights.read_bytes()).hexdigest()}
