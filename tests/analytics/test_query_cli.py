"""``ghostnet-pipeline query`` on synthetic committed runs: formats, empty results, exit codes."""

from __future__ import annotations

import csv
import io
import json

import pytest

from jobs import query
from tests.analytics import synthetic

LAYERS = {"blocks.1.0.se": 4}


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("query") / "out")
    rows = synthetic.predictions("r1", {"ok": 3, "decode_error": 2}, prefix="/data/in, with \"quotes\"\n")
    synthetic.commit_run(root, "r1", rows, synthetic.channel_stats("r1", synthetic.gates(LAYERS, 0)))
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = query.COMMAND.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_csv_round_trips_awkward_values(capsys, output):
    sql = "SELECT uri, status, topk_labels, score, run_date FROM predictions ORDER BY uri"
    code, out, err = run_cli(capsys, output, sql, "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and err == ""
    assert [r["status"] for r in rows] == ["decode_error"] * 2 + ["ok"] * 3
    assert rows[0]["uri"].startswith('/data/in, with "quotes"\n/') and rows[0]["score"] == ""
    assert len(json.loads(rows[-1]["topk_labels"])) == len(synthetic.LABELS)
    assert rows[0]["run_date"] == "2026-11-27"


def test_json_is_an_array_of_objects(capsys, output):
    code, out, _ = run_cli(capsys, output, "SELECT * FROM predictions ORDER BY uri", "--format", "json")

    rows = json.loads(out)
    assert code == 0 and len(rows) == 5
    assert rows[-1]["channel_weights"][0]["layer"] == "blocks.1.0.se"
    assert rows[-1]["processed_at"].startswith("2026-11-27T02:00:00")
    assert rows[0]["label"] is None


def test_table_is_aligned_and_counts_rows(capsys, output):
    sql = "SELECT status, count(*) AS n FROM predictions GROUP BY ALL ORDER BY n"
    code, out, _ = run_cli(capsys, output, sql)

    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["status", "n"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["decode_error", "2"] and lines[3].split() == ["ok", "3"]
    assert lines[-1] == "(2 rows)"


def test_long_cells_are_cut_in_table_format_only(capsys, output):
    sql = "SELECT repeat('x', 200) AS long"
    _, table, _ = run_cli(capsys, output, sql)
    _, as_json, _ = run_cli(capsys, output, sql, "--format", "json")

    assert max(len(line) for line in table.splitlines()) == query.CELL_WIDTH
    assert json.loads(as_json) == [{"long": "x" * 200}]


@pytest.mark.parametrize(("fmt", "expected"), [("json", "[]\n"), ("csv", "status,n\n"), ("table", None)])
def test_empty_results_are_still_valid(capsys, output, fmt, expected):
    sql = "SELECT status, count(*) AS n FROM predictions WHERE false GROUP BY ALL"
    code, out, _ = run_cli(capsys, output, sql, "--format", fmt)

    assert code == 0
    if expected is None:
        assert out.splitlines()[-1] == "(0 rows)"
    else:
        assert out == expected


def test_an_output_without_runs_answers_with_empty_views(capsys, tmp_path):
    code, out, _ = run_cli(capsys, str(tmp_path), "SELECT count(*) AS n FROM predictions", "--format", "json")

    assert code == 0 and json.loads(out) == [{"n": 0}]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC * FROM predictions", "Parser Error"),
        ("SELECT * FROM no_such_view", "Catalog Error"),
        ("SELECT no_such_column FROM predictions", "Binder Error"),
    ],
)
def test_bad_sql_exits_2_with_duckdbs_message_on_one_line(capsys, output, sql, message):
    code, out, err = run_cli(capsys, output, sql)

    assert code == 2 and out == ""
    assert err.startswith("error: bad SQL: ") and message in err
    assert err.count("\n") == 1


def test_failures_to_run_exit_1_and_a_missing_output_is_a_usage_error(capsys, output, tmp_path):
    """README exit codes: 2 for a usage error, as `report` does for the same missing output."""
    conversion = run_cli(capsys, output, "SELECT CAST(status AS INTEGER) FROM predictions")
    missing = run_cli(capsys, str(tmp_path / "no-such-output"), "SELECT 1")

    assert conversion[0] == 1 and "Conversion Error" in conversion[2] and conversion[2].count("\n") == 1
    assert missing[0] == 2 and "does not exist" in missing[2]


def test_registered_in_the_cli():
    from jobs.cli import build_parser

    args = build_parser().parse_args(["query", "out", "SELECT 1", "--format", "csv"])

    assert (args.output, args.sql, args.format) == ("out", "SELECT 1", "csv")
    assert args.handler is query.COMMAND and query.COMMAND.handler is query.execute
