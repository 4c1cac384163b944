"""A GNU make jobserver shared by every package being built, so N builds don't run N×N jobs.

With `--jobs N` the scheduler runs up to N packages at once, and each of
them runs `make` (with `MAKEFLAGS=-jN`). Left alone that is N×N compile jobs
on N cores. Instead all builds share one jobserver: a pipe holding N tokens.

- Before a package starts, the scheduler takes one token for it. That token
  pays for the one job every make may always run without a token (its
  "implicit" slot), so a lone make never waits.
- Every make in the package (and sub-makes) takes a token from the pipe for
  each extra job and gives it back when the job ends.

So at most N jobs run in total, however the packages split them: eight ready
packages share the cores fairly, and a lone package at the end of a run gets
all of them.

What a builder must do with a `Jobserver` (host and chroot executors):

- merge `jobserver.env()` into the phase environment; it sets
  `MAKEFLAGS=-jN --jobserver-auth=R,W`, the form GNU make 4.x (Debian 12 has
  4.3) reads;
- keep the two descriptors open in the phase process:
  `subprocess.Popen(..., pass_fds=jobserver.pass_fds)` (Python closes every
  other descriptor by default). If they are missing, make prints "jobserver
  unavailable: using -j1" and still works, just serially;
- run `make` without an explicit `-jN` on its command line: an explicit -j
  makes GNU make leave the jobserver and start its own.

A sandbox that cannot inherit descriptors (docker) opens the pipe by its
path instead: it is a named FIFO (`Jobserver.fifo`), and a phase that opens
it read-write at the descriptor numbers MAKEFLAGS names joins as if it had
inherited them. Tools that do not speak the jobserver
protocol (ninja, samurai) should be given `budget_split(...)` too.
"""

from __future__ import annotations

import os
import select
import tempfile
import threading


class Jobserver:
    """A pipe (a named FIFO) of `tokens` one-byte tokens, in the GNU make jobserver protocol."""

    TOKEN = b"+"

    def __init__(self, tokens: int) -> None:
        if tokens < 1:
            raise ValueError("a jobserver needs at least one token")
        self.tokens = tokens
        # A named FIFO (in a private folder) behaves exactly like a pipe for
        # make, and a process that cannot inherit our descriptors (a phase in
        # a container) can still join by opening it at `fifo` (see
        # iglubuild.executors.docker).
        self._dir = tempfile.mkdtemp(prefix="iglubuild-jobserver-")
        self.fifo = os.path.join(self._dir, "fifo")
        os.mkfifo(self.fifo, 0o600)
        # Reader first (a non-blocking open of a FIFO's read end returns at
        # once), then the writer, which now has a reader; make expects the
        # read end to block, so switch that back on.
        self._read_fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._write_fd = os.open(self.fifo, os.O_WRONLY)
        os.set_blocking(self._read_fd, True)
        # The scheduler takes tokens without blocking, but O_NONBLOCK is shared
        # by everyone using one open file description: our own description
        # of the read end may be non-blocking.
        self._own_read_fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(self._write_fd, self.TOKEN * tokens)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pass_fds(self) -> tuple[int, int]:
        """The descriptors a phase process must inherit (give to Popen(pass_fds=...))."""
        return (self._read_fd, self._write_fd)

    def env(self) -> dict[str, str]:
        """Environment for a phase: MAKEFLAGS that join this jobserver."""
        return {
            "MAKEFLAGS": f"-j{self.tokens} --jobserver-auth={self._read_fd},{self._write_fd}",
        }

    def acquire(self, stop: threading.Event | None = None, timeout: float | None = None) -> bool:
        """Take one token, waiting for one; False if `stop` was set or `timeout` ran out."""
        waited = 0.0
        while True:
            if stop is not None and stop.is_set():
                return False
            try:
                if os.read(self._own_read_fd, 1):
                    return True
            except BlockingIOError:
                pass
            if timeout is not None and waited >= timeout:
                return False
            select.select([self._own_read_fd], [], [], 0.1)
            waited += 0.1

    def release(self) -> None:
        """Give one token back."""
        os.write(self._write_fd, self.TOKEN)

    def available(self) -> int:
        """Tokens in the pipe right now (for tests and the benchmark)."""
        import fcntl
        import termios

        buf = fcntl.ioctl(self._read_fd, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(buf, "little")

    def reset(self) -> None:
        """Refill the pipe to exactly `tokens` tokens.

        Only call this when nothing holds a token. A make killed with SIGKILL
        takes its tokens with it; the scheduler resets the pipe whenever no
        build is running so such losses never add up.
        """
        with self._lock:
            while True:
                try:
                    if not os.read(self._own_read_fd, 4096):
                        break
                except BlockingIOError:
                    break
            os.write(self._write_fd, self.TOKEN * self.tokens)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._own_read_fd, self._read_fd, self._write_fd):
                os.close(fd)
            os.unlink(self.fifo)
            os.rmdir(self._dir)

    def __enter__(self) -> Jobserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def budget_split(total: int, running: int) -> int:
    """Compile jobs for one package when `running` packages share `total` cores.

    The fallback where a jobserver cannot reach the build (a container): a
    fixed share, rounded up so no core idles, at least 1.
    """
    running = max(1, running)
    return max(1, -(-total // running))
