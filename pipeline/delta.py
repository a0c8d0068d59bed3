"""Delta Lake (deltalake / delta-rs) behind :class:`pipeline.tables.Table`, and reading a table.

Commits use delta-rs's transaction API on files already written: on S3 its log entries are
created with a conditional PUT, so concurrent writers never lose a commit, and a commit that
carries an application id some commit since its snapshot also set fails (the protocol's fences and
idempotency rest on that; /work/shared/reference/delta-lake.md has what was checked).

Creating a table is race-free: its first log entry (protocol, metadata with the table's id and
schema, commit info, as delta-rs writes them) is created only if no entry is there yet
(``If-None-Match`` on S3, a hard link on local disk), so two writers that create one output at
once end with one table id. delta-rs's own create would retry a lost race as a second
``CREATE TABLE`` commit with another id.

S3 endpoint and credentials come from the standard AWS environment, which delta-rs reads by
itself; only the permission to speak plain HTTP to an ``http://`` endpoint is passed here.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Literal, overload

import pyarrow as pa
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from pipeline import storage
from pipeline.schema import PARTITION
from pipeline.tables import ConcurrentCommit, FileStats, OutputLayout, Tables, table_schema

__all__ = ["DeltaLog", "open_table", "open_tables", "storage_options"]

FIRST_ENTRY = "_delta_log/00000000000000000000.json"


def storage_options(uri: str) -> dict[str, str] | None:
    """What delta-rs needs beyond the AWS environment: leave to speak HTTP to an http:// endpoint."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    return {"AWS_ALLOW_HTTP": "true"} if endpoint.startswith("http://") else {}


@overload
def open_table(uri: str, name: str, *, create: Literal[True]) -> DeltaTable: ...
@overload
def open_table(uri: str, name: str, *, create: bool = False) -> DeltaTable | None: ...
def open_table(uri: str, name: str, *, create: bool = False) -> DeltaTable | None:
    """The Delta table at ``uri`` for reading, created first when ``create`` and missing."""
    options = storage_options(uri)
    try:
        return storage.with_retries(lambda: DeltaTable(uri, storage_options=options))
    except TableNotFoundError:
        if not create:
            return None
    _create(uri, name)
    return storage.with_retries(lambda: DeltaTable(uri, storage_options=options))


def _create(uri: str, name: str) -> None:
    """Create the first log entry of an empty table at ``uri``, unless one is there already."""
    try:
        storage.create_file(storage.join(uri, FIRST_ENTRY), _first_entry(name))
    except FileExistsError:
        pass  # another writer created it first: theirs is the table


def _first_entry(name: str) -> bytes:
    """Version 0 of an empty table of ``name``: the actions delta-rs's create writes."""
    now_ms = int(time.time() * 1000)
    metadata = {"id": str(uuid.uuid4()), "name": name, "description": None,
                "format": {"provider": "parquet", "options": {}},
                "schemaString": DeltaSchema.from_arrow(table_schema(name)).to_json(),
                "partitionColumns": [PARTITION], "createdTime": now_ms, "configuration": {}}
    actions = [
        {"commitInfo": {"timestamp": now_ms, "operation": "CREATE TABLE",
                        "operationParameters": {"mode": "ErrorIfExists", "metadata": json.dumps(metadata)},
                        "clientVersion": "ghostnet-pipeline"}},
        {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
        {"metaData": metadata},
    ]
    return "\n".join(json.dumps(action) for action in actions).encode()


def open_tables(layout: OutputLayout) -> Tables:
    """The output's two tables, created first where they are missing."""
    return Tables(DeltaLog.open(layout.table("predictions"), "predictions", create=True),
                  DeltaLog.open(layout.table("channel_stats"), "channel_stats", create=True))


class DeltaLog:
    """A Delta table at one version, as :class:`pipeline.tables.Table`."""

    def __init__(self, uri: str, name: str, table: DeltaTable) -> None:
        self.uri, self.name, self._table = uri, name, table
        self._apps: dict[str, int | None] = {}  # application versions read at this snapshot

    @overload
    @classmethod
    def open(cls, uri: str, name: str, *, create: Literal[True]) -> DeltaLog: ...
    @overload
    @classmethod
    def open(cls, uri: str, name: str, *, create: bool = False) -> DeltaLog | None: ...
    @classmethod
    def open(cls, uri: str, name: str, *, create: bool = False) -> DeltaLog | None:
        table = open_table(uri, name, create=create)
        return None if table is None else cls(uri, name, table)

    def refresh(self) -> None:
        seen = self._table.version()
        storage.with_retries(self._table.update_incremental)
        if self._table.version() != seen:
            self._apps.clear()

    def clone(self) -> DeltaLog:
        return DeltaLog.open(self.uri, self.name, create=True)

    def version(self) -> int:
        return self._table.version()

    def files(self) -> pa.Table:
        return pa.table(self._table.get_add_actions(flatten=True))

    def app_version(self, app: str) -> int | None:
        if app not in self._apps:
            self._apps[app] = self._table.transaction_version(app)
        return self._apps[app]

    def commit(self, adds: Sequence[FileStats], *, run_date: str, apps: Mapping[str, int],
               metadata: Mapping[str, str]) -> None:
        now_ms = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            AddAction(f.path, f.size, {PARTITION: run_date}, now_ms, True, f.stats) for f in adds]
        properties = CommitProperties(
            app_transactions=[Transaction(app, version) for app, version in apps.items()],
            custom_metadata=dict(metadata),
        )
        self._apps.clear()
        try:
            storage.with_retries(lambda: self._table.create_write_transaction(
                actions, mode="append", schema=table_schema(self.name), partition_by=[PARTITION],
                commit_properties=properties,
            ))
        except CommitFailedError as exc:
            raise ConcurrentCommit(str(exc)) from exc
