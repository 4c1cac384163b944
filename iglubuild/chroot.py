"""The chroot executor: each phase in private namespaces over a read-only build root.

A phase runs under util-linux ``unshare --mount --pid --net --fork --kill-child``
with our own small PID 1 (iglubuild/_nsinit.py) that performs the mounts and
starts ``sh -e -c SCRIPT`` chrooted into an overlay of the build root:

- mount namespace: every mount exists only inside it and vanishes with its last
  process, even after ``kill -9``, so the host's mount table never changes;
- PID namespace: when PID 1 exits the kernel kills everything left, so no
  stray daemon or background job outlives a phase;
- network namespace: only a loopback interface, no route out (builds have no
  network; only the fetch stage talks to the network);
- the root is an overlay whose lower layer is the build root and whose upper
  and work layers live in a scratch folder per phase, so a phase can never
  change the build root; the work folder, sysroot and $pkgdir are bind-mounted
  at their host paths, so paths are identical inside and out.

The sandbox is data: `phase_mounts` returns a list of `Mount`, written down
for the init and printed with --debug.
"""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO

from iglubuild.errors import BuildError, NeedsRootError
from iglubuild.executor import Mount, PhaseJob
from iglubuild.run import require_tool
from iglubuild.settings import Settings

log = logging.getLogger("iglubuild.chroot")

NSINIT = Path(__file__).with_name("_nsinit.py")
SHELL = "/bin/sh"
TERM_GRACE_SECONDS = 3.0
# Builds see this host name, not the machine's: nothing the build embeds
# (configure's `uname -n`, a build-info string) depends on where it ran.
HOSTNAME = "iglubuild"


def require_root(what: str) -> None:
    """Namespaces, mounts and chroot need root; say so in one line."""
    if os.geteuid() != 0:
        raise NeedsRootError(
            f"{what} needs root (namespaces, mounts, chroot)",
            hint="run iglubuild as root, e.g. with sudo",
        )


def _host_tools() -> tuple[str, str]:
    unshare = require_tool("unshare", "util-linux")
    setpriv = require_tool("setpriv", "util-linux")
    return unshare, setpriv


def _overlay_safe(path: Path) -> None:
    # overlayfs options are a comma separated list with ':' between lower layers.
    if any(c in str(path) for c in ",:\\"):
        raise BuildError(
            f"{path}: the chroot executor cannot use a path containing ',', ':' or '\\'",
            hint="move the build directory to a plain path",
        )


DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def base_mounts(host_pts: bool = False) -> list[Mount]:
    """What every sandbox has above its root: /proc, a minimal /dev, a tmpfs /tmp.

    `host_pts` shows the host's /dev/pts (for an interactive shell on a host
    terminal) instead of a private devpts instance.
    """
    dev_opts = DEV_NODES + (("host-pts",) if host_pts else ())
    return [
        Mount("proc", Path("/proc")),
        Mount("dev", Path("/dev"), options=dev_opts),
        Mount("tmpfs", Path("/tmp"), options=("mode=1777",)),
    ]


def phase_mounts(
    root: Path,
    scratch: Path,
    writable: Iterable[Path] = (),
    readonly: Iterable[Path] = (),
    extra: Iterable[Mount] = (),
    host_pts: bool = False,
) -> list[Mount]:
    """The mounts of one phase, in the order they are made.

    The overlay comes first (it is the new root), then /proc, /dev and /tmp,
    then the host folders, shallowest first, so a folder under /tmp lands on
    the sandbox's tmpfs and a pkgdir inside the work folder is not hidden.
    """
    for p in (root, scratch):
        _overlay_safe(p)
    overlay = Mount(
        "overlay",
        Path("/"),
        source=root,
        options=(
            f"lowerdir={root}",
            f"upperdir={scratch / 'upper'}",
            f"workdir={scratch / 'work'}",
        ),
    )
    binds = [Mount("bind", p, source=p) for p in writable]
    binds += [Mount("bind", p, source=p, readonly=True) for p in readonly]
    binds += list(extra)
    binds.sort(key=lambda m: len(m.target.parts))
    return [overlay, *base_mounts(host_pts), *binds]


