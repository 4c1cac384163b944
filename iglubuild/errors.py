"""Typed errors raised deep in iglubuild and turned into one line at the CLI.

Library code never prints or exits: it raises one of these. The CLI boundary
(`iglubuild.cli.main`) prints `error: MESSAGE` plus `hint: HINT` and exits with
the error's exit code, so every stage can be tested without catching SystemExit.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Exit codes, as the README documents them.
EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_USAGE = 2
EXIT_FETCH = 3
EXIT_INTERRUPTED = 130


class IglubuildError(Exception):
    """Base of every error the CLI knows how to report."""

    exit_code: int = EXIT_BUILD_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The lines the CLI prints for this error (without the `error:` prefix)."""
        return [self.message]


class UsageError(IglubuildError):
    """Bad command line, bad configuration file or bad environment variable."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in one recipe file, located at file:line:column (1-based)."""

    path: str
    line: int
    column: int
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.path}:{self.line}:{self.column}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class RecipeError(IglubuildError):
    """One or more recipe problems; all of them are reported, one per line."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        first = self.problems[0] if self.problems else None
        super().__init__(str(first) if first else "invalid recipe")

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class GraphError(RecipeError):
    """A cycle or a missing dependency in the recipe tree."""


class FetchError(IglubuildError):
    """A download failed or a checksum did not match."""

    exit_code = EXIT_FETCH


class BuildError(IglubuildError):
    """A package failed to build; names its log and work folder when there are ones.

    `tail` is the end of the log, shown in the run's summary so that the
    reason is on screen without opening the file.
    """

    exit_code = EXIT_BUILD_FAILED

    def __init__(self, message: str, hint: str | None = None, *, log: Path | None = None,
                 work_dir: Path | None = None, tail: Sequence[str] = ()) -> None:
        super().__init__(message, hint)
        self.log = log
        self.work_dir = work_dir
        self.tail = list(tail)


class LockError(IglubuildError):
    """Another iglubuild holds the build directory."""

    exit_code = EXIT_USAGE


class NeedsRootError(IglubuildError):
    """The operation needs root (chroot, namespaces, mounts)."""

    exit_code = EXIT_USAGE


class ToolMissingError(IglubuildError):
    """An external program iglubuild needs is not installed."""

    exit_code = EXIT_USAGE


class DiskFullError(IglubuildError):
    """A write found no space left; names the folder and its free space."""

    exit_code = EXIT_BUILD_FAILED


def is_disk_full(exc: BaseException) -> bool:
    """Is this the kernel saying the disk (or the quota) is full?"""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(folder: str | os.PathLike[str]) -> DiskFullError:
    """The one-line error for a full disk under `folder` (free space measured now)."""
    path = os.fspath(folder)
    probe = path
    while probe and not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    try:
        st = os.statvfs(probe or ".")
        free = st.f_bavail * st.f_frsize
        room = f"{free / (1 << 20):.1f} MiB free"
    except OSError:
        room = "free space unknown"
    return DiskFullError(f"no space left on the disk of {path} ({room})",
                         hint="free some space there, or point --build-dir / --distfiles "
                              "at a bigger disk; nothing half-written was kept")
