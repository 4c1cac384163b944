"""The chroot executor: each phase in private namespaces over a read-only build root.

How the sandbox is made (namespaces, overlay, binds, our PID 1) is data in
iglubuild.executors.sandbox; this module runs phases in it and stops them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from iglubuild.errors import BuildError
from iglubuild.executor import Mount, PhaseJob, UsageSink
from iglubuild.executors import PhaseProcesses, check_phase_folders
from iglubuild.executors.sandbox import (
    SHELL,
    describe,
    host_tools,
    phase_mounts,
    remove_scratch,
    require_root,
    sandbox_argv,
    write_spec,
)
from iglubuild.run import wait_usage
from iglubuild.settings import Settings

log = logging.getLogger("iglubuild.executors.chroot")


class ChrootExecutor:
    """Runs phases in namespaces over an overlay of a read-only build root."""

    name = "chroot"

    def __init__(self, root: Path, toolchain_id: str, scratch_dir: Path,
                 debug: bool = False) -> None:
        self.root = Path(root)
        self._toolchain_id = toolchain_id
        self.scratch_dir = Path(scratch_dir)
        self.debug = debug
        self._phases = PhaseProcesses()
        # The run's make jobserver descriptors (set by the build engine, as for
        # the host executor). They stay open through setpriv, unshare and our
        # init, so make in the chroot takes the run's tokens instead of -j1.
        self.pass_fds: tuple[int, ...] = ()
        self.usage_sink: UsageSink | None = None

    @classmethod
    def from_settings(cls, settings: Settings, manifest: Path | None = None) -> ChrootExecutor:
        """The executor for the build root that matches the project's manifest.

        Raises a one-line BuildError naming `iglubuild toolchain build` when
        there is none; scratch folders go to <build-dir>/tmp/chroot.
        """
        from iglubuild import toolchain_root  # imported late: loading it costs start-up time

        root = toolchain_root.current_root(settings, manifest)
        return cls(root.path, root.id, settings.build_dir / "tmp" / "chroot",
                   debug=settings.debug)

    def check(self) -> None:
        require_root("the chroot executor")
        host_tools()
        if not (self.root / "bin" / "sh").exists():
            raise BuildError(f"{self.root}: not a build root (no /bin/sh)",
                             hint="run: iglubuild toolchain build")

    def toolchain_id(self) -> str:
        return self._toolchain_id

    def mounts_for(self, job: PhaseJob, scratch: Path, interactive: bool = False) -> list[Mount]:
        """The sandbox of `job` as data (what --debug prints)."""
        check_phase_folders(job)
        writable = list(job.writable)
        if job.cwd not in writable and not any(job.cwd.is_relative_to(w) for w in writable):
            writable.append(job.cwd)
        return phase_mounts(self.root, scratch, writable, job.readonly, job.extra_mounts,
                            host_pts=interactive)

    def run_phase(self, job: PhaseJob, log_file: IO[bytes]) -> int:
        """Run one phase; its output goes to `log_file`; returns its exit status."""
        ticket = self._phases.ticket()
        self.check()
        argv = [SHELL, "-e", "-c", job.script]
        return self._run(ticket, job, argv, stdin=subprocess.DEVNULL, stdout=log_file,
                         stderr=subprocess.STDOUT, interactive=False)

    def interactive(self, job: PhaseJob) -> int:
        """An interactive shell in the sandbox of `job`, on this process's terminal."""
        ticket = self._phases.ticket()
        self.check()
        shell = ["/bin/bash", "-i"] if (self.root / "bin/bash").exists() else [SHELL, "-i"]
        return self._run(ticket, job, shell, stdin=None, stdout=None, stderr=None,
                         interactive=True)

    def _run(self, ticket: int, job: PhaseJob, argv: list[str], *, stdin: int | None,
             stdout: IO[bytes] | int | None, stderr: int | None, interactive: bool) -> int:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_scratch()
        scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{job.package}-{job.phase}-",
                                        dir=self.scratch_dir))
        try:
            for sub in ("upper", "work", "root"):
                (scratch / sub).mkdir()
            mounts = self.mounts_for(job, scratch, interactive=interactive)
            netns = job.netns.path if job.netns is not None else None
            if self.debug:
                log.debug("sandbox of %s %s:\n%s", job.package, job.phase,
                          describe(mounts, job.network, netns))
            spec = scratch / "spec"
            status = scratch / "status"
            # A joined namespace (the farm's) has its loopback up already.
            write_spec(spec, scratch / "root", mounts, argv, job.cwd, job.env,
                       job.network or netns is not None, status,
                       least_privilege=not interactive)
            cmd = sandbox_argv(spec, job.network, netns)
            # An interactive shell stays in the terminal's process group so
            # that it gets the terminal; a phase leads its own group.
            with self._phases.start(ticket, cmd, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                    stdin=stdin, stdout=stdout, stderr=stderr,
                                    pass_fds=self.pass_fds,
                                    new_session=not interactive) as proc:
                if proc is None:
                    return -signal.SIGTERM
                rc, usage = wait_usage(proc)
            if usage is not None and self.usage_sink is not None:
                self.usage_sink(job.package, job.phase, usage)
            # The init writes the phase's own status (so a phase killed by a
            # signal is told from one that exits 128+N); without it the init
            # itself was killed and unshare's status is all there is.
            try:
                return int(status.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return rc
        finally:
            remove_scratch(scratch)

    def _remove_stale_scratch(self) -> None:
        # A scratch folder whose iglubuild process is gone was left by a crash
        # or a kill -9 (its mounts died with the namespace; only files remain).
        for entry in self.scratch_dir.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
                remove_scratch(entry)

    def terminate(self) -> None:
        """Stop every running phase: SIGTERM, then SIGKILL after a grace period.

        The signal goes to the phase's whole process group (unshare, the init
        and the phase's processes). Whatever else lives in the namespace dies
        with its PID 1, and unshare's --kill-child makes sure PID 1 does.
        """
        self._phases.terminate()