def _mount_data(m: Mount) -> dict[str, object]:
    d = asdict(m)
    d["target"] = str(m.target)
    d["source"] = str(m.source) if m.source else None
    d["options"] = list(m.options)
    return d


def sandbox_argv(spec_file: Path, network: bool) -> list[str]:
    """The host command that enters fresh namespaces and runs the init with `spec_file`.

    setpriv --pdeathsig KILL ties the sandbox to the iglubuild thread that
    started it: if iglubuild dies, even by kill -9, unshare is killed, and
    its --kill-child takes PID 1 and so the whole namespace with it.
    """
    unshare, setpriv = _host_tools()
    ns = ["--mount", "--pid", "--uts", "--ipc", "--fork", "--kill-child",
          "--propagation", "private"]
    if not network:
        ns.insert(2, "--net")
    return [setpriv, "--pdeathsig", "KILL", "--", unshare, *ns,
            sys.executable, "-I", "-S", str(NSINIT), str(spec_file)]


def write_spec(
    spec_file: Path,
    root: Path,
    mounts: Sequence[Mount],
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    network: bool,
    status_file: Path | None = None,
) -> None:
    """Write the sandbox description the init reads (root = where the new / is built).

    `status_file` receives the command's exit code (negative for a signal).
    """
    spec = {
        "status_file": str(status_file) if status_file else None,
        "root": str(root),
        "mounts": [_mount_data(m) for m in mounts],
        "argv": list(argv),
        "cwd": str(cwd),
        "env": dict(env),
        "loopback": not network,
        "hostname": HOSTNAME,
    }
    # marshal: the init runs with the same interpreter and reads it without
    # importing json (which costs tens of ms per phase); --debug shows it as text.
    spec_file.write_bytes(marshal.dumps(spec))


def describe(mounts: Sequence[Mount], network: bool) -> str:
    """Human-readable sandbox, one mount a line (for --debug)."""
    lines = ["namespaces: mount, pid, uts, ipc" + ("" if network else ", net (loopback only)")]
    lines += ["  " + m.describe() for m in mounts]
    return "\n".join(lines)


def _host_mountpoints_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix) or point + "/" == prefix:
                found.append(point)
    return found


def remove_scratch(scratch: Path) -> None:
    """Delete a phase's scratch folder, refusing if anything is mounted below it.

    The sandbox's mounts live in its own namespace, so the host never sees a
    mount here; the check guards against deleting through a bind mount into a
    work folder if that ever stops being true.
    """
    if not scratch.exists():
        return
    mounted = _host_mountpoints_under(scratch)
    if mounted:
        raise BuildError(
            f"{scratch}: still has mounts ({', '.join(mounted)}); not deleting it",
            hint="unmount them with umount -R, then delete the folder",
        )
    shutil.rmtree(scratch, ignore_errors=True)


