"""How two models label the same items: the ``model_agreement`` view and its typed reading.

A model identity is a (``model``, ``weights_sha256``) pair. Two identities compare over the items
both labeled: the same ``uri``, ``etag`` and ``size_bytes``, and for audio the same window
(``segment``). Where one identity labeled an item several times (runs with ``--reprocess``), its
latest labeling counts: the rows of the run whose rows of that item were written last (by
``processed_at``). Only rows that are ``ok`` on both sides compare; the others are counted.

The view is long form, one row per ``kind`` (:data:`MODEL_AGREEMENT`):

- ``summary``: one row: rows compared, top-1 agreement, top-k overlap, and the rows that did not
  compare (labeled by one side only, not ok on a side, windows that do not line up);
- ``label``: per top-1 label either side gave: of the compared rows either side called it, the
  share both did;
- ``disagreement``: per (A's label, B's label) pair that differ: how many compared rows, and their
  share of the compared rows.

Example:
    >>> from analytics import Output
    >>> labels = Output("s3://labels/photos")                                        # doctest: +SKIP
    >>> labels.model_agreement("ghostnet_100@9f2c", "ghostnet_100@41d0").top1_agreement  # doctest: +SKIP
    0.934
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

import analytics
from pipeline.errors import UsageError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = [
    "MODEL_AGREEMENT",
    "TOPK",
    "Agreement",
    "Disagreement",
    "LabelAgreement",
    "ModelIdentity",
    "compare",
    "create_view",
    "identities",
    "pick",
]

TOPK = 5  # top-k overlap compares each side's first k labels
VIEW = "model_agreement"
PAIRS = "_model_agreement_pairs"  # one row per compared key, for the report's figures


@dataclass(frozen=True, order=True)
class ModelIdentity:
    """What labeled a row: the model architecture and the sha256 of its weights."""

    model: str
    weights_sha256: str

    def __str__(self) -> str:
        """``NAME@DIGEST``, a sha256 cut to 12 characters (as a NAME@DIGEST argument takes it)."""
        digest = self.weights_sha256
        return f"{self.model}@{digest[:12] if re.fullmatch('[0-9a-f]{64}', digest) else digest}"

    def matches(self, spec: str) -> bool:
        """``spec`` is ``NAME`` or ``NAME@DIGEST``, DIGEST a prefix of the weights' sha256."""
        name, _, digest = spec.partition("@")
        return self.model == name and self.weights_sha256.startswith(digest)


MODEL_AGREEMENT = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("model_a", pa.string(), nullable=False),
        pa.field("weights_sha256_a", pa.string(), nullable=False),
        pa.field("model_b", pa.string(), nullable=False),
        pa.field("weights_sha256_b", pa.string(), nullable=False),
        pa.field("label_a", pa.string()),
        pa.field("label_b", pa.string()),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("agreed", pa.int64()),
        pa.field("rows_a", pa.int64()),
        pa.field("rows_b", pa.int64()),
        pa.field("top1_agreement", pa.float64()),
        pa.field("topk_overlap", pa.float64()),
        pa.field("k", pa.int32()),
        pa.field("share", pa.float64()),
        pa.field("rows_only_a", pa.int64()),
        pa.field("rows_only_b", pa.int64()),
        pa.field("rows_not_ok_a", pa.int64()),
        pa.field("rows_not_ok_b", pa.int64()),
        pa.field("rows_misaligned", pa.int64()),
    ],
    metadata={"ghostnet_pipeline.table": VIEW},
)

