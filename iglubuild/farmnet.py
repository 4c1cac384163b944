"""The farm's network: a phase that compiles on the distcc farm reaches the
volunteers' distcc ports and nothing else.

Without --farm every phase runs in an empty network namespace of its own
(only a loopback; iglubuild.executors.sandbox, Docker's network mode
``none``). A phase whose compiles go to the farm must reach the volunteers;
giving it the host's whole network, as iglubuild once did, would let any
recipe's build talk to whatever this machine can reach (the LAN, services on
the host's loopback, the internet). A `FarmNet` gives it the volunteers'
distcc ports only:

- one network namespace per run, made for it and holding only a loopback
  interface; the phases that send compiles to the farm join it (host and
  chroot executors: ``nsenter --net``; docker: network mode
  ``container:<holder>``, see iglubuild.executors.docker);
- in that namespace, one listening TCP socket on ``127.0.0.1:<local port>``
  per volunteer; the phase's DISTCC_HOSTS names these local ends
  (`distcc_hosts`), in the volunteers' order and with their slots;
- iglubuild itself, running in the host's namespace, accepts the connections
  made there and relays each to its volunteer's real address and port.

A socket belongs to the namespace it was created in, whichever thread uses
it later, so one process can hold sockets of both namespaces: no relay
process runs inside the sandbox (nothing a phase could kill, replace or
talk to besides the relays) and no socat is needed. Python 3.11 has no
os.unshare or os.setns, so libc's are called through ctypes in a
short-lived thread of its own: unshare(CLONE_NEWNET) and setns(CLONE_NEWNET)
change only the calling thread's namespace. That thread brings ``lo`` up,
makes the listening sockets, opens ``/proc/thread-self/ns/net`` (the
descriptor keeps the namespace alive with no process in it, and names it
for nsenter as ``/proc/<iglubuild pid>/fd/<fd>``) and ends; every other
thread of iglubuild stays in the host's namespace.

The relays are bounded (at most `max_connections` at once, by default four
per farm slot; more are closed at once) and end with the FarmNet. A volunteer
that refuses or is gone gives the phase's distcc a connection closed at once,
and distcc then compiles that file locally, as it does when it cannot reach a
volunteer at all. Making a network namespace needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from iglubuild.distcc import Volunteer
from iglubuild.errors import BuildError
from iglubuild.executor import Executor, NetNamespace

log = logging.getLogger("iglubuild.farmnet")

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
LOCAL_ADDRESS = "127.0.0.1"
# distcc's own connect timeout is 4 s; a relay that waited longer would only
# keep a compile from falling back.
CONNECT_TIMEOUT = 4.0
CONNECTIONS_PER_SLOT = 4
BUFFER = 256 * 1024
# Local ports when the volunteers' own ports are not unique (several nodes
# using the same slot ports): distcc's port, then every second one, as the
# farm numbers its volunteers.
FIRST_LOCAL_PORT = 3632

T = TypeVar("T")


@dataclass(frozen=True)
class Relay:
    """One volunteer's local end in the farm's namespace."""

    local_port: int
    address: str
    port: int
    slots: int

    @property
    def local(self) -> str:
        """The local end as distcc names a host: `127.0.0.1:<local port>`."""
        return f"{LOCAL_ADDRESS}:{self.local_port}"

    @property
    def remote(self) -> str:
        """The volunteer itself, `address:port`, as the tally and `farm status` name it."""
        return f"{self.address}:{self.port}"


def relays_for(volunteers: Sequence[Volunteer]) -> tuple[Relay, ...]:
    """One relay per volunteer, in their order; local ports are the volunteers'
    own when those are unique (so a log reads the same), else assigned."""
    ports = [v.port for v in volunteers]
    if len(set(ports)) != len(ports):
        ports = [FIRST_LOCAL_PORT + 2 * i for i in range(len(volunteers))]
    return tuple(Relay(p, v.address, v.port, v.slots)
                 for p, v in zip(ports, volunteers, strict=True))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def loopback_up() -> None:
    """Bring `lo` of the calling thread's network namespace up (a fresh one starts down).

    The same SIOCGIFFLAGS/SIOCSIFFLAGS as the sandbox's init
    (iglubuild/executors/_nsinit.py, which cannot be imported: it runs with -I -S).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    finally:
        sock.close()