class ChrootExecutor:
    """Runs phases in namespaces over an overlay of a read-only build root."""

    name = "chroot"

    def __init__(self, root: Path, toolchain_id: str, scratch_dir: Path,
                 debug: bool = False) -> None:
        self.root = Path(root)
        self._toolchain_id = toolchain_id
        self.scratch_dir = Path(scratch_dir)
        self.debug = debug
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        # The run's make jobserver descriptors (set by the build engine, as for
        # the host executor). They stay open through setpriv, unshare and our
        # init, so make in the chroot takes the run's tokens instead of -j1.
        self.pass_fds: tuple[int, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, manifest: Path | None = None) -> ChrootExecutor:
        """The executor for the build root that matches the project's manifest.

        Raises a one-line BuildError naming `iglubuild toolchain build` when
        there is none; scratch folders go to <build-dir>/tmp/chroot.
        """
        from iglubuild import buildroot  # buildroot uses this module's sandbox

        root = buildroot.current_root(settings, manifest)
        return cls(root.path, root.id, settings.build_dir / "tmp" / "chroot",
                   debug=settings.debug)

    def describe(self) -> str:
        return (f"chroot: build root {self._toolchain_id} at {self.root} (overlay, read-only); "
                "namespaces mount, pid, uts, ipc, net (loopback only)")

    def check(self) -> None:
        require_root("the chroot executor")
        _host_tools()
        if not (self.root / "bin" / "sh").exists():
            raise BuildError(f"{self.root}: not a build root (no /bin/sh)",
                             hint="run: iglubuild toolchain build")

    def toolchain_id(self) -> str:
        return self._toolchain_id

    def mounts_for(self, job: PhaseJob, scratch: Path, interactive: bool = False) -> list[Mount]:
        """The sandbox of `job` as data (what --debug prints)."""
        for p in (*job.writable, *job.readonly):
            if not p.is_absolute() or not p.exists():
                raise BuildError(f"{job.package} {job.phase}: cannot mount {p}: no such folder",
                                 hint="folders given to a phase must exist and be absolute")
        writable = list(job.writable)
        if job.cwd not in writable and not any(_is_under(job.cwd, w) for w in writable):
            writable.append(job.cwd)
        return phase_mounts(self.root, scratch, writable, job.readonly, job.extra_mounts,
                            host_pts=interactive)

    def run_phase(self, job: PhaseJob, log_file: IO[bytes]) -> int:
        """Run one phase; its output goes to `log_file`; returns its exit status."""
        self.check()
        argv = [SHELL, "-e", "-c", job.script]
        return self._run(job, argv, stdin=subprocess.DEVNULL, stdout=log_file,
                         stderr=subprocess.STDOUT, new_session=True)

    def interactive(self, job: PhaseJob) -> int:
        """An interactive shell in the sandbox of `job`, on this process's terminal."""
        self.check()
        return self._run(job, ["/bin/bash", "-i"] if (self.root / "bin/bash").exists()
                         else [SHELL, "-i"], stdin=None, stdout=None, stderr=None,
                         new_session=False)

    def _run(self, job: PhaseJob, argv: list[str], *, stdin: int | None,
             stdout: IO[bytes] | int | None, stderr: int | None, new_session: bool) -> int:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_scratch()
        scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{job.package}-{job.phase}-",
                                        dir=self.scratch_dir))
        try:
            for sub in ("upper", "work", "root"):
                (scratch / sub).mkdir()
            mounts = self.mounts_for(job, scratch, interactive=stdin is None)
            if self.debug:
                log.debug("sandbox of %s %s:\n%s", job.package, job.phase,
                          describe(mounts, job.network))
            spec = scratch / "spec"
            status = scratch / "status"
            write_spec(spec, scratch / "root", mounts, argv, job.cwd, job.env, job.network,
                       status)
            cmd = sandbox_argv(spec, job.network)
            # Not run.run(): the executor must hold the process to stop it from
            # another thread (terminate), so it spawns with the same rules:
            # complete environment given, stdin /dev/null for phases.
            # Spawned under the lock: otherwise terminate() could run between
            # Popen returning (the phase already running) and the process being
            # recorded, and miss it.
            with self._lock:
                proc = subprocess.Popen(cmd, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                        stdin=stdin, stdout=stdout, stderr=stderr,
                                        start_new_session=new_session,
                                        pass_fds=self.pass_fds)
                self._procs.add(proc)
            try:
                rc = proc.wait()
            except BaseException:
                _kill(proc)
                raise
            finally:
                with self._lock:
                    self._procs.discard(proc)
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
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _is_under(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return True


def make_chroot_executor(settings: Settings) -> ChrootExecutor:
    """`--executor chroot`: the executor over the build root matching the manifest."""
    return ChrootExecutor.from_settings(settings)
