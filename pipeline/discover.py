"""Turn ``--input`` URIs into the table of items a run labels: one row per object.

An input is a folder or object-store prefix (listed recursively), a glob (a URI with ``*``, ``**``
crossing folders), or a manifest file (``.txt`` with one URI per line, ``.csv``/``.parquet`` with
a ``uri`` column). Objects whose extension is not an input extension are not items.

Listings stream into Arrow: each page of a listing (at most 1,000 objects on S3, one folder
elsewhere) becomes a record batch at once, so the driver never holds a Python object per item.
An S3 prefix is split by its sub-prefixes, a level or two down, and the parts are listed
concurrently; other filesystems are walked folder by folder on a thread pool. Manifests are read
in batches; one with ``etag`` and ``size_bytes`` (or ``size``) columns, like an S3 Inventory
report, is taken as it is, otherwise each URI is looked up, concurrently.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import IO, Any, Literal, Protocol, TypeAlias, TypedDict, TypeGuard, TypeVar

import fsspec.asyn
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.errors import InputError
from pipeline.kinds import KINDS
from pipeline.schema import KEYS

__all__ = ["LISTING", "FileSystem", "ObjectInfo", "PagedFileSystem", "list_inputs", "list_tree", "modality_column"]

MANIFEST_EXTENSIONS = frozenset({".txt", ".csv", ".parquet"})

LISTING = KEYS

CONCURRENCY = 32  # listing requests (S3) or folder walks (elsewhere) in flight at once
SPLIT_LEVELS = 2  # how far down an S3 prefix is split into sub-prefixes listed side by side
MANIFEST_BATCH_ROWS = 65_536
PAGE_ROWS = 1000  # an S3 listing page

T = TypeVar("T")


class ObjectInfo(TypedDict, total=False):
    """What an fsspec listing or ``info`` says about one entry; which version key a backend fills
    differs (S3 ``ETag``, GCS ``md5Hash``, local ``mtime``), see :func:`_etag`."""

    name: str
    type: str  # "file" or "directory"
    size: int | None
    ETag: str
    etag: str
    md5Hash: str
    mtime: float | datetime
    LastModified: datetime
    created: float | datetime


class FileSystem(Protocol):
    """The part of an fsspec filesystem that listing uses."""

    def info(self, path: str) -> ObjectInfo: ...

    def ls(self, path: str, detail: Literal[True]) -> list[ObjectInfo]: ...

    def open(self, path: str, mode: str) -> IO[Any]: ...


class PagedFileSystem(FileSystem, Protocol):
    """An fsspec filesystem that lists a prefix page by page on its event loop (s3fs)."""

    loop: asyncio.AbstractEventLoop

    def split_path(self, path: str) -> tuple[str, str, str | None]: ...

    def _iterdir(self, bucket: str, *, prefix: str, delimiter: str) -> AsyncIterator[ObjectInfo]: ...


# A page of listing handed on, by the coroutines that list one part of a prefix.
Emit = Callable[[pa.RecordBatch], Awaitable[None]]


def list_inputs(inputs: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """Every object named by ``inputs`` as batches of (uri, etag, size_bytes), in input order.

    Objects that are not items are listed too (the planner counts them); an input that names
    nothing raises :class:`InputError` when it is reached.
    """
    for uri in inputs:
        yield from _expand(uri)


def modality_column(uris: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The :class:`~pipeline.kinds.Modality` of each URI by its extension (:data:`pipeline.kinds.KINDS`),
    or null where it is not an item."""
    column: pa.Array | pa.ChunkedArray | pa.Scalar = pa.scalar(None, pa.string())
    for modality, kind in reversed(KINDS.items()):
        alternatives = "|".join(re.escape(e) for e in sorted(kind.extensions))
        ending = pc.match_substring_regex(uris, f"({alternatives})$", ignore_case=True)
        column = pc.if_else(ending, modality.value, column)
    return column


def _expand(uri: str) -> Iterator[pa.RecordBatch]:
    """The batches of one input; a manifest streams, a folder or prefix comes listed whole."""
    fs, path = storage.filesystem(uri)
    if "*" in path:
        yield from _glob(fs, path)
        return
    info = _info(fs, path)
    if info is None:
        raise InputError(f"input {storage.redact_uri(uri)!r} does not exist; check the path or prefix")
    if info.get("type") == "directory":
        yield from list_tree(fs, path)
    elif os.path.splitext(path.lower())[1] in MANIFEST_EXTENSIONS:
        yield from _from_manifest(uri)
    else:
        yield _batch(fs, [info])


