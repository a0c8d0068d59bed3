"""``ghostnet-pipeline query`` / ``python -m jobs.query``: SQL over an output with DuckDB.

Exit codes: 0 the query ran (an empty result included), 1 it could not run (unreadable files, a
conversion DuckDB refused), 2 bad SQL or usage error (an output that does not exist).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TextIO

from analytics import QueryResult, require
from analytics.views import VIEWS, query
from jobs._command import Command
from pipeline.errors import RunFailed, UsageError

FORMATS = ("table", "csv", "json")
CELL_WIDTH = 60  # table format only; csv and json carry every character

EXAMPLE = """views: """ + ", ".join(VIEWS) + """, model_agreement (committed runs only)

examples:
  ghostnet-pipeline query s3://labels/photos \\
      "SELECT status, count(*) AS n FROM predictions GROUP BY status ORDER BY n DESC"
  ghostnet-pipeline query ./out "SELECT * FROM channel_drift WHERE shifted" --format json
  ghostnet-pipeline query ./out "SELECT run_id, items, items_per_s FROM runs" --format csv > runs.csv
  ghostnet-pipeline query ./out "SELECT label_a, label_b, rows FROM model_agreement
      WHERE kind = 'disagreement' ORDER BY rows DESC LIMIT 10" --model-a ghostnet_100@9f2c --model-b ghostnet_100@41d0

exit codes: 0 the query ran, 1 it could not run, 2 bad SQL or usage error (no such output)
"""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="the output root the runs wrote to (path or s3://...)")
    parser.add_argument("sql", metavar="SQL", help="one DuckDB query over the views")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (for people, long cells cut), csv or json (an array of objects)")
    for side in ("a", "b"):
        parser.add_argument(f"--model-{side}", metavar="NAME[@DIGEST]",
                            help=f"model {side.upper()} of the model_agreement view: a model name, with a prefix "
                            "of its weights sha256 where it ran with several weights (default: the output's "
                            "only two models)")


def execute(args: argparse.Namespace) -> int:
    duckdb = require("duckdb")
    try:
        result = query(args.output, args.sql, model_a=args.model_a, model_b=args.model_b)
    except duckdb.ProgrammingError as exc:
        raise UsageError(f"bad SQL: {_one_line(exc)}") from exc
    except (duckdb.Error, OSError) as exc:
        raise RunFailed(f"the query could not run: {_one_line(exc)}") from exc
    WRITERS[args.format](result, sys.stdout)
    return 0


def _one_line(exc: BaseException) -> str:
    # A caller can show one line as it is; DuckDB's messages span several.
    return " ".join(str(exc).split())


def write_table(result: QueryResult, out: TextIO) -> None:
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(result.columns)]
    line = "  ".join
    if result.columns:
        print(line(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)).rstrip(), file=out)
        print(line("-" * w for w in widths), file=out)
    for row in cells:
        print(line(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    print(f"({len(cells)} row{'' if len(cells) == 1 else 's'})", file=out)


def _cell(value: Any) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = _text(value)
    text = " ".join(text.split())  # a newline inside a cell would break the columns
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def write_csv(result: QueryResult, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _text(v) for v in row])


def _text(value: Any) -> str:
    """Scalars as they print, dates as ISO text, lists and structs as JSON."""
    plain = _plain(value)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def write_json(result: QueryResult, out: TextIO) -> None:
    objects = [dict(zip(result.columns, map(_plain, row), strict=True)) for row in result.rows]
    json.dump(objects, out, ensure_ascii=False, allow_nan=False, default=str)
    out.write("\n")


def _plain(value: Any) -> Any:
    """``value`` as JSON types: dates as ISO text, NaN and infinities as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


WRITERS = {"table": write_table, "csv": write_csv, "json": write_json}


COMMAND = Command(
    name="query",
    help="SQL over an output (DuckDB)",
    description="Run one SQL query with DuckDB over an output's committed runs.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=execute,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
