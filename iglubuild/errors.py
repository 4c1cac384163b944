"""Typed errors raised deep in iglubuild and turned into one line at the CLI.

Library code never prints or exits: it raises one of these. The CLI boundary
(`iglubuild.cli.main`) prints `error: MESSAGE` plus `hint: HINT` and exits with
the error's exit code, so every stage can be tested without catching SystemExit.
"""

from __future__ import annotations

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
