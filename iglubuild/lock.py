"""One iglubuild per build directory: an flock on <build-dir>/.lock holding the PID.

Two runs sharing a build directory would overwrite each other's work folders,
state records and artifacts. The lock is an advisory `flock` on
`<build-dir>/.lock`; the holder writes its PID into the file so the second run
can name it. The kernel drops an flock when the last descriptor of the open
file is closed, so the lock is released on normal exit, on an exception and
also after `kill -9`: there is never a stale lock to delete by hand.

The descriptor is opened close-on-exec (Python's default), so build
processes started while the lock is held never inherit it and a stray
background process left by a build cannot keep the directory locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from iglubuild.errors import LockError

LOCK_NAME = ".lock"


class BuildDirLock:
    """Exclusive lock of one build directory; use as a context manager.

    >>> with BuildDirLock(Path("build")):
    ...     ...  # build
    """

    def __init__(self, build_dir: Path) -> None:
        self.build_dir = Path(build_dir)
        self.path = self.build_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise LockError naming the PID that holds it."""
        if self._fd is not None:
            return
        self.build_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(f"cannot lock build dir {self.build_dir}: {exc.strerror}",
                                hint=f"check the permissions of {self.path}") from exc
            who = f"PID {holder}" if holder else "another process"
            raise LockError(
                f"build dir {self.build_dir} is in use by {who}",
                hint="wait for that iglubuild to finish or stop it"
                + (f" (kill {holder})" if holder else "")
                + ", or use another --build-dir; the lock frees itself when it exits",
            ) from None
        # We hold the lock: replace whatever PID a previous holder left behind.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock. The file stays: deleting it would race with a new holder."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> BuildDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
