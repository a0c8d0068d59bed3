"""Object storage access through fsspec, and keeping credentials out of everything we print or write.

S3 endpoint and credentials come from the standard AWS chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance roles), which
s3fs/botocore read by themselves; we never pass keys around, so they cannot end up in a
pickled task, a log line or a manifest.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import fsspec
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


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return with_retries(lambda: fs.cat_file(path))


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        fs.makedirs(parent, exist_ok=True)
    with_retries(lambda: fs.pipe_file(path, data))


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return with_retries(lambda: fs.exists(path))


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
