"""An output's committed tables from Python, for notebooks and scripts: Arrow, pandas or DuckDB.

    >>> from analytics import Output
    >>> labels = Output("s3://labels/photos")                                   # doctest: +SKIP
    >>> df = labels.predictions(run_date="2026-11-30", model="ghostnet_100").to_pandas()  # doctest: +SKIP

Only committed rows are read (through the tables' Delta logs), and only the files a filter can
match: ``run_date`` is the partition column, and the other filters skip files by their statistics.
pandas and DuckDB are imported when asked for, so reading Arrow needs neither.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

import analytics
from analytics import agreement
from analytics.agreement import Agreement, ModelIdentity
from pipeline import record as records
from pipeline import storage
from pipeline.delta import open_table
from pipeline.errors import UsageError
from pipeline.record import RunRecord
from pipeline.tables import OutputLayout, table_schema

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["Output", "QueryResult", "Selection", "Where"]


@dataclass(frozen=True)
class QueryResult:
    """Rows of a SQL query, with their column names."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Selection:
    """The rows of one committed table that a filter matches; nothing is read until asked."""

    dataset: ds.Dataset
    columns: tuple[str, ...] | None = None

    def to_arrow(self) -> pa.Table:
        return self.dataset.to_table(columns=self._columns())

    def to_batches(self) -> Iterator[pa.RecordBatch]:
        """Batch by batch, for selections larger than memory."""
        yield from self.dataset.to_batches(columns=self._columns())

    def to_pandas(self) -> pd.DataFrame:
        """A DataFrame with Arrow-backed columns: a null stays null (``pd.NA``), never NaN or
        the string "nan", and list columns stay lists."""
        pd = analytics.require("pandas")
        return self.to_arrow().to_pandas(types_mapper=pd.ArrowDtype)

    def to_duckdb(self, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyRelation:
        """A DuckDB relation over the selection (on ``con``, or a new in-memory connection)."""
        duckdb = analytics.require("duckdb")
        relation = (con or duckdb.connect()).from_arrow(self.dataset)
        return relation.select(*self.columns) if self.columns else relation

    def _columns(self) -> list[str] | None:
        return list(self.columns) if self.columns else None


class Where(TypedDict, total=False):
    """What a selection keeps: one ``run_date`` or the dates ``since``..``until`` (both included,
    ``YYYY-MM-DD`` or a date), a run, a model, a weights digest (the ``weights_sha256`` column)."""

    run_date: str | date
    since: str | date
    until: str | date
    run_id: str
    model: str
    weights_sha256: str


class Output:
    """The committed tables of one output root (a local path or an fsspec URI such as ``s3://``)."""

    def __init__(self, uri: str) -> None:
        fs, path = storage.filesystem(uri)
        if not storage.with_retries(lambda: fs.exists(path)):
            raise UsageError(f"output {storage.redact_uri(uri)} does not exist; check the path or URI")
        self.uri = uri
        self.layout = OutputLayout.of(uri)

    def predictions(self, *, status: str | None = None, columns: list[str] | tuple[str, ...] | None = None,
                    **where: Unpack[Where]) -> Selection:
        """Prediction rows matching ``where`` (see :class:`Where`) and, if given, one status."""
        matching = _matching(**where, status=status)
        return Selection(self._dataset("predictions", matching), tuple(columns) if columns else None)

    def channel_stats(self, **where: Unpack[Where]) -> Selection:
        """The channel statistics table as committed, matching ``where`` (see :class:`Where`): per
        (run, shard, layer, channel) sums (``count``, ``sum``, ``sum_sq``, ``min``, ``max``); the
        ``channel_stats`` view of ``query`` adds the shards up per run."""
        return Selection(self._dataset("channel_stats", _matching(**where)))

    def model_agreement(self, a: str | ModelIdentity | None = None, b: str | ModelIdentity | None = None, *,
                        k: int = agreement.TOPK, **where: Unpack[Where]) -> Agreement:
        """How model ``a`` and model ``b`` label the items both labeled (docs/analytics.md, "Comparing models").

        Example:
            >>> labels = Output("s3://labels/photos")                                  # doctest: +SKIP
            >>> result = labels.model_agreement("ghostnet_100@9f2c", "ghostnet_100@41d0",  # doctest: +SKIP
            ...                                 since="2026-11-01")
            >>> result.top1_agreement, result.rows_only_b, result.disagreements[:3]     # doctest: +SKIP

        Args:
            a, b: ``NAME``, ``NAME@DIGEST`` (a prefix of the weights sha256) or a :class:`ModelIdentity`;
                one left out is the only other (model, weights) of the rows, both left out the only two.
            k: the depth of the top-k overlap.
            where: which rows take part (see :class:`Where`), e.g. ``since`` for last month's labels.

        Returns:
            The figures, typed, and the ``model_agreement`` view's rows as ``.table`` / ``.to_pandas()``.

        Raises:
            UsageError: the two models are not clear: the message lists the (model, weights) there are.
        """
        duckdb = analytics.require("duckdb")
        con = duckdb.connect()
        try:
            con.register("predictions", self._dataset("predictions", _matching(**where)))
            return agreement.compare(con, a, b, k=k)
        finally:
            con.close()

    def runs(self) -> list[RunRecord]:
        """Every run record of the output (committed, failed and running), oldest first."""
        return records.load_all(self.layout.runs)

    def _dataset(self, name: str, where: pc.Expression | None) -> ds.Dataset:
        uri = self.layout.table(name)
        table = open_table(uri, name)
        dataset = (table.to_pyarrow_dataset(filesystem=storage.arrow_filesystem(uri)) if table is not None
                   else ds.dataset(table_schema(name).empty_table()))
        return dataset.filter(where) if where is not None else dataset


def _matching(*, run_date: str | date | None = None, since: str | date | None = None, until: str | date | None = None,
              **equal: str | None) -> pc.Expression | None:
    if run_date is not None and (since is not None or until is not None):
        raise UsageError("give run_date, or since and until, not both")
    day = pc.field("run_date")
    terms = [pc.field(column) == value for column, value in equal.items() if value is not None]
    if run_date is not None:
        terms.append(day == _date(run_date))
    if since is not None:
        terms.append(day >= _date(since))
    if until is not None:
        terms.append(day <= _date(until))
    return functools.reduce(operator.and_, terms) if terms else None


def _date(value: str | date) -> pa.Scalar:
    try:
        return pa.scalar(value if isinstance(value, date) else date.fromisoformat(value), pa.date32())
    except ValueError:
        raise UsageError(f"{value!r} is not a date; write it as YYYY-MM-DD") from None
