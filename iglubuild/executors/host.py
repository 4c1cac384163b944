"""The host executor: phases run directly on this machine, cross-compiling for musl.

Each phase is `sh -e -c SCRIPT` in its own session (process group), so
`terminate()` can stop the phase and everything it started -- make, its
compilers, stray background jobs. As root, each phase also gets its own
namespaces (the chroot executor's, without the chroot: see
iglubuild.executors.sandbox): a PID namespace whose init is ours, so that
nothing a phase starts outlives it, even when iglubuild itself is killed
with kill -9 (the namespace is tied to iglubuild by PR_SET_PDEATHSIG); an
empty network namespace (builds have no network), or for a phase that
sends compiles to the distcc farm the farm's namespace, which reaches the
volunteers' distcc ports and nothing else (iglubuild.farmnet); the host name
"iglubuild". Without root the host executor can do none of that: nothing is
confined, phases then see the host's whole network (with --farm, too: the
farm's namespace needs root, so they get the volunteers' own addresses) and
a killed iglubuild leaves them running (`isolated` says which).
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from iglubuild.errors import ToolMissingError
from iglubuild.executor import PhaseJob, UsageSink
from iglubuild.executors import PhaseProcesses
from iglubuild.executors.sandbox import sandbox_argv, write_spec
from iglubuild.run import require_tool, run, wait_usage, which
from iglubuild.target import Target, load_target

log = logging.getLogger("iglubuild.executors.host")


class HostExecutor:
    """Runs phases as host processes; the toolchain is the host's clang/lld."""

    name = "host"

    def __init__(self, target: Target | None = None, isolated: bool | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.target = target or load_target()
        # Descriptors every phase inherits: the shared make jobserver's pipe
        # (iglubuild.jobserver); Popen closes all others.
        self.pass_fds = pass_fds
        self.usage_sink: UsageSink | None = None
        if isolated is None:
            isolated = _can_unshare()
        self.isolated = isolated
        self._phases = PhaseProcesses()
        self._toolchain_id: str | None = None

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
                    out = run(argv, capture=True, check=False,
                              env={"PATH": os.defpath + ":/usr/bin"})
                    h.update(out.stdout.encode())
                except ToolMissingError:
                    h.update(f"missing {argv[0]}".encode())
            h.update(self.target.digest.encode())
            self._toolchain_id = h.hexdigest()
        return self._toolchain_id

    def run_phase(self, job: PhaseJob, log_file: IO[bytes]) -> int:
        """Run one phase in its own process group, output into `log_file`."""
        ticket = self._phases.ticket()
        log_file.flush()
        if not self.isolated:
            return self._run(ticket, job, ["sh", "-e", "-c", job.script], log_file)
        with tempfile.TemporaryDirectory(prefix="iglubuild-phase-") as tmp:
            spec, status = Path(tmp) / "spec", Path(tmp) / "status"
            shell = which("sh") or Path("/bin/sh")
            netns = job.netns.path if job.netns is not None else None
            # A joined namespace (the farm's) has its loopback up already.
            write_spec(spec, None, [], [str(shell), "-e", "-c", job.script], job.cwd, job.env,
                       job.network or netns is not None, status)
            rc = self._run(ticket, job, sandbox_argv(spec, job.network, netns), log_file)
            # The init records the phase's own status (a signal told from exit
            # 128+N); without it the init itself was killed.
            try:
                return int(status.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return rc

    def _run(self, ticket: int, job: PhaseJob, argv: list[str], log_file: IO[bytes]) -> int:
        # The environment is the job's, whitelisted by the build stage. Leaving
        # the block kills whatever the phase left running in its group.
        with self._phases.start(ticket, argv, env=job.env, cwd=str(job.cwd), stdout=log_file,
                                stderr=subprocess.STDOUT, pass_fds=self.pass_fds) as proc:
            if proc is None:
                return -signal.SIGTERM
            rc, usage = wait_usage(proc)
        if usage is not None and self.usage_sink is not None:
            self.usage_sink(job.package, job.phase, usage)
        return rc

    def terminate(self) -> None:
        """SIGTERM every running phase's process group, SIGKILL what outlives the grace."""
        self._phases.terminate()


def _can_unshare() -> bool:
    """Root alone is not enough (a container may forbid namespaces): try it once."""
    if os.geteuid() != 0 or which("unshare") is None or which("setpriv") is None:
        return False
    probe = run(["unshare", "--mount", "--pid", "--uts", "--ipc", "--net", "--fork", "--",
                 "true"], capture=True, check=False)
    return probe.returncode == 0