def list_tree(fs: FileSystem, root: str, max_depth: int | None = None) -> Iterator[pa.RecordBatch]:
    """Every object below ``root`` (at most ``max_depth`` folders down), as batches of (uri, etag,
    size_bytes) that stream: at most :data:`PAGES_AHEAD` pages wait for the consumer."""
    root = root.rstrip("/")
    if _lists_in_pages(fs):
        return _stream_s3(fs, root, max_depth)
    return _walk(fs, root, max_depth)


def _lists_in_pages(fs: FileSystem) -> TypeGuard[PagedFileSystem]:
    return bool(getattr(fs, "async_impl", False)) and hasattr(fs, "_iterdir")


def _glob(fs: FileSystem, pattern: str) -> Iterator[pa.RecordBatch]:
    """Objects matching ``pattern``: the folder above its first wildcard, listed, then matched in Arrow."""
    root = pattern[: pattern.index("*")].rsplit("/", 1)[0]
    if _info(fs, root) is None:
        return
    depth = None if "**" in pattern else pattern[len(root) + 1 :].count("/") + 1
    regex = _glob_regex(pattern)
    for batch in list_tree(fs, root, depth):
        uris = batch.column("uri")
        paths = uris if storage.is_local(fs) else pc.replace_substring_regex(uris, "^[a-z0-9+]+://", "")
        yield batch.filter(pc.match_substring_regex(paths, regex))