DESCRIPTIONS: dict[str, str] = {
    "kind": "`summary` (one row), `label` (one per top-1 label) or `disagreement` (one per pair of differing"
    " top-1 labels)",
    "model_a": "model A's architecture name",
    "weights_sha256_a": "sha256 of model A's weights",
    "model_b": "model B's architecture name",
    "weights_sha256_b": "sha256 of model B's weights",
    "label_a": "`label`: the label; `disagreement`: A's top-1 label; null for `summary`",
    "label_b": "`label`: the label (as label_a); `disagreement`: B's top-1 label; null for `summary`",
    "rows": "compared rows (both sides ok) that the row counts: all of them (`summary`), those either side"
    " called this label (`label`), those with this pair of labels (`disagreement`)",
    "agreed": "of `rows`, those both sides gave the same top-1 label (`summary`) or this label (`label`);"
    " null for `disagreement`",
    "rows_a": "`label`: compared rows A called this label; null otherwise",
    "rows_b": "`label`: compared rows B called this label; null otherwise",
    "top1_agreement": "agreed / rows (`summary`, `label`); null when rows is 0 and for `disagreement`",
    "topk_overlap": "`summary`: mean over the compared rows of (labels among both A's and B's first k) / k;"
    " null when nothing compared and for the other kinds",
    "k": f"`summary`: the k of topk_overlap, {TOPK} or the shortest top-k list compared if shorter; null"
    " otherwise",
    "share": "`disagreement`: rows / the compared rows; null otherwise",
    "rows_only_a": "`summary`: rows of items A labeled and B did not; null otherwise",
    "rows_only_b": "`summary`: rows of items B labeled and A did not; null otherwise",
    "rows_not_ok_a": "`summary`: rows of items both labeled that are not ok on A's side (or missing there"
    " because A's item failed); null otherwise",
    "rows_not_ok_b": "`summary`: the same for B; null otherwise",
    "rows_misaligned": "`summary`: ok on both sides but not the same window (audio windows cut otherwise);"
    " null otherwise",
}


@dataclass(frozen=True)
class LabelAgreement:
    """One top-1 label: of the compared rows either model called it, the share both did."""

    label: str
    rows: int
    rows_a: int
    rows_b: int
    agreed: int
    top1_agreement: float


@dataclass(frozen=True)
class Disagreement:
    """Compared rows that A called ``label_a`` and B called ``label_b``."""

    label_a: str
    label_b: str
    rows: int
    share: float  # of the compared rows


@dataclass(frozen=True)
class Agreement:
    """How models ``a`` and ``b`` labeled the rows both labeled ok; :attr:`table` is the view's rows."""

    a: ModelIdentity
    b: ModelIdentity
    rows: int  # compared: ok on both sides
    agreed: int  # of them, with the same top-1 label
    top1_agreement: float | None  # agreed / rows; None when nothing compared
    topk_overlap: float | None
    k: int | None
    rows_only_a: int
    rows_only_b: int
    rows_not_ok_a: int
    rows_not_ok_b: int
    rows_misaligned: int
    labels: tuple[LabelAgreement, ...]  # most compared rows first
    disagreements: tuple[Disagreement, ...]  # most frequent first
    table: pa.Table = field(repr=False, compare=False)

    def to_pandas(self) -> pd.DataFrame:
        """The view's rows with Arrow-backed columns: a null stays null, never NaN."""
        pd = analytics.require("pandas")
        return self.table.to_pandas(types_mapper=pd.ArrowDtype)

    @classmethod
    def from_table(cls, table: pa.Table) -> Agreement:
        rows = table.to_pylist()
        summary = next(r for r in rows if r["kind"] == "summary")
        labels = sorted((r for r in rows if r["kind"] == "label"), key=lambda r: (-r["rows"], r["label_a"]))
        disagreements = sorted((r for r in rows if r["kind"] == "disagreement"),
                               key=lambda r: (-r["rows"], r["label_a"], r["label_b"]))
        return cls(
            a=ModelIdentity(summary["model_a"], summary["weights_sha256_a"]),
            b=ModelIdentity(summary["model_b"], summary["weights_sha256_b"]),
            **{name: summary[name] for name in ("rows", "agreed", "top1_agreement", "topk_overlap", "k",
                                                "rows_only_a", "rows_only_b", "rows_not_ok_a", "rows_not_ok_b",
                                                "rows_misaligned")},
            labels=tuple(LabelAgreement(r["label_a"], r["rows"], r["rows_a"], r["rows_b"], r["agreed"],
                                        r["top1_agreement"]) for r in labels),
            disagreements=tuple(Disagreement(r["label_a"], r["label_b"], r["rows"], r["share"])
                                for r in disagreements),
            table=table,
        )


