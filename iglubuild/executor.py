"""Where a build phase runs: the one small interface behind host, chroot and docker.

The scheduler and the build stage only ever see `Executor`. An executor turns
"run this shell script with this environment in this folder" into a process,
possibly inside a sandbox described as data (a list of `Mount` operations
that can describe themselves, printed with --debug).

Paths are the same inside and outside the sandbox: sandboxes bind-mount the
work folder, sysroot and pkgdir at their host paths, so the phase environment
(srcdir, pkgdir, CFLAGS with --sysroot=...) is identical for every executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Protocol

from iglubuild.run import Usage

# usage_sink(package, phase, usage): told what each finished phase's processes
# used (CPU seconds, peak memory), for the run's report (iglubuild.runrecord).
UsageSink = Callable[[str, str, Usage], None]

# The phases of one package build, in order (`--from PHASE` resumes at one).
# Here rather than in build.py so the CLI can offer them without loading the engine.
PHASES = ("unpack", "prepare", "build", "check", "package")


class ExecutorName(StrEnum):
    """The executors `--executor` offers (iglubuild.executors.make_executor)."""

    HOST = "host"
    CHROOT = "chroot"
    DOCKER = "docker"


class MountKind(StrEnum):
    """What a sandbox mount is; iglubuild/executors/_nsinit.py performs each."""

    BIND = "bind"
    TMPFS = "tmpfs"
    PROC = "proc"
    DEV = "dev"
    OVERLAY = "overlay"


@dataclass(frozen=True)
class Mount:
    """One mount operation of a sandbox, as data."""

    kind: MountKind
    target: Path
    source: Path | None = None
    readonly: bool = False
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Written as Mount("bind", ...) too; an unknown kind fails here, not in PID 1.
        object.__setattr__(self, "kind", MountKind(self.kind))

    def describe(self) -> str:
        ro = " (ro)" if self.readonly else ""
        src = f"{self.source} -> " if self.source else ""
        opts = f" [{','.join(self.options)}]" if self.options else ""
        return f"{self.kind}: {src}{self.target}{ro}{opts}"


@dataclass(frozen=True)
class NetNamespace:
    """A network namespace a phase joins instead of an empty one of its own.

    The distcc farm's (iglubuild.farmnet.FarmNet): a loopback on which only
    the relays to the volunteers listen. `path` names it for ``nsenter
    --net`` (host and chroot executors); `container` is the container that
    holds it under the docker executor, whose network phase containers share
    (Docker cannot join a namespace by path).
    """

    path: str
    container: str | None = None


@dataclass(frozen=True)
class PhaseJob:
    """One phase of one package, ready to run.

    `script` is run as `sh -e -c script` in `cwd` with exactly `env`.
    `writable` are host folders the phase may write (work folder, pkgdir);
    `readonly` are host folders it may read (sysroot, toolchain files).
    A phase has no network (an empty namespace, only a loopback) unless
    `netns` names the one it joins: the farm's, for phases that send
    compiles to the distcc farm.
    """

    package: str
    phase: str
    script: str
    cwd: Path
    env: dict[str, str]
    writable: tuple[Path, ...] = ()
    readonly: tuple[Path, ...] = ()
    network: bool = False  # the host's whole network; only tests may flip this
    netns: NetNamespace | None = None
    extra_mounts: tuple[Mount, ...] = field(default=())


class Executor(Protocol):
    """Runs phases. Implementations: host (default), chroot, docker."""

    name: str
    # Descriptors every phase inherits (the run's make jobserver), set by the engine.
    pass_fds: tuple[int, ...]
    # Set by the session; an executor that cannot measure a phase never calls it.
    usage_sink: UsageSink | None

    def check(self) -> None:
        """Raise a one-line IglubuildError if this executor cannot run here (root, tools)."""

    def toolchain_id(self) -> str:
        """Identity of the compilers and tools phases see; enters every input signature."""

    def run_phase(self, job: PhaseJob, log: IO[bytes]) -> int:
        """Run the phase, its output (stdout and stderr) appended to `log`.

        Returns the exit status (negative for a signal, as subprocess does).
        Must run the phase in its own process group / namespace so that
        `terminate()` (or a SIGINT to iglubuild) stops everything it started.
        """

    def terminate(self) -> None:
        """Stop every phase still running (used on Ctrl-C and on failure)."""