def _glob_regex(pattern: str) -> str:
    """``**`` crosses folders, ``*`` and ``?`` stay within one (fsspec's and the shell's meaning)."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.lstrip("/"))
    wildcard = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return "^/?" + "".join(wildcard.get(p, re.escape(p)) for p in parts) + "$"


def _info(fs: FileSystem, path: str) -> ObjectInfo | None:
    try:
        return storage.with_retries(lambda: fs.info(path))
    except FileNotFoundError:
        return None


def _batch(fs: FileSystem, infos: list[ObjectInfo]) -> pa.RecordBatch:
    """One page of listing dicts as a record batch; the dicts are dropped right after."""
    files = [i for i in infos if i.get("type", "file") == "file"]
    return pa.record_batch(
        [
            pa.array([storage.to_uri(fs, i["name"]) for i in files], pa.string()),
            pa.array([_etag(i) for i in files], pa.string()),
            pa.array([i.get("size") for i in files], pa.int64()),
        ],
        schema=LISTING,
    )


def _etag(info: ObjectInfo) -> str | None:
    version = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    if version:
        return str(version).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    if mtime is None:
        return None
    stamp = mtime.timestamp() if isinstance(mtime, datetime) else float(mtime)
    return f"mtime-{int(stamp * 1e9)}"


# --- S3: paged listings of sub-prefixes, side by side ---------------------------------------------

PAGES_AHEAD = 64  # listing pages (S3) or folders (elsewhere) listed ahead of the consumer


# What the listing hands the consumer: a page, the error that stopped it, or None at its end.
Page: TypeAlias = "pa.RecordBatch | BaseException | None"


def _stream_s3(fs: PagedFileSystem, root: str, max_depth: int | None) -> Iterator[pa.RecordBatch]:
    """Run the listing on fsspec's event loop and hand its pages over one at a time; the listing
    waits while :data:`PAGES_AHEAD` pages are not taken yet."""
    pages: asyncio.Queue[Page] = fsspec.asyn.sync(fs.loop, _new_queue)
    room = asyncio.Semaphore(PAGES_AHEAD)

    async def emit(batch: pa.RecordBatch) -> None:
        await room.acquire()
        pages.put_nowait(batch)

    async def take() -> Page:
        page = await pages.get()
        room.release()
        return page

    listing = asyncio.run_coroutine_threadsafe(_list_s3(fs, root, max_depth, emit, pages), fs.loop)
    try:
        while (page := fsspec.asyn.sync(fs.loop, take)) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page
    finally:
        listing.cancel()


async def _new_queue() -> asyncio.Queue[Page]:
    return asyncio.Queue()


async def _list_s3(fs: PagedFileSystem, root: str, max_depth: int | None, emit: Emit,
                   pages: asyncio.Queue[Page]) -> None:
    """List ``root`` a level or two down by delimiter, then its sub-prefixes flat, side by side;
    ends the stream with None, or with the error that stopped it."""
    try:
        bucket, key, _ = fs.split_path(root)
        prefixes = [key + "/" if key else ""]
        limit = asyncio.Semaphore(CONCURRENCY)
        for _ in range(max_depth or SPLIT_LEVELS):
            if max_depth is None and len(prefixes) >= CONCURRENCY:
                break
            levels = await _together(_retrying(limit, _list_level, fs, emit, bucket, p) for p in prefixes)
            prefixes = [sub for subs in levels for sub in subs]
        if max_depth is None:
            await _together(_retrying(limit, _list_flat, fs, emit, bucket, p) for p in prefixes)
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        pages.put_nowait(exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc)
    else:
        pages.put_nowait(None)


async def _together(parts: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``parts`` side by side; the first to fail cancels the others and its error is raised."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(part) for part in parts]
    return [task.result() for task in tasks]


async def _list_level(fs: PagedFileSystem, emit: Emit, bucket: str, prefix: str, emitted: list[str]) -> list[str]:
    """Emit the objects directly under ``prefix``; return its sub-prefixes (a delimited listing)."""
    subs = []

    def is_object(info: ObjectInfo) -> bool:
        if info["type"] == "directory":
            subs.append(info["name"].split("/", 1)[1] + "/")
            return False
        return True

    await _paged(fs, emit, fs._iterdir(bucket, prefix=prefix, delimiter="/"), is_object, emitted)
    return subs


async def _list_flat(fs: PagedFileSystem, emit: Emit, bucket: str, prefix: str, emitted: list[str]) -> None:
    # Keys ending in "/" are the folder markers some tools create.
    infos = fs._iterdir(bucket, prefix=prefix, delimiter="")
    await _paged(fs, emit, infos, lambda info: not info["name"].endswith("/"), emitted)


async def _paged(fs: PagedFileSystem, emit: Emit, infos: AsyncIterator[ObjectInfo],
                 keep: Callable[[ObjectInfo], bool], emitted: list[str]) -> None:
    """Emit the kept objects a page at a time. S3 lists in key order, so a listing started again
    skips what ``emitted`` (the last key handed on, if any) says is already out."""
    page: list[ObjectInfo] = []
    async for info in infos:
        if keep(info) and (not emitted or info["name"] > emitted[0]):
            page.append(info)
        if len(page) == PAGE_ROWS:
            await _emit_page(fs, emit, page, emitted)
            page = []
    if page:
        await _emit_page(fs, emit, page, emitted)


async def _emit_page(fs: PagedFileSystem, emit: Emit, page: list[ObjectInfo], emitted: list[str]) -> None:
    await emit(_batch(fs, page))
    emitted[:] = [page[-1]["name"]]


async def _retrying(limit: asyncio.Semaphore, list_part: Callable[..., Awaitable[T]], *args: object,
                    attempts: int = 5) -> T:
    """List one part again when a transient error ends it early, going on after its last emitted key."""
    emitted: list[str] = []
    async with limit:
        for attempt in range(attempts):
            try:
                return await list_part(*args, emitted)
            except Exception as exc:
                if attempt == attempts - 1 or not storage.is_transient(exc):
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


# --- Other filesystems: one folder per task ----------------------------------------------------


# One folder listed: its objects as a batch, and its sub-folders.
Folder = tuple[pa.RecordBatch, list[str]]


def _walk(fs: FileSystem, root: str, max_depth: int | None) -> Iterator[pa.RecordBatch]:
    """Breadth first, a level at a time; within a level, folders are listed on a thread pool with at
    most :data:`PAGES_AHEAD` listed ahead of the consumer."""
    read: Callable[[str], Folder] = _scan_local_folder if storage.is_local(fs) else partial(_list_folder, fs)
    folders, depth = [root], 0
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        while folders and (max_depth is None or depth < max_depth):
            depth += 1
            below: list[str] = []
            for batch, subs in _ahead(pool, read, folders):
                below += subs
                yield batch
            folders = below


def _ahead(pool: ThreadPoolExecutor, read: Callable[[str], Folder], folders: list[str]) -> Iterator[Folder]:
    """``read`` of each folder in order, with at most :data:`PAGES_AHEAD` running or waiting."""
    pending: deque[Future[Folder]] = deque()
    for folder in folders:
        pending.append(pool.submit(read, folder))
        if len(pending) >= PAGES_AHEAD:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _list_folder(fs: FileSystem, folder: str) -> Folder:
    infos = storage.with_retries(lambda: fs.ls(folder, detail=True))
    return _batch(fs, infos), [i["name"] for i in infos if i.get("type") == "directory"]


def _scan_local_folder(folder: str) -> Folder:
    """One folder on local disk straight from ``os.scandir`` (the same etag as fsspec's mtime)."""
    paths: list[str] = []
    etags: list[str] = []
    sizes: list[int] = []
    subs: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                subs.append(entry.path)
            elif entry.is_file():
                stat = entry.stat()
                paths.append(entry.path)
                etags.append(f"mtime-{int(stat.st_mtime * 1e9)}")
                sizes.append(stat.st_size)
    columns = [pa.array(paths, pa.string()), pa.array(etags, pa.string()), pa.array(sizes, pa.int64())]
    return pa.record_batch(columns, schema=LISTING), subs


# --- Manifests ----------------------------------------------------------------------------------


def _from_manifest(uri: str) -> Iterator[pa.RecordBatch]:
    fs, path = storage.filesystem(uri)
    ext = os.path.splitext(path.lower())[1]
    with fs.open(path, "rb") as f:
        if ext == ".parquet":
            batches = _parquet_manifest(uri, f)
        elif ext == ".csv":
            batches = _csv_manifest(uri, f)
        else:
            batches = _text_manifest(f)
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for batch in batches:
                yield batch if batch.schema.equals(LISTING) else _stat(pool, batch.column(0))


def _parquet_manifest(uri: str, f: IO[bytes]) -> Iterator[pa.RecordBatch]:
    manifest = pq.ParquetFile(f, pre_buffer=False)
    columns = manifest.schema_arrow.names
    _require_uri(uri, columns)
    size = next((c for c in ("size_bytes", "size") if c in columns), None)
    if "etag" not in columns or size is None:
        yield from manifest.iter_batches(MANIFEST_BATCH_ROWS, columns=["uri"], use_threads=False)
        return
    for batch in manifest.iter_batches(MANIFEST_BATCH_ROWS, columns=["uri", "etag", size], use_threads=False):
        yield _as_listing(batch)


def _csv_manifest(uri: str, f: IO[bytes]) -> Iterator[pa.RecordBatch]:
    as_text = pacsv.ConvertOptions(column_types={"uri": pa.string(), "etag": pa.string(), "size_bytes": pa.int64(),
                                                 "size": pa.int64()})
    try:
        reader = pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=as_text)
    except pa.ArrowInvalid as exc:
        raise _malformed(uri, exc) from None
    columns = reader.schema.names
    _require_uri(uri, columns)
    size = next((c for c in ("size_bytes", "size") if c in columns), None)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise _malformed(uri, exc) from None
        if "etag" in columns and size is not None:
            yield _as_listing(batch.select(["uri", "etag", size]))
        else:
            yield batch.select(["uri"])


