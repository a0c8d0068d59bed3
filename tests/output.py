"""Reading an output in tests the way a user's reader does: through the Delta tables' logs."""

from __future__ import annotations

import pyarrow as pa

from pipeline import record as records
from pipeline import storage
from pipeline.delta import open_table
from pipeline.record import RunRecord
from pipeline.tables import OutputLayout, table_schema


def committed(output: str, table: str = "predictions") -> pa.Table:
    """Every committed row of ``table`` (with ``run_date``), as deltalake reads it."""
    uri = OutputLayout.of(output).table(table)
    found = open_table(uri, table)
    if found is None:
        return table_schema(table).empty_table()
    return found.to_pyarrow_dataset(filesystem=storage.arrow_filesystem(uri)).to_table()


def run_records(output: str) -> list[RunRecord]:
    return records.load_all(OutputLayout.of(output).runs)


def rows_per_run(output: str) -> dict[str, int]:
    counts = committed(output).group_by("run_id").aggregate([([], "count_all")]).to_pylist()
    return {c["run_id"]: c["count_all"] for c in counts}
