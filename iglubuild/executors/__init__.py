"""Executors: where build phases run (host, chroot, docker), behind iglubuild.executor.

`make_executor` is the one place that maps `--executor NAME` to an object;
everything after it only sees the `Executor` protocol. What every executor
shares lives here: the host name builds see, the check of the folders a
phase is given, and `PhaseProcesses`, the table of running phases with the
guard that keeps a phase from starting after `terminate()`.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import IO

from iglubuild.errors import BuildError, UsageError
from iglubuild.executor import Executor, ExecutorName, PhaseJob
from iglubuild.run import TERM_GRACE_SECONDS, spawn, stop_all
from iglubuild.settings import Settings

__all__ = ["HOSTNAME", "PHASE_UMASK", "TERM_GRACE_SECONDS", "PhaseProcesses", "check_phase_folders",
           "make_executor"]

# Builds see this host name, not the machine's: nothing the build embeds
# (configure's `uname -n`, a build-info string) depends on where it ran.
HOSTNAME = "iglubuild"
# Phases create files with this umask whatever the user's is (a 077 umask
# would otherwise change the modes packed from $pkgdir: `iglubuild verify`
# runs its rebuild under another umask to prove it does not matter).
PHASE_UMASK = 0o022


def make_executor(settings: Settings) -> Executor:
    """The executor named by settings.executor."""
    if settings.executor == ExecutorName.HOST:
        from iglubuild.executors.host import HostExecutor

        return HostExecutor()
    if settings.executor == ExecutorName.CHROOT:
        from iglubuild.executors.chroot import ChrootExecutor

        return ChrootExecutor.from_settings(settings)
    if settings.executor == ExecutorName.DOCKER:
        from iglubuild.executors.docker import make_docker_executor

        return make_docker_executor(settings)
    raise UsageError(f"unknown executor {settings.executor!r}",
                     hint="use --executor host, chroot or docker")


def check_phase_folders(job: PhaseJob) -> None:
    """Folders a sandbox mounts for a phase must be absolute and exist (one line if not)."""
    for p in (*job.writable, *job.readonly):
        if not p.is_absolute() or not p.exists():
            raise BuildError(f"{job.package} {job.phase}: cannot mount {p}: no such folder",
                             hint="folders given to a phase must exist and be absolute")


class PhaseProcesses:
    """The phases an executor is running, and the one way to stop them all.

    A phase takes a `ticket()` when it begins and starts its process with
    `start(ticket, ...)`; a `terminate()` in between (Ctrl-C, a failure with
    --keep-going off) makes `start` yield None instead of a process, so no
    phase starts after the run was told to stop. Processes go through
    `run.spawn`, whose kill policy `terminate` applies to all of them with one
    shared grace period.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._generation = 0

    def ticket(self) -> int:
        """Taken when a phase begins; `start` refuses it after a `terminate()`."""
        with self._lock:
            return self._generation

    @contextmanager
    def start(self, ticket: int, argv: Sequence[str], *, env: dict[str, str],
              stdin: int | IO[bytes] | None = subprocess.DEVNULL,
              stdout: int | IO[bytes] | None = None,
              stderr: int | IO[bytes] | None = None,
              cwd: str | None = None, pass_fds: Sequence[int] = (),
              new_session: bool = True) -> Iterator[subprocess.Popen[bytes] | None]:
        """Spawn the phase's process unless terminated since `ticket` (then None)."""
        with ExitStack() as stack:
            # Spawned and recorded under the lock: a terminate() either sees the
            # process or has already happened (and then the phase does not start).
            with self._lock:
                proc = None
                if self._generation == ticket:
                    proc = stack.enter_context(spawn(
                        argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                        pass_fds=pass_fds, new_session=new_session, umask=PHASE_UMASK))
                    self._running.add(proc)
            try:
                yield proc
            finally:
                if proc is not None:
                    with self._lock:
                        self._running.discard(proc)

    def terminate(self) -> None:
        """Stop every running phase (SIGTERM its group, grace, SIGKILL); refuse new ones."""
        with self._lock:
            self._generation += 1
            procs = list(self._running)
        stop_all(procs, grace=TERM_GRACE_SECONDS)
