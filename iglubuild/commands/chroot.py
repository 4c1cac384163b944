"""`iglubuild chroot [NAME]`: an interactive shell inside the build root.

The shell runs in the same sandbox a phase gets (overlay over the read-only
build root, no network), on this terminal. With NAME, that package's kept
work folder and its sysroot are bind-mounted at their host paths when the
build directory has them, so a failed build can be replayed by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from iglubuild.errors import UsageError
from iglubuild.executor import PhaseJob
from iglubuild.run import base_env
from iglubuild.settings import Settings

NAME = "chroot"
HELP = "an interactive shell in the build root (with NAME's work folder and sysroot)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="package whose work folder and sysroot to mount")
    parser.add_argument("--manifest", type=Path, default=None, metavar="FILE",
                        help="build root manifest (toolchain/buildroot.toml)")


def package_folders(settings: Settings, name: str) -> tuple[Path | None, Path | None]:
    """(work folder, sysroot) of NAME in the build directory, None where absent.

    The build stage keeps a failed package's work folder at <build-dir>/work/NAME,
    with compiler wrappers in work/NAME/bin that pin its sysroot (a folder of its
    own, or a shared one under <build-dir>/sysroots): the sysroot is read from them.
    """
    work = settings.work_dir / name
    if not work.is_dir():
        return None, None
    own = work / "sysroot"
    if own.is_dir():
        return work.resolve(), own.resolve()
    for wrapper in sorted((work / "bin").glob("*cc")) if (work / "bin").is_dir() else []:
        found = re.search(r"--sysroot=(\S+)", wrapper.read_text(errors="replace"))
        if found and Path(found.group(1).strip("'\"")).is_dir():
            return work.resolve(), Path(found.group(1).strip("'\"")).resolve()
    return work.resolve(), None


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not sys.stdin.isatty():
        raise UsageError("iglubuild chroot needs a terminal on standard input",
                         hint="run it from an interactive shell")
    from iglubuild.executors.chroot import ChrootExecutor

    executor = ChrootExecutor.from_settings(settings, args.manifest)
    cwd = Path("/root")
    env = base_env({"TERM": os.environ.get("TERM", "xterm")})
    writable: tuple[Path, ...] = ()
    readonly: tuple[Path, ...] = ()
    if args.name:
        work, sysroot = package_folders(settings, args.name)
        if work is None:
            raise UsageError(f"no work folder for {args.name} in {settings.work_dir}",
                             hint="build it first (a failed build keeps its work folder)")
        writable = (work,)
        cwd = work / "src" if (work / "src").is_dir() else work
        if sysroot is not None:
            env["SYSROOT"] = str(sysroot)
            if not sysroot.is_relative_to(work):
                readonly = (sysroot,)
        if (work / "bin").is_dir():
            env["PATH"] = f"{work / 'bin'}:{env['PATH']}"
    job = PhaseJob(package=args.name or "shell", phase="chroot", script="", cwd=cwd,
                   env=env, writable=writable, readonly=readonly)
    for p in writable + readonly:
        print(f"mounted at its own path: {p}")
    return executor.interactive(job)
