"""``ghostnet-pipeline migrate``: an output written by the previous layout (tests/data/old_layout_output,
made by ghostnet-pipeline at commit 58133f3 with `run --input 4 PNGs + 1 broken --weights random
--num-classes 3 --run-date 2026-11-20`) becomes Delta tables without a data file rewritten.

Backs docs/operations.md, "Migrating an output of the old layout".
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from analytics.views import query
from jobs import cli

OLD = Path(__file__).resolve().parents[1] / "data" / "old_layout_output"


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


@pytest.fixture
def old_output(tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(OLD, copy)
    # a file the old protocol never published (no record lists it): it must stay out of the tables
    stray = copy / "predictions" / "run_date=2026-11-20" / "never-published-00000.parquet"
    shutil.copy(next((copy / "predictions" / "run_date=2026-11-20").glob("*.parquet")), stray)
    return copy


def test_migrate_adopts_the_committed_files_as_they_are_and_query_reads_them(old_output, capsys):
    before = digests(old_output)

    assert cli.main(["migrate", str(old_output)]) == 0
    said = capsys.readouterr().out
    assert cli.main(["migrate", str(old_output)]) == 0
    again = capsys.readouterr().out

    assert "migrated 1 runs (2 files, 5 prediction rows)" in said
    assert "never published" in said and "never-published-00000.parquet" in said
    assert "migrated 0 runs" in again and "1 runs were migrated before" in again
    assert digests(old_output) == before, "no data file was rewritten"
    out = str(old_output)
    assert query(out, "SELECT status, count(*) FROM predictions GROUP BY ALL ORDER BY ALL").rows == [
        ("decode_error", 1), ("ok", 4)]
    assert query(out, "SELECT DISTINCT count FROM channel_stats").rows == [(4,)]
    assert query(out, "SELECT status, items, rows FROM runs").rows == [("committed", 5, 5)]


def test_an_output_without_old_runs_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()

    assert cli.main(["migrate", str(tmp_path / "empty")]) == 2
    assert "holds no run of the old layout" in capsys.readouterr().err
