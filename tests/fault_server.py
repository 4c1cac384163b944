"""A real HTTP/1.1 server on 127.0.0.1 that serves files and injects faults.

Used by the fetch tests and the fetch benchmarks. It runs in a thread of the
test process (ThreadingHTTPServer), supports single `Range: bytes=N-` requests
like a normal web server, sends file bodies with sendfile(2) so it is not the
bottleneck in benchmarks, and can misbehave per path:

    reset         send part of the body, then reset the connection (RST)
    truncate      send part of the body with the full Content-Length, then close
    short-length  announce a Content-Length smaller than the file
    long-length   announce a Content-Length larger than the file, then close
    status        answer with `status` (e.g. 500, 404) instead of the file
    trickle       send `chunk` bytes every `delay` seconds; with `stall`, go
                  silent for that long after `after` bytes
    redirect      302 to `target`
    no-range      ignore Range headers (always 200 with the whole file)
    bad-range     answer a Range request with a 206 whose Content-Range is wrong
    endless       a body without Content-Length that never ends (zeros until the
                  client hangs up); with `status` 200 and `after` set, announce
                  `after` as Content-Length but keep sending

`times` limits a fault to the first N requests of that path (None: always).
Every request is recorded in `requests` as (path, Range header or None, status).
"""

from __future__ import annotations

import http.server
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Fault:
    kind: str
    times: int | None = None
    status: int = 500
    after: int | None = None  # bytes sent before the fault strikes (default: half)
    chunk: int = 1024
    delay: float = 0.01
    stall: float = 0.0
    target: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.owner._lock:
            self.server.owner.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        srv = self.server.owner
        srv.enter()
        try:
            self._get(srv)
        finally:
            srv.leave()

    def _get(self, srv: FaultServer) -> None:
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        body = srv.files.get(path)
        fault = srv.take_fault(path)
        if fault is not None and fault.kind == "status":
            return self._simple(path, rng, fault.status)
        if fault is not None and fault.kind == "redirect":
            srv.record(path, rng, 302)
            self.send_response(302)
            self.send_header("Location", fault.target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if fault is not None and fault.kind == "endless":
            return self._endless(path, rng, fault)
        if body is None:
            return self._simple(path, rng, 404)
        size = body.stat().st_size if isinstance(body, Path) else len(body)
        start = 0
        status = 200
        honour_range = fault is None or fault.kind not in ("no-range",)
        if rng and honour_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= size:
                srv.record(path, rng, 416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            status = 206
        length = size - start
        srv.record(path, rng, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if not honour_range else "bytes")
        announced = length
        if fault is not None and fault.kind == "short-length":
            announced = length // 2
        elif fault is not None and fault.kind == "long-length":
            announced = length + 1000
        self.send_header("Content-Length", str(announced))
        if status == 206:
            cr_start = start + 7 if fault is not None and fault.kind == "bad-range" else start
            self.send_header("Content-Range", f"bytes {cr_start}-{size - 1}/{size}")
        self.end_headers()
        self.wfile.flush()
        kind = fault.kind if fault is not None else None
        if kind in ("reset", "truncate"):
            cut = fault.after if fault.after is not None else length // 2
            self._send(body, start, min(cut, length))
            self.wfile.flush()
            if kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.close_connection = True
            return None
        if kind == "short-length":
            self._send(body, start, announced)
            self.close_connection = True
            return None
        if kind == "trickle":
            sent = 0
            while sent < length:
                n = min(fault.chunk, length - sent)
                self._send(body, start + sent, n)
                self.wfile.flush()
                sent += n
                if fault.stall and fault.after is not None and sent >= fault.after:
                    time.sleep(fault.stall)
                    self.close_connection = True
                    return None
                time.sleep(fault.delay)
            return None
        self._send(body, start, length)
        if kind == "long-length":
            self.close_connection = True
        return None

    def _endless(self, path: str, rng: str | None, fault: Fault) -> None:
        self.server.owner.record(path, rng, 200)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if fault.after is not None:
            self.send_header("Content-Length", str(fault.after))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        zeros = bytes(1 << 16)
        sent = 0
        try:
            while sent < (1 << 40):  # 1 TiB: "never" for any test
                self.wfile.write(zeros)
                sent += len(zeros)
                with self.server.owner._lock:
                    self.server.owner.endless_sent = sent
        except OSError:
            pass  # the client hung up, as it should

    def _send(self, body: Path | bytes, offset: int, count: int) -> None:
        if count <= 0:
            return
        if isinstance(body, Path):
            with open(body, "rb") as f:
                self.connection.sendfile(f, offset, count)
        else:
            self.wfile.write(body[offset:offset + count])

    def _simple(self, path: str, rng: str | None, status: int) -> None:
        self.server.owner.record(path, rng, status)
        data = f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Record a handler's exception instead of printing a traceback.

        Clients hang up mid-answer on purpose here (a 404 ends a fetch, faults
        cut connections); socketserver would print that to stderr, which the
        CLI tests capture and check for "Traceback".
        """
        with self.owner._lock:
            self.owner.handler_errors.append(repr(sys.exc_info()[1]))


class FaultServer:
    """Start with `with FaultServer() as srv:`; `srv.url("/x")` is its address."""

    def __init__(self) -> None:
        self.files: dict[str, Path | bytes] = {}
        self.faults: dict[str, Fault] = {}
        self._fault_uses: dict[str, int] = {}
        self.requests: list[tuple[str, str | None, int]] = []
        self.active = 0
        self.connections = 0  # TCP connections accepted (keep-alive reuses them)
        self.max_active = 0  # most requests served at once
        self.handler_errors: list[str] = []  # exceptions of request handlers (see _Server)
        self.endless_sent = 0  # bytes an `endless` fault sent before the client hung up
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, body: Path | bytes, fault: Fault | None = None) -> str:
        self.files[path] = body
        if fault is not None:
            self.faults[path] = fault
        return self.url(path)

    def take_fault(self, path: str) -> Fault | None:
        with self._lock:
            fault = self.faults.get(path)
            if fault is None:
                return None
            used = self._fault_uses.get(path, 0)
            if fault.times is not None and used >= fault.times:
                return None
            self._fault_uses[path] = used + 1
            return fault

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def record(self, path: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.requests.append((path, rng, status))

    def requests_for(self, path: str) -> list[tuple[str, str | None, int]]:
        with self._lock:
            return [r for r in self.requests if r[0] == path]


def sha256_of(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["Fault", "FaultServer", "sha256_of"]
