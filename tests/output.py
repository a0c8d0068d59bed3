"""Reading an output in tests the way a user's reader does: through the Delta tables' logs."""

from __future__ import annotations

import pyarrow as pa

from pipeline import record as records
from pipeline.delta import open_table
from pipeline.record import RunRecord
from pipeline.tables import OutputLayout, table_schema


def committed(output: str, table: str = "predictions") -> pa.Table:
    """Every committed row of ``table`` (with ``run_date``), as deltalake reads it."""
    layout = OutputLayout.of(output)
    found = open_table(layout.table(table), table)
    return found.to_pyarrow_dataset().to_table() if found is not None else table_schema(table).empty_table()


def run_records(output: str) -> list[RunRecord]:
    return records.load_all(OutputLayout.of(output).runs)


def rows_per_run(output: str) -> dict[str, int]:
    counts = committed(output).group_by("run_id").aggregate([([], "count_all")]).to_pylist()
    return {c["run_id"]: c["count_all"] for c in counts}
