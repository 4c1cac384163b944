"""The one door through which iglubuild runs other programs.

Every subprocess goes through `run`: a whitelisted environment (PATH,
LANG=C.UTF-8 and whatever the caller adds, nothing inherited by accident),
stdin from /dev/null, the command line logged in debug mode, and a failure
that says whether the program was missing (127), killed by a signal, or
simply exited non-zero.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from iglubuild.errors import IglubuildError, ToolMissingError

log = logging.getLogger("iglubuild.run")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def which(name: str) -> Path | None:
    """Path of a program on the default PATH, or None."""
    found = shutil.which(name, path=DEFAULT_PATH + ":" + os.environ.get("PATH", ""))
    return Path(found) if found else None
