"""Analytics over real pipeline output: a local Ray, the seeded random ghostnet_050, moto S3.

Two outputs, each built once per module: the mixed corpus (good and broken images) written
to S3, and three local runs for drift (gradients, the same gradients again, checkerboards).
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import statistics
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

from analytics import report, views
from jobs import query
from pipeline import files
from pipeline.config import RunConfig
from pipeline.record import RunRecord
from pipeline.run import run
from pipeline.tables import OutputLayout
from tests import corpus
from tests.analytics.test_report import assert_screenshot_shows_the_report, screenshot
from tests.output import rows_per_run

pytestmark = pytest.mark.usefixtures("ray_local")

RUN_DATE = "2026-11-27"


def label(inputs: Path, output: str, **overrides) -> RunRecord:
    result = run(RunConfig(inputs=(str(inputs),), output=output, model="ghostnet_050", weights="random",
                           num_classes=4, max_error_rate=1.0, run_date=RUN_DATE, **overrides))
    assert result.committed, result.error
    return result


def checkerboard(seed: int, width: int = 128, height: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    step = int(rng.integers(6, 24))
    y, x = np.mgrid[0:height, 0:width]
    on = ((x // step + y // step) % 2).astype(bool)[..., None]
    pixels = np.where(on, rng.integers(0, 256, 3), rng.integers(0, 256, 3))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def mixed(s3fs_client, tmp_path_factory) -> tuple[str, dict[str, str]]:
    """The mixed corpus labeled into S3; returns the output and each input's expected status."""
    folder = tmp_path_factory.mktemp("mixed")
    cases = corpus.mixed_images()
    for name, (data, _) in cases.items():
        (folder / name).write_bytes(data)
    bucket = "analytics-" + secrets.token_hex(4)
    s3fs_client.mkdir(bucket)
    output = f"s3://{bucket}/out"
    label(folder, output)
    return output, {str(folder / name): status for name, (_, status) in cases.items()}


@pytest.fixture(scope="module")
def drift_runs(tmp_path_factory) -> tuple[str, list[str]]:
    """Gradients, the same gradients again (reprocessed), then checkerboards: three run ids."""
    base = tmp_path_factory.mktemp("drift")
    gradients, boards = base / "gradients", base / "boards"
    gradients.mkdir()
    boards.mkdir()
    for i in range(12):
        corpus.gradient(128, 96, seed=i).save(gradients / f"g{i:02d}.png")
        checkerboard(i).save(boards / f"c{i:02d}.png")
    output = str(base / "out")
    runs = [label(gradients, output), label(gradients, output, reprocess=True), label(boards, output)]
    return output, [r.run_id for r in runs]