def in_namespace(fn: Callable[[], T], join: str | None = None) -> T:
    """Run `fn` in a thread of its own inside a new network namespace (`join`
    None) or the existing one at path `join`; return what it returns.

    Only that thread changes namespace, and it ends with `fn`: sockets `fn`
    creates stay in the namespace, whoever uses them afterwards.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            libc = _libc()
            if join is None:
                _check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            else:
                fd = os.open(join, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _check(libc.setns(fd, CLONE_NEWNET), f"setns({join})")
                finally:
                    os.close(fd)
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=body, name="iglubuild-farmnet-setup", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class FarmNet:
    """The farm's network namespace and the relays to its volunteers, for one run.

    Use as a context manager: entering makes the namespace (or, with `join`,
    sets up an existing one: the docker executor's holder container), its
    listening sockets and the relay thread; leaving closes every relay and
    the namespace. `namespace` is what a PhaseJob carries (`netns`);
    `distcc_hosts` the phase's DISTCC_HOSTS; `aliases` maps the local ends
    back to the volunteers for the compile tally.
    """

    def __init__(self, volunteers: Sequence[Volunteer], *, join: str | None = None,
                 container: str | None = None, max_connections: int | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        if not volunteers:
            raise BuildError("a farm network needs at least one volunteer")
        self.relays = relays_for(volunteers)
        self._join = join
        self._container = container
        self.max_connections = max_connections or CONNECTIONS_PER_SLOT * sum(
            r.slots for r in self.relays)
        self.connect_timeout = connect_timeout
        self._ns_fd: int | None = None
        self._listeners: dict[socket.socket, Relay] = {}
        self._lock = threading.Lock()
        self._active: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor: threading.Thread | None = None
        self.refused_over_limit = 0  # connections closed because max_connections were open
        self.relayed = 0  # connections relayed to a volunteer

    # ------------------------------------------------------------------ set-up

    def __enter__(self) -> FarmNet:
        listeners, self._ns_fd = in_namespace(self._make_sockets, self._join)
        self._listeners = dict(zip(listeners, self.relays, strict=True))
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="iglubuild-farmnet-accept")
        self._acceptor.start()
        log.debug("farm network %s: %s", self.path, ", ".join(
            f"{r.local} -> {r.remote}" for r in self.relays))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _make_sockets(self) -> tuple[list[socket.socket], int]:
        """In the namespace's thread: lo up, the listening sockets, the namespace's fd."""
        loopback_up()
        made: list[socket.socket] = []
        try:
            for relay in self.relays:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                made.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((LOCAL_ADDRESS, relay.local_port))
                sock.listen(128)
                sock.setblocking(False)
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            for sock in made:
                sock.close()
            raise
        return made, fd

    # ------------------------------------------------------------------ what phases get

    @property
    def path(self) -> str:
        """The namespace as a path nsenter can open (this process's descriptor)."""
        if self._ns_fd is None:
            raise BuildError("the farm network is not open")
        return f"/proc/{os.getpid()}/fd/{self._ns_fd}"

    @property
    def namespace(self) -> NetNamespace:
        """What a PhaseJob carries to join this network."""
        return NetNamespace(path=self.path, container=self._container)

    @property
    def distcc_hosts(self) -> str:
        """DISTCC_HOSTS for the phases: the local ends, in the volunteers' order."""
        return " ".join(f"{r.local}/{r.slots}" for r in self.relays)

    @property
    def aliases(self) -> Mapping[str, str]:
        """Local end (`127.0.0.1:port`) -> the volunteer's `address:port`."""
        return {r.local: r.remote for r in self.relays}

    # ------------------------------------------------------------------ relaying

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._wake_r, selectors.EVENT_READ)
            for sock in self._listeners:
                sel.register(sock, selectors.EVENT_READ)
            while not self._closed:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r or self._closed:
                        return
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    try:
                        conn, _addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            log.warning("farm relay: cannot accept: %s", exc)
                            continue
                        raise
                    self._start_relay(conn, self._listeners[listener])
        except Exception:  # noqa: BLE001 - the phases then fall back to local compiles
            if not self._closed:
                log.exception("farm relay stopped accepting")
        finally:
            sel.close()

    def _start_relay(self, conn: socket.socket, relay: Relay) -> None:
        with self._lock:
            if self._closed or len(self._threads) >= self.max_connections:
                if not self._closed:
                    self.refused_over_limit += 1
                    if self.refused_over_limit == 1:
                        log.warning("farm relay: %d connections open, closing more "
                                    "(distcc compiles those locally)", self.max_connections)
                conn.close()
                return
            thread = threading.Thread(target=self._relay, args=(conn, relay), daemon=True,
                                      name=f"iglubuild-farmnet-{relay.local_port}")
            self._threads.add(thread)
            self._active.add(conn)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: this compile goes local
            log.warning("farm relay: %s", exc)
            with self._lock:
                self._threads.discard(thread)
                self._active.discard(conn)
            conn.close()

    def _relay(self, conn: socket.socket, relay: Relay) -> None:
        upstream: socket.socket | None = None
        try:
            conn.setblocking(True)
            try:
                # From this thread, in the host's namespace: the volunteer's real address.
                upstream = socket.create_connection((relay.address, relay.port),
                                                    timeout=self.connect_timeout)
            except OSError as exc:
                # distcc's own warning says so in the package log (tally_compiles).
                log.debug("farm relay: volunteer %s: %s (distcc compiles locally)",
                          relay.remote, exc)
                return
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    return
                self._active.add(upstream)
                self.relayed += 1
            for sock in (conn, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _pump(conn, upstream)
        except OSError as exc:
            log.debug("farm relay %s -> %s ended: %s", relay.local, relay.remote, exc)
        finally:
            with self._lock:
                self._active.discard(conn)
                if upstream is not None:
                    self._active.discard(upstream)
                self._threads.discard(threading.current_thread())
            conn.close()
            if upstream is not None:
                upstream.close()

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop accepting, end every relay, close the namespace (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = list(self._active)
            threads = list(self._threads)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._acceptor is not None:
            self._acceptor.join(timeout=10)
        for sock in active:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the relay's select
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout=10)
        for sock in self._listeners:
            sock.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._ns_fd is not None:
            os.close(self._ns_fd)
            self._ns_fd = None


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides have finished sending (half-close passed on)."""
    peer = {a: b, b: a}
    sel = selectors.DefaultSelector()
    try:
        sel.register(a, selectors.EVENT_READ)
        sel.register(b, selectors.EVENT_READ)
        open_sides = 2
        while open_sides:
            for key, _ in sel.select():
                src = key.fileobj
                assert isinstance(src, socket.socket)
                data = src.recv(BUFFER)
                if data:
                    peer[src].sendall(data)
                    continue
                sel.unregister(src)
                open_sides -= 1
                try:
                    peer[src].shutdown(socket.SHUT_WR)
                except OSError:
                    return
    finally:
        sel.close()


@contextmanager
def farm_network(executor: Executor, volunteers: Sequence[Volunteer]) -> Iterator[FarmNet | None]:
    """The farm's network for the phases `executor` runs, for as long as the block lasts.

    Host and chroot executors: a namespace of the FarmNet's own. Docker: the
    namespace of the executor's holder container, set up from outside.
    None where phases cannot be confined: the host executor without root (or
    where namespaces are forbidden) runs phases unsandboxed in the host's
    network, so they must be given the volunteers' own addresses.
    """
    from iglubuild.executors.docker import DockerExecutor
    from iglubuild.executors.host import HostExecutor

    if isinstance(executor, HostExecutor) and not executor.isolated:
        log.warning("the host executor cannot sandbox phases here (needs root): "
                    "farm compiles reach the volunteers over the host's network, unconfined")
        yield None
        return
    if isinstance(executor, DockerExecutor):
        # Docker joins no namespace by path: the namespace is a holder container's.
        with executor.netns_holder() as (path, container), \
                FarmNet(volunteers, join=path, container=container) as net:
            yield net
        return
    with FarmNet(volunteers) as net:
        yield net
