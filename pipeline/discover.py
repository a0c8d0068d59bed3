"""Turn ``--input`` URIs into the table of items a run labels: one row per object.

An input is a folder or object-store prefix (listed recursively), a glob (a URI with ``*``),
or a manifest file (``.txt`` with one URI per line, ``.csv``/``.parquet`` with a ``uri``
column). Objects whose extension is not an input extension are not items.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})
MANIFEST_EXTENSIONS = frozenset({".txt", ".csv", ".parquet"})

ITEMS = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("etag", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("modality", pa.string(), nullable=False),
    ]
)


class InputError(ValueError):
    """An ``--input`` that names nothing usable."""


@dataclass(frozen=True)
class _Entry:
    uri: str
    etag: str | None
    size: int | None


def modality_of(uri: str) -> str | None:
    ext = os.path.splitext(uri.lower())[1]
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    return None


def discover(inputs: Iterable[str], *, modality: str = "image") -> pa.Table:
    """List every item named by ``inputs``, sorted by URI, without duplicates.

    ``modality`` is ``image``, ``audio`` or ``auto`` (both, chosen by extension).
    """
    wanted = {"image", "audio"} if modality == "auto" else {modality}
    entries: dict[str, _Entry] = {}
    for uri in inputs:
        for entry in _expand(uri):
            entries.setdefault(entry.uri, entry)
    rows = sorted(
        ((e, m) for e in entries.values() if (m := modality_of(e.uri)) in wanted),
        key=lambda row: row[0].uri,
    )
    return pa.table(
        {
            "uri": [e.uri for e, _ in rows],
            "etag": [e.etag for e, _ in rows],
            "size_bytes": [e.size for e, _ in rows],
            "modality": [m for _, m in rows],
        },
        schema=ITEMS,
    )


def _expand(uri: str) -> list[_Entry]:
    fs, path = storage.filesystem(uri)
    if "*" in path:
        found = storage.with_retries(lambda: fs.glob(path, detail=True))
        return [_entry(fs, p, info) for p, info in found.items() if info.get("type") == "file"]
    info = _info(fs, path)
    if info is None:
        raise InputError(f"input {storage.redact_uri(uri)!r} does not exist; check the path or prefix")
    if info.get("type") == "directory":
        found = storage.with_retries(lambda: fs.find(path, detail=True))
        return [_entry(fs, p, i) for p, i in found.items()]
    if os.path.splitext(path.lower())[1] in MANIFEST_EXTENSIONS:
        return _from_manifest(uri)
    return [_entry(fs, path, info)]


def _info(fs, path: str) -> dict | None:
    try:
        return storage.with_retries(lambda: fs.info(path))
    except FileNotFoundError:
        return None


def _entry(fs, path: str, info: dict) -> _Entry:
    return _Entry(storage.to_uri(fs, path), _etag(info), info.get("size"))


def _etag(info: dict) -> str | None:
    for key in ("ETag", "etag", "md5Hash"):
        if info.get(key):
            return str(info[key]).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    if mtime is None:
        return None
    stamp = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
    return f"mtime-{int(stamp * 1e9)}"


def _from_manifest(uri: str) -> list[_Entry]:
    data = storage.read_bytes(uri)
    ext = os.path.splitext(uri.lower())[1]
    if ext == ".parquet":
        table = pq.read_table(io.BytesIO(data))
        if "uri" not in table.column_names:
            raise InputError(f"manifest {uri!r} has no 'uri' column (columns: {table.column_names})")
        uris = table.column("uri").to_pylist()
    elif ext == ".csv":
        reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
        if reader.fieldnames is None or "uri" not in reader.fieldnames:
            raise InputError(f"manifest {uri!r} has no 'uri' column (header: {reader.fieldnames})")
        uris = [row["uri"] for row in reader]
    else:
        uris = [line.strip() for line in data.decode("utf-8").splitlines()]
    return [_stat(u) for u in uris if u and not u.startswith("#")]


def _stat(uri: str) -> _Entry:
    """A manifest entry; one that does not exist stays an item and becomes a read_error row."""
    fs, path = storage.filesystem(uri)
    info = _info(fs, path)
    if info is None:
        return _Entry(storage.to_uri(fs, path), None, None)
    return _entry(fs, path, info)