def identities(con: duckdb.DuckDBPyConnection, source: str = "predictions") -> list[ModelIdentity]:
    """Every (model, weights) of ``source`` (a view or table of prediction rows), in order."""
    found = con.execute(f"SELECT DISTINCT model, weights_sha256 FROM {source} ORDER BY ALL").fetchall()
    return [ModelIdentity(model, digest) for model, digest in found]


def pick(found: Sequence[ModelIdentity], a: str | ModelIdentity | None = None,
         b: str | ModelIdentity | None = None) -> tuple[ModelIdentity, ModelIdentity]:
    """The two identities to compare among ``found``: each given as ``NAME``, ``NAME@DIGEST`` (a prefix
    of the weights' sha256) or an identity; one left out is the only other one ``found`` holds.

    Raises:
        UsageError: a name matches none or several, both name the same, or one is left out and
            ``found`` holds other than exactly one more.
    """
    chosen = [_match(found, spec) if spec is not None else None for spec in (a, b)]
    if chosen[0] is not None and chosen[0] == chosen[1]:
        raise UsageError(f"model A and model B are both {chosen[0]}: compare two different (model, weights)")
    rest = [i for i in found if i not in chosen]
    if any(c is None for c in chosen) and len(rest) != chosen.count(None):
        held = _listing(found)
        raise UsageError(f"the output holds {len(found)} (model, weights) {_plural(len(found))}"
                         f"{': ' + held if held else ''}; model agreement compares two: name model A and model B as "
                         "NAME or NAME@DIGEST, a prefix of the weights sha256 (query: --model-a, --model-b)")
    fill = iter(rest)
    first, second = (c if c is not None else next(fill) for c in chosen)
    return first, second