def _text_manifest(f: IO[bytes]) -> Iterator[pa.RecordBatch]:
    lines: list[str] = []
    for raw in f:
        line = raw.decode("utf-8").strip()
        if line and not line.startswith("#"):
            lines.append(line)
        if len(lines) == MANIFEST_BATCH_ROWS:
            yield pa.record_batch([pa.array(lines, pa.string())], names=["uri"])
            lines = []
    yield pa.record_batch([pa.array(lines, pa.string())], names=["uri"])


def _malformed(uri: str, exc: pa.ArrowInvalid) -> InputError:
    """Arrow names the column and the value (``In CSV column #2: ... invalid value 'ten'``): find the line."""
    message = str(exc)
    column, value = re.search(r"column #(\d+)", message), re.search(r"invalid value '(.*)'", message)
    where = ""
    if column and value:
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rt") as lines:
            for number, row in enumerate(csv.reader(lines), start=1):
                if len(row) > int(column[1]) and row[int(column[1])] == value[1]:
                    where = f"line {number}, "
                    break
    name = f"column {int(column[1]) + 1}" if column else "a column"
    return InputError(f"manifest {storage.redact_uri(uri)} has a malformed row at {where}{name}: {message}. "
                      "Fix that line, or leave the column out")


def _require_uri(uri: str, columns: list[str]) -> None:
    if "uri" not in columns:
        raise InputError(f"manifest {storage.redact_uri(uri)!r} has no 'uri' column (columns: {columns})")


def _as_listing(batch: pa.RecordBatch) -> pa.RecordBatch:
    uri, etag, size = batch.columns
    return pa.record_batch([uri.cast(pa.string()), etag.cast(pa.string()), size.cast(pa.int64())], schema=LISTING)


def _stat(pool: ThreadPoolExecutor, uris: pa.Array) -> pa.RecordBatch:
    """Look each URI up; one that does not exist stays an item and becomes a read_error row."""

    def one(uri: str) -> tuple[str, str | None, int | None]:
        fs, path = storage.filesystem(uri)
        info = _info(fs, path)
        if info is None:
            return storage.to_uri(fs, path), None, None
        return storage.to_uri(fs, path), _etag(info), info.get("size")

    found = list(pool.map(one, (u for u in uris.to_pylist() if u)))
    return pa.record_batch(
        [pa.array([c[i] for c in found], t) for i, t in enumerate(LISTING.types)], schema=LISTING
    )