def cli_json(capsys, output: str, sql: str) -> list[dict]:
    assert query.COMMAND.main([output, sql, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_counts_by_status_are_exact(capsys, mixed):
    output, expected = mixed
    sql = "SELECT status, count(*) AS n FROM predictions GROUP BY status ORDER BY status"

    as_json = cli_json(capsys, output, sql)
    assert query.COMMAND.main([output, sql, "--format", "csv"]) == 0
    as_csv = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    statuses = cli_json(capsys, output, "SELECT uri, status FROM predictions")

    assert {r["status"]: r["n"] for r in as_json} == dict(Counter(expected.values()))
    assert {r["status"]: int(r["n"]) for r in as_csv} == dict(Counter(expected.values()))
    assert {r["uri"]: r["status"] for r in statuses} == expected


def test_runs_view_agrees_with_the_rows(capsys, mixed):
    output, expected = mixed
    (row,) = cli_json(capsys, output, "SELECT * FROM runs")

    assert row["items"] == row["rows"] == len(expected)
    assert row["rows_ok"] == sum(1 for s in expected.values() if s == "ok")
    assert row["rows_decode_error"] == sum(1 for s in expected.values() if s == "decode_error")
    assert row["items_per_s"] > 0 and row["inference_s"] > 0
    assert sum(e["count"] for e in row["top_errors"]) == len(expected) - row["rows_ok"]


def test_raw_duckdb_glob_sees_each_input_once(s3fs_client, mixed):
    output, expected = mixed
    con = duckdb.connect()
    con.register_filesystem(s3fs_client)

    count, distinct, dates = con.execute(
        f"SELECT count(*), count(DISTINCT uri), list(DISTINCT run_date) "
        f"FROM read_parquet('{output}/predictions/run_date=*/*.parquet', hive_partitioning = true)"
    ).fetchone()

    assert count == distinct == len(expected)
    assert [str(d) for d in dates] == [RUN_DATE]


def test_uncommitted_files_stay_out_of_the_views(s3fs_client, mixed):
    """docs/analytics.md: readers through the Delta log see committed shards only; a raw glob
    also sees the files of a shard whose driver died before committing it."""
    output, expected = mixed
    copy = output + "-copy"
    s3fs_client.copy(output.removeprefix("s3://"), copy.removeprefix("s3://"), recursive=True)
    layout = OutputLayout.of(copy)
    rows = views.connect(copy).sql("SELECT * EXCLUDE (run_date) FROM predictions").arrow()
    files.write_parquet(layout.table("predictions"), rows.read_all() if hasattr(rows, "read_all") else rows,
                        run_id="died", attempt="0" * 12, run_date=RUN_DATE, shard=0, digest="0" * 16)
    s3fs_client.invalidate_cache()

    con = views.connect(copy)

    assert con.execute("SELECT count(*), count(DISTINCT uri) FROM predictions").fetchone() == (
        len(expected), len(expected))
    raw = duckdb.connect()
    raw.register_filesystem(s3fs_client)
    glob = f"{copy}/predictions/run_date=*/*.parquet"
    assert raw.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone() == (2 * len(expected),)


def drift_by_layer(output: str, run_id: str) -> dict[str, dict]:
    con = views.connect(output)
    relation = con.sql(f"SELECT * FROM channel_drift WHERE run_id = '{run_id}'")
    return {r["layer"]: r for r in (dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall())}


def test_drift_is_near_zero_on_the_same_data(drift_runs):
    output, (first, again, _) = drift_runs

    same = drift_by_layer(output, again)

    assert same and {r["previous_run_id"] for r in same.values()} == {first}
    assert max(r["js_divergence"] for r in same.values()) < 1e-9
    assert not any(r["shifted"] for r in same.values())


def test_drift_is_clearly_higher_after_the_inputs_change(drift_runs):
    output, (_, again, boards) = drift_runs

    changed = drift_by_layer(output, boards)
    js = [r["js_divergence"] for r in changed.values()]

    assert {r["previous_run_id"] for r in changed.values()} == {again}
    assert len(changed) == len(drift_by_layer(output, again))
    assert statistics.median(js) > 3 * views.JS_SHIFT_BITS
    assert sum(r["shifted"] for r in changed.values()) > len(changed) / 2


def test_report_on_real_runs_renders_in_a_browser(drift_runs, tmp_path):
    """docs/analytics.md, "The run report": on real runs every section has its figure, the stage breakdown
    and the label drift against the previous run included, and the page renders offline."""
    output, (_, again, boards) = drift_runs
    page, png = tmp_path / "report.html", tmp_path / "report.png"

    built = report.write(output, str(page), png_dir=str(tmp_path / "figures"))

    assert built.run.run_id == boards and built.previous_run_id == again
    assert len(built.figures) == 8 and len(list((tmp_path / "figures").iterdir())) == 8
    by_slug = {s.slug: s for s in built.sections}
    assert {stage for stage, _ in by_slug["stages"].rows} >= {"fetch", "decode", "model", "write", "commit"}
    assert "bound by: " in by_slug["stages"].note and by_slug["label_drift"].note.startswith(f"Against run {again}")
    html = page.read_text()
    assert "shifted" in html
    rows = rows_per_run(output)[boards]
    assert rows == 12, rows  # the twelve checkerboards, one row each
    assert f"<h1>Run {boards}</h1>" in html
    assert f"<td>items</td><td>{rows} labeled of {rows} listed (0 already labeled)</td>" in html
    assert f"<td>rows</td><td>{rows}</td>" in html and f"<td>previous run</td><td>{again}</td>" in html
    assert f"{rows} rows for {rows} items. No errors." in html
    assert html.count('src="data:image/png;base64,') == 8
    screenshot(page, png, tmp_path / "profile")
    assert_screenshot_shows_the_report(png)