def _match(found: Sequence[ModelIdentity], spec: str | ModelIdentity) -> ModelIdentity:
    if isinstance(spec, ModelIdentity):
        hits = [spec] if spec in found else []
    else:
        hits = [i for i in found if i.matches(spec)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise UsageError(f"no rows of {spec} in the output; it holds: {_listing(found) or 'no rows'}")
    raise UsageError(f"{spec} matches {len(hits)} (model, weights): {_listing(hits)}; add more of the "
                     "weights digest: NAME@DIGEST")


def _listing(found: Sequence[ModelIdentity]) -> str:
    return ", ".join(f"{i.model}@{i.weights_sha256}" for i in found)


def _plural(n: int) -> str:
    return "identity" if n == 1 else "identities"


def create_view(con: duckdb.DuckDBPyConnection, a: str | ModelIdentity | None = None,
                b: str | ModelIdentity | None = None, *, k: int = TOPK,
                source: str = "predictions") -> tuple[ModelIdentity, ModelIdentity]:
    """(Re)create the ``model_agreement`` view on ``con``: the two identities of ``source`` (a view or table
    of prediction rows) that :func:`pick` chooses, compared; beneath it ``_model_agreement_pairs``, one row
    per key either side labeled.

    Returns:
        The identities compared, A then B.

    Raises:
        UsageError: as :func:`pick`, or ``k`` below 1.
    """
    if k < 1:
        raise UsageError(f"top-k overlap needs k >= 1, not {k}")
    first, second = pick(identities(con, source), a, b)
    pair = {"a_model": first.model, "a_weights": first.weights_sha256,
            "b_model": second.model, "b_weights": second.weights_sha256}
    literals = {key: _literal(value) for key, value in pair.items()}
    con.execute(_PAIRS_SQL.format(pairs=PAIRS, source=source, **literals))
    con.execute(_AGREEMENT_SQL.format(view=VIEW, pairs=PAIRS, k=int(k), **literals))
    return first, second


def compare(con: duckdb.DuckDBPyConnection, a: str | ModelIdentity | None = None,
            b: str | ModelIdentity | None = None, *, k: int = TOPK, source: str = "predictions") -> Agreement:
    """:func:`create_view`, then its rows read as an :class:`Agreement`."""
    create_view(con, a, b, k=k, source=source)
    # execute, not sql: on a connection with a half-fetched result (the report's) sql would refuse to run
    rows = con.execute(f"SELECT {', '.join(MODEL_AGREEMENT.names)} FROM {VIEW}").fetchall()
    return Agreement.from_table(pa.Table.from_pylist([dict(zip(MODEL_AGREEMENT.names, row, strict=True))
                                                      for row in rows], schema=MODEL_AGREEMENT))


def _literal(text: str) -> str:
    # Identities come from the data: quote them as SQL string literals (a view cannot take parameters).
    return "'" + text.replace("'", "''") + "'"


# Each side's latest labeling of each item (the run whose rows of it were written last), then A's and
# B's rows paired by item and window. An item one side labeled has all its rows there; a window missing
# on one side of an item both labeled is either its failure (one not-ok row stands for the item) or a
# window cut otherwise.
_PAIRS_SQL = """
CREATE OR REPLACE VIEW {pairs} AS
WITH sides AS (
    SELECT CASE WHEN model = {a_model} AND weights_sha256 = {a_weights} THEN 'a' ELSE 'b' END AS side,
           uri, etag, size_bytes, segment, start_s, end_s, status, label, score, topk_labels, run_id,
           max(processed_at) OVER (PARTITION BY model, weights_sha256, uri, etag, size_bytes, run_id) AS labeled_at
    FROM {source}
    WHERE (model = {a_model} AND weights_sha256 = {a_weights}) OR (model = {b_model} AND weights_sha256 = {b_weights})
),
latest AS (
    SELECT * FROM sides
    QUALIFY dense_rank() OVER (PARTITION BY side, uri, etag, size_bytes ORDER BY labeled_at DESC, run_id DESC) = 1
),
a AS (SELECT * FROM latest WHERE side = 'a'),
b AS (SELECT * FROM latest WHERE side = 'b'),
paired AS (
    SELECT coalesce(a.uri, b.uri) AS uri, coalesce(a.etag, b.etag) AS etag,
           coalesce(a.size_bytes, b.size_bytes) AS size_bytes, coalesce(a.segment, b.segment) AS segment,
           a.status AS status_a, b.status AS status_b, a.label AS label_a, b.label AS label_b,
           a.score AS score_a, b.score AS score_b, a.topk_labels AS topk_a, b.topk_labels AS topk_b,
           a.start_s IS NOT DISTINCT FROM b.start_s AND a.end_s IS NOT DISTINCT FROM b.end_s AS aligned
    FROM a FULL JOIN b
      ON a.uri = b.uri AND a.etag IS NOT DISTINCT FROM b.etag AND a.size_bytes IS NOT DISTINCT FROM b.size_bytes
     AND a.segment = b.segment
),
items AS (
    SELECT *,
           count(status_a) OVER item > 0 AS item_a, count(status_b) OVER item > 0 AS item_b,
           coalesce(bool_or(status_a <> 'ok') OVER item, false) AS item_failed_a,
           coalesce(bool_or(status_b <> 'ok') OVER item, false) AS item_failed_b
    FROM paired
    WINDOW item AS (PARTITION BY uri, etag, size_bytes)
),
judged AS (
    SELECT *,
           item_a AND item_b AND (status_a <> 'ok' OR (status_a IS NULL AND item_failed_a)) AS not_ok_a,
           item_a AND item_b AND (status_b <> 'ok' OR (status_b IS NULL AND item_failed_b)) AS not_ok_b
    FROM items
)
SELECT uri, etag, size_bytes, segment, status_a, status_b, label_a, label_b, score_a, score_b, topk_a, topk_b,
       not_ok_a, not_ok_b,
       CASE WHEN NOT item_b THEN 'only_a'
            WHEN NOT item_a THEN 'only_b'
            WHEN not_ok_a OR not_ok_b THEN 'not_ok'
            WHEN status_a IS NULL OR status_b IS NULL OR NOT aligned THEN 'misaligned'
            ELSE 'compared' END AS outcome
FROM judged
"""

# The long form over the pairs: one summary row, one row per label, one per differing pair of labels.
_AGREEMENT_SQL = """
CREATE OR REPLACE VIEW {view} AS
WITH compared AS (
    SELECT * FROM {pairs} WHERE outcome = 'compared'
),
counts AS (
    SELECT count(*) FILTER (outcome = 'compared') AS rows,
           count(*) FILTER (outcome = 'compared' AND label_a = label_b) AS agreed,
           count(*) FILTER (outcome = 'only_a') AS rows_only_a,
           count(*) FILTER (outcome = 'only_b') AS rows_only_b,
           count(*) FILTER (not_ok_a) AS rows_not_ok_a,
           count(*) FILTER (not_ok_b) AS rows_not_ok_b,
           count(*) FILTER (outcome = 'misaligned') AS rows_misaligned
    FROM {pairs}
),
depth AS (
    SELECT CASE WHEN count(*) > 0 THEN least({k}, min(least(len(topk_a), len(topk_b)))) END AS k FROM compared
),
overlap AS (
    SELECT avg(len(list_intersect(topk_a[1:depth.k], topk_b[1:depth.k])) / depth.k) AS topk_overlap
    FROM compared, depth
),
summary AS (
    SELECT 'summary' AS kind, NULL AS label_a, NULL AS label_b, rows, agreed, NULL AS rows_a, NULL AS rows_b,
           CASE WHEN rows > 0 THEN agreed / rows END AS top1_agreement, topk_overlap, k, NULL AS share,
           rows_only_a, rows_only_b, rows_not_ok_a, rows_not_ok_b, rows_misaligned
    FROM counts, depth, overlap
),
labels AS (
    SELECT label, count(*) FILTER (side = 'a') AS rows_a, count(*) FILTER (side = 'b') AS rows_b,
           count(*) FILTER (side = 'a' AND label_a = label_b) AS agreed
    FROM (SELECT 'a' AS side, label_a AS label, label_a, label_b FROM compared
          UNION ALL
          SELECT 'b' AS side, label_b AS label, label_a, label_b FROM compared)
    GROUP BY label
),
per_label AS (
    SELECT 'label' AS kind, label AS label_a, label AS label_b, rows_a + rows_b - agreed AS rows, agreed,
           rows_a, rows_b, agreed / (rows_a + rows_b - agreed) AS top1_agreement, NULL AS topk_overlap,
           NULL AS k, NULL AS share, NULL AS rows_only_a, NULL AS rows_only_b, NULL AS rows_not_ok_a,
           NULL AS rows_not_ok_b, NULL AS rows_misaligned
    FROM labels
),
differing AS (
    SELECT 'disagreement' AS kind, label_a, label_b, count(*) AS rows, NULL AS agreed, NULL AS rows_a,
           NULL AS rows_b, NULL AS top1_agreement, NULL AS topk_overlap, NULL AS k,
           count(*) / any_value(counts.rows) AS share, NULL AS rows_only_a, NULL AS rows_only_b,
           NULL AS rows_not_ok_a, NULL AS rows_not_ok_b, NULL AS rows_misaligned
    FROM compared, counts
    WHERE label_a <> label_b
    GROUP BY label_a, label_b
)
SELECT CAST(kind AS VARCHAR) AS kind, {a_model} AS model_a, {a_weights} AS weights_sha256_a,
       {b_model} AS model_b, {b_weights} AS weights_sha256_b,
       CAST(label_a AS VARCHAR) AS label_a, CAST(label_b AS VARCHAR) AS label_b, CAST(rows AS BIGINT) AS rows,
       CAST(agreed AS BIGINT) AS agreed, CAST(rows_a AS BIGINT) AS rows_a, CAST(rows_b AS BIGINT) AS rows_b,
       CAST(top1_agreement AS DOUBLE) AS top1_agreement, CAST(topk_overlap AS DOUBLE) AS topk_overlap,
       CAST(k AS INTEGER) AS k, CAST(share AS DOUBLE) AS share,
       CAST(rows_only_a AS BIGINT) AS rows_only_a, CAST(rows_only_b AS BIGINT) AS rows_only_b,
       CAST(rows_not_ok_a AS BIGINT) AS rows_not_ok_a, CAST(rows_not_ok_b AS BIGINT) AS rows_not_ok_b,
       CAST(rows_misaligned AS BIGINT) AS rows_misaligned
FROM (SELECT * FROM summary UNION ALL BY NAME SELECT * FROM per_label UNION ALL BY NAME SELECT * FROM differing)
"""
