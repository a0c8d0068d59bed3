"""Object storage access through fsspec, and keeping credentials out of everything we print or write.

S3 endpoint and credentials come from the standard AWS chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance roles), which
s3fs/botocore read by themselves; we never pass keys around, so they cannot end up in a
pickled task, a log line or a manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

T = TypeVar("T")

_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "RAY_AUTH_TOKEN",
)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path within it (no scheme)."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def arrow_filesystem(root: str) -> pafs.FileSystem:
    """pyarrow's own filesystem for the tree at ``root`` (a local path or an s3:// URI), with the
    same AWS chain as everything else; for reading a Delta table's files with Arrow.

    deltalake's default is a Python handler (pyarrow's PyFileSystem), whose buffers are Python
    objects: when an Arrow thread frees the last of them while the interpreter exits, the process
    aborts after its work is done ("terminate called without an active exception", exit 134;
    apache/arrow#49942, whose fix in pyarrow 26 still races; tools/repro_arrow_exit_abort.py)."""
    if "://" not in root:
        return pafs.SubTreeFileSystem(os.path.abspath(root), pafs.LocalFileSystem())
    fs, path = pafs.FileSystem.from_uri(re.sub(r"^s3a://", "s3://", root))
    return pafs.SubTreeFileSystem(path, fs)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a user would write for ``path`` on ``fs``: plain absolute paths for local files."""
    if is_local(fs):
        return path
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return f"{protocol}://{path}"


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def redact(text: str) -> str:
    """``text`` with credentials removed: URL userinfo and the values of secret env variables."""
    text = re.sub(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@", r"\g<scheme>***@", text)
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def redact_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username or parts.password:
        netloc = "***@" + (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


_TRANSIENT = re.compile(
    r"SlowDown|Throttl|RequestTimeout|InternalError|ServiceUnavailable|503|500|502|504|"
    r"Connection (reset|aborted|refused)|Read timed out|temporarily",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: throttling, 5xx and dropped connections."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return bool(_TRANSIENT.search(f"{type(exc).__name__}: {exc}"))


def with_retries(fn: Callable[[], T], *, attempts: int = 5, base_delay_s: float = 0.2) -> T:
    """Call ``fn``, retrying transient storage errors with exponential backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(base_delay_s * 2**attempt)
    raise AssertionError("unreachable")


class ObjectChanged(RuntimeError):
    """The object is not the version that was listed: it changed (or was replaced) since."""


CHANGED = ("the object changed after it was listed, so the listed version cannot be read; the next run "
           "labels the version there now")
_S3_ETAG = re.compile(r'^"?[0-9a-f]{32}(-\d+)?"?$')


def read_bytes(uri: str, *, etag: str | None = None) -> bytes:
    """The object's bytes; with ``etag`` (as a listing gave it), only if it is still that version,
    else :class:`ObjectChanged`: S3 asks with ``If-Match``, local files compare their mtime."""
    fs, path = filesystem(uri)
    if not _pinned(fs, etag):
        return with_retries(lambda: _cat(fs, path))
    assert etag is not None
    if is_local(fs):
        data = with_retries(lambda: _cat(fs, path))
        check_version(uri, etag)
        return data
    return with_retries(lambda: _s3_get_if_match(fs, path, etag))


def check_version(uri: str, etag: str | None) -> None:
    """:class:`ObjectChanged` if a local file is no longer the version ``etag`` names (S3 objects are
    checked by each conditional read instead)."""
    fs, path = filesystem(uri)
    if is_local(fs) and _pinned(fs, etag) and local_etag(os.stat(path)) != etag:
        raise ObjectChanged(f"{CHANGED} (listed {etag})")


def _pinned(fs: fsspec.AbstractFileSystem, etag: str | None) -> bool:
    """Is ``etag`` one this store gave, so that a read can ask for that version? A manifest may carry
    etags of its own making; those are not pinned."""
    if etag is None:
        return False
    if is_local(fs):
        return etag.startswith("mtime-")
    return _is_s3(fs) and bool(_S3_ETAG.match(etag))


def _cat(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    return bytes(fs.cat_file(path))


def local_etag(stat: os.stat_result) -> str:
    """What a listing gives a local file for an etag: its modification time in nanoseconds."""
    return f"mtime-{int(stat.st_mtime * 1e9)}"


def pin_stream(stream: Any, etag: str | None) -> None:
    """Make every ranged read of an open S3 file ask for ``etag`` (``If-Match``): a file that
    changes while it is streamed fails its next read instead of mixing two versions."""
    if etag is not None and hasattr(stream, "read_kw") and bool(_S3_ETAG.match(etag)):
        stream.read_kw = {**stream.read_kw, "IfMatch": _quoted(etag)}


def is_precondition_failure(exc: BaseException) -> bool:
    """S3's answer to a conditional request whose condition does not hold (412)."""
    if isinstance(exc, ObjectChanged):
        return True
    causes = (exc, exc.__cause__) if exc.__cause__ is not None else (exc,)
    return any("PreconditionFailed" in f"{type(e).__name__}: {e}" or "pre-conditions you specified" in str(e)
               for e in causes)


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool({"s3", "s3a"} & set(protocol))


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _s3_get_if_match(fs: Any, path: str, etag: str) -> bytes:
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def get() -> bytes:
        try:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key, IfMatch=_quoted(etag))
        except Exception as exc:
            if is_precondition_failure(exc):
                raise ObjectChanged(f"{CHANGED} (listed {etag})") from None
            raise
        try:
            return bytes(await response["Body"].read())
        finally:
            response["Body"].close()

    data: bytes = sync(fs.loop, get)
    return data


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        fs.makedirs(parent, exist_ok=True)
    with_retries(lambda: fs.pipe_file(path, data))


def create_file(uri: str, data: bytes) -> None:
    """Write a new object, never replacing one: :class:`FileExistsError` if ``uri`` exists.

    Local disk: written aside, then hard-linked into place (atomic, refuses an existing name).
    S3: one PUT with ``If-None-Match: *``. A retry after a PUT that landed but reported a failure
    meets its own object: the same bytes there count as written. Stores without a conditional
    create check first, which is not atomic."""
    fs, path = filesystem(uri)
    if is_local(fs):
        _create_local(path, data)
        return

    def put() -> None:
        try:
            if _is_s3(fs):
                with fs.open(path, "xb") as f:
                    f.write(data)
            elif fs.exists(path):
                raise FileExistsError(path)
            else:
                fs.pipe_file(path, data)
        except FileExistsError:
            if _same_bytes(fs, path, data):
                return
            raise
        except Exception as exc:
            if is_precondition_failure(exc):
                if _same_bytes(fs, path, data):
                    return
                raise FileExistsError(path) from None
            raise

    with_retries(put)


def _create_local(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    aside = f"{path}.{secrets.token_hex(6)}.tmp"
    try:
        with open(aside, "xb") as f:
            f.write(data)
        os.link(aside, path)
    finally:
        if os.path.exists(aside):
            os.unlink(aside)


def _same_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    fs.invalidate_cache(path)
    try:
        there = fs.cat_file(path)
    except FileNotFoundError:
        return False
    return hashlib.sha256(there).digest() == hashlib.sha256(data).digest()


def modified(uri: str) -> float:
    """The storage's own timestamp of an object (S3 ``LastModified``, a local file's mtime), in
    seconds since the epoch: one clock for every host that reads it."""
    fs, path = filesystem(uri)
    fs.invalidate_cache(path)
    info = with_retries(lambda: fs.info(path))
    stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
    if stamp is None:
        raise OSError(f"{redact_uri(uri)}: the store gives no modification time")
    return float(stamp.timestamp() if hasattr(stamp, "timestamp") else stamp)


def storage_now(folder: str) -> float:
    """The storage's clock now: the timestamp it gives a probe object written under ``folder``."""
    probe = join(folder, f"_clock-{secrets.token_hex(8)}")
    write_bytes(probe, b"")
    try:
        return modified(probe)
    finally:
        remove_file(probe)


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(with_retries(lambda: fs.size(path)))


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(with_retries(lambda: fs.exists(path)))


def remove_tree(uri: str) -> None:
    fs, path = filesystem(uri)
    if with_retries(lambda: fs.exists(path)):
        with_retries(lambda: fs.rm(path, recursive=True))


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Every file under ``uri`` (recursive) ending with ``suffix``, as URIs, sorted."""
    fs, path = filesystem(uri)
    if not with_retries(lambda: fs.exists(path)):
        return []
    found: Iterable[str] = with_retries(lambda: fs.find(path))
    return sorted(to_uri(fs, p) for p in found if p.endswith(suffix))


def remove_file(uri: str) -> None:
    """Delete one file; nothing happens if it is already gone."""
    fs, path = filesystem(uri)
    try:
        with_retries(lambda: fs.rm_file(path))
    except FileNotFoundError:
        pass


def list_names(uri: str, prefix: str = "") -> list[str]:
    """Names of the files directly under ``uri`` that start with ``prefix`` (one listing, no recursion)."""
    fs, path = filesystem(uri)
    fs.invalidate_cache(path)
    try:
        entries = with_retries(lambda: fs.ls(path, detail=True))
    except FileNotFoundError:
        return []
    names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")
    return sorted(n for n in names if n.startswith(prefix))


def list_prefix(uri: str, prefix: str) -> list[str]:
    """Paths, relative to ``uri``, of the files below it whose relative path starts with ``prefix``."""
    fs, path = filesystem(uri)
    base = path.rstrip("/")
    folder = join(base, prefix.rsplit("/", 1)[0]) if "/" in prefix else base
    fs.invalidate_cache(folder)
    if not with_retries(lambda: fs.exists(folder)):
        return []
    relative = (p[len(base) + 1 :] for p in with_retries(lambda: fs.find(folder)))
    return sorted(r for r in relative if r.startswith(prefix))
