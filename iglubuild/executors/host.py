"""The host executor: phases run directly on this machine, cross-compiling for musl.

Each phase is `sh -e -c SCRIPT` in its own session (process group), so
`terminate()` can stop the phase and everything it started -- make, its
compilers, stray background jobs. When running as root, the phase also gets
its own empty network namespace (`unshare --net`): builds have no network.
Without root the host executor cannot take the network away; it says so in
`describe()` rather than pretending.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import threading
import time
from typing import IO

from iglubuild.executor import PhaseJob
from iglubuild.run import require_tool, which
from iglubuild.target import Target, load_target

log = logging.getLogger("iglubuild.executors.host")

TERM_GRACE_SECONDS = 3.0


class HostExecutor:
    """Runs phases as host processes; the toolchain is the host's clang/lld."""

    name = "host"

    def __init__(self, target: Target | None = None, isolate_network: bool | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.target = target or load_target()
        # Descriptors every phase inherits: the shared make jobserver's pipe
        # (iglubuild.jobserver); Popen closes all others.
        self.pass_fds = pass_fds
        if isolate_network is None:
            isolate_network = _can_unshare_net()
        self.isolate_network = isolate_network
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._generation = 0  # bumped by terminate(): phases begun before it do not start
        self._toolchain_id: str | None = None

    def describe(self) -> str:
        net = "no network (unshare --net)" if self.isolate_network else "network not isolated"
        return f"host: {self.target.triple} via {self.target.cc}; {net}"

    def check(self) -> None:
        """The compilers, linker and LLVM tools the target names must be installed."""
        require_tool("sh", "dash")
        require_tool(self.target.cc, "clang")
        require_tool(self.target.cxx, "clang")
        require_tool("ld.lld", "lld")
        for tool in self.target.tools.values():
            require_tool(tool, "llvm")

    def toolchain_id(self) -> str:
        """sha256 of `clang --version`, `ld.lld --version` and the target definition.

        A new compiler or a changed target.toml changes every input signature.
        Computed once per executor (it runs two programs).
        """
        if self._toolchain_id is None:
            h = hashlib.sha256()
            for argv in ([self.target.cc, "--version"], ["ld.lld", "--version"]):
                try:
                    out = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL,
                                         check=False, env={"PATH": os.defpath + ":/usr/bin"})
                    h.update(out.stdout)
                except FileNotFoundError:
                    h.update(f"missing {argv[0]}".encode())
            h.update(self.target.digest.encode())
            self._toolchain_id = h.hexdigest()
        return self._toolchain_id

    def run_phase(self, job: PhaseJob, log_file: IO[bytes]) -> int:
        """Run one phase in its own process group, output into `log_file`."""
        with self._lock:
            generation = self._generation
        argv = ["sh", "-e", "-c", job.script]
        if self.isolate_network and not job.network:
            argv = ["unshare", "--net", "--", *argv]
        log_file.flush()
        # Popen rather than iglubuild.run.run: terminate() needs the pid while
        # the phase is still running. The environment is the job's, whitelisted
        # by the build stage; stdin is /dev/null as everywhere else.
        # Spawned and recorded under the lock, so a terminate() either sees the
        # process or has already happened (then the phase does not start).
        with self._lock:
            if self._generation != generation:
                return -signal.SIGTERM
            proc = subprocess.Popen(
                argv,
                cwd=job.cwd,
                env=job.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=self.pass_fds,
            )
            self._running[proc.pid] = proc
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._running.pop(proc.pid, None)
            # Whatever the phase left running in the background dies with it.
            _kill_group(proc.pid, signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM every running phase's process group, SIGKILL what outlives the grace."""
        with self._lock:
            self._generation += 1
            procs = list(self._running.values())
        for proc in procs:
            _kill_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc.pid, signal.SIGKILL)


def _can_unshare_net() -> bool:
    """Root alone is not enough (a container may forbid namespaces): try it once."""
    if os.geteuid() != 0 or which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--", "true"], stdin=subprocess.DEVNULL,
                           capture_output=True, check=False)
    return probe.returncode == 0


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
