"""A small HTTP proxy on 127.0.0.1 in front of moto's S3 server that misbehaves on purpose.

- ``throttle_first``: the first GET of every object answers 503 SlowDown (a throttled S3);
- ``error_every``: every n-th request of any kind answers 500 InternalError;
- ``vanish``: objects whose key contains this text are deleted on their first GET, as if
  someone removed them between listing and reading.
Everything else is forwarded unchanged. It counts what it injected.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


class FaultProxy:
    def __init__(self, upstream: str, *, throttle_first: bool = True, error_every: int = 0, vanish: str = ""):
        self.upstream = urlsplit(upstream)
        self.throttle_first = throttle_first
        self.error_every = error_every
        self.vanish = vanish
        self.injected: Counter[str] = Counter()
        self._seen: set[str] = set()
        self._count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, method: str, path: str) -> str | None:
        """What to do with this request: None (forward), 'slowdown', 'internal' or 'vanish'."""
        is_object_get = method == "GET" and "?" not in path and path.count("/") >= 2
        with self._lock:
            self._count += 1
            if self.error_every and self._count % self.error_every == 0:
                return "internal"
            if is_object_get and path not in self._seen:
                self._seen.add(path)
                if self.vanish and self.vanish in path:
                    return "vanish"
                if self.throttle_first:
                    return "slowdown"
        return None

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                return

            def _reply(self, status: int, headers, body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        continue  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _handle(self) -> None:
                body = self._body()
                skip = ("connection", "transfer-encoding", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                action = proxy._decide(self.command, self.path)
                if action:
                    proxy.injected[action] += 1
                if action == "slowdown":
                    self._reply(503, [("Content-Type", "application/xml")], SLOW_DOWN)
                    return
                if action == "internal":
                    self._reply(500, [("Content-Type", "application/xml")], INTERNAL)
                    return
                if action == "vanish":
                    # moto checks who asks, not the signature: the GET's credentials do for the DELETE.
                    proxy._forward("DELETE", self.path, headers, None)
                self._reply(*proxy._forward(self.command, self.path, headers, body))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
