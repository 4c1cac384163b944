"""The one door through which iglubuild runs other programs.

Every subprocess goes through `run` (a program that finishes within the call)
or `spawn` (one that outlives the call: phases, QEMU, anything the caller
must be able to stop from another thread). Both give a whitelisted
environment (PATH, LANG=C.UTF-8 and whatever the caller adds, nothing
inherited by accident), stdin from /dev/null, the command line logged in
debug mode, and a failure that says whether the program was missing (127),
killed by a signal, or simply exited non-zero.

`spawn` also holds the one kill policy: the child leads its own process
group, and stopping it means SIGTERM to the whole group, a grace period of
TERM_GRACE_SECONDS, then SIGKILL to whatever is left; leaving the `with`
block always applies it, so nothing a child started outlives its owner.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from iglubuild.errors import IglubuildError, ToolMissingError

log = logging.getLogger("iglubuild.run")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How long a stopped process group may take to exit after SIGTERM before SIGKILL.
TERM_GRACE_SECONDS = 3.0


class CommandError(IglubuildError):
    """A program run by iglubuild failed."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(f"{shlex.join(self.argv)}: {describe_returncode(returncode)}")


def describe_returncode(returncode: int) -> str:
    """Tell a signal from a missing program from an ordinary failure."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    if returncode == 127:
        return "exit status 127 (command not found)"
    if returncode == 126:
        return "exit status 126 (not executable)"
    return f"exit status {returncode}"


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment: PATH, LANG, HOME, TERM-less, plus `extra`."""
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    if extra:
        env.update(extra)
    return env


def require_tool(name: str, package: str | None = None) -> str:
    """Return the path of `name` or raise a one-line error naming the Debian package."""
    path = shutil.which(name, path=DEFAULT_PATH + ":" + os.environ.get("PATH", ""))
    if path is None:
        pkg = package or name
        raise ToolMissingError(f"{name} is not installed", hint=f"apt-get install {pkg}")
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    check: bool = True,
    capture: bool = False,
    new_session: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program with a whitelisted environment and stdin from /dev/null.

    `env` is the complete environment (start from `base_env`); `capture`
    returns stdout/stderr as text. `new_session` puts the child in its own
    process group so the caller can stop the whole tree.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("run: %s%s", shlex.join(args), f" (cwd {cwd})" if cwd else "")
    try:
        proc = subprocess.run(
            args,
            env=dict(env) if env is not None else base_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else stdout,
            stderr=subprocess.PIPE if capture else stderr,
            text=True if capture else None,
            start_new_session=new_session,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(f"{args[0]}: program not found", hint="is it installed?") from exc
    if check and proc.returncode != 0:
        output = ""
        if capture:
            output = (proc.stderr or "") + (proc.stdout or "")
        raise CommandError(args, proc.returncode, output)
    return proc


@contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    pass_fds: Sequence[int] = (),
    new_session: bool = True,
    grace: float = TERM_GRACE_SECONDS,
    umask: int = -1,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-running program; on leaving the block, stop it and its group.

    `env` is the complete environment (start from `base_env`). The child
    leads a new session (its own process group) unless `new_session` is
    False, which only an interactive shell on the caller's terminal wants.
    `umask` (when not -1) is the child's, whatever iglubuild's own is.
    Leaving the block, normally or by an exception, applies `stop`: a child
    that already exited costs nothing, and what it left running in its
    group is killed.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("spawn: %s%s", shlex.join(args), f" (cwd {cwd})" if cwd else "")
    try:
        proc = subprocess.Popen(
            args, env=dict(env), cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
            start_new_session=new_session, pass_fds=tuple(pass_fds), umask=umask,
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(f"{args[0]}: program not found", hint="is it installed?") from exc
    try:
        yield proc
    finally:
        stop(proc, grace=grace, group=new_session)


def stop(proc: subprocess.Popen[bytes], *, grace: float = TERM_GRACE_SECONDS,
         group: bool = True) -> int:
    """The one kill policy: SIGTERM (the group), wait `grace` seconds, SIGKILL; reap.

    Safe to call from another thread while the owner waits, and more than
    once. Returns the exit status (negative for a signal).
    """
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM, group)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever the child left running in its group (background jobs, a
    # daemon) dies with it, even when the child itself exited on its own.
    _signal(proc, signal.SIGKILL, group)
    return proc.wait()


def stop_all(procs: Sequence[subprocess.Popen[bytes]], *,
             grace: float = TERM_GRACE_SECONDS) -> None:
    """`stop` several process groups with one shared grace period (not one each)."""
    for proc in procs:
        if proc.poll() is None:
            _signal(proc, signal.SIGTERM, True)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal(proc, signal.SIGKILL, True)


def _signal(proc: subprocess.Popen[bytes], sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class Usage:
    """What a finished process and the descendants it waited for used (wait4's rusage).

    `cpu_seconds` is user + system time of the whole waited-for tree;
    `peak_rss_kib` is the largest resident set of any one process in it (the
    kernel keeps a maximum per process, not a sum over the tree).
    """

    cpu_seconds: float
    peak_rss_kib: int


def wait_usage(proc: subprocess.Popen[bytes]) -> tuple[int, Usage | None]:
    """`proc.wait()`, plus the resources its process tree used.

    Reaps with wait4(2) so that the kernel's rusage of the child and its
    waited-for descendants is not lost. When another thread reaped it first
    (a `stop` during Ctrl-C), the status is Popen's and the usage None.
    """
    try:
        pid, status, ru = os.wait4(proc.pid, 0)
    except ChildProcessError:
        return proc.wait(), None
    if pid != proc.pid:  # pragma: no cover - wait4 on one pid returns that pid
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, Usage(cpu_seconds=ru.ru_utime + ru.ru_stime,
                                  peak_rss_kib=int(ru.ru_maxrss))


def which(name: str) -> Path | None:
    """Path of a program on the default PATH, or None."""
    found = shutil.which(name, path=DEFAULT_PATH + ":" + os.environ.get("PATH", ""))
    return Path(found) if found else None
