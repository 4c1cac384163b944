"""`iglubuild chroot [NAME]`: an interactive shell inside the build root.

The shell runs in the same sandbox a phase gets (overlay over the read-only
build root, no network), on this terminal. With NAME, that package's kept
work folder and its sysroot are bind-mounted at their host paths when the
build directory has them, so a failed build can be replayed by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from iglubuild.chroot import ChrootExecutor
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


def package_folders(settings: Settings, name: str) -> tuple[list[Path], list[Path]]:
    """(writable, readonly) host folders of NAME that exist in the build directory."""
    work = settings.work_dir / name
    candidates_rw = [work]
    candidates_ro = [settings.build_dir / "sysroot" / name, work / "sysroot"]
    rw = [p.resolve() for p in candidates_rw if p.is_dir()]
    ro = [p.resolve() for p in candidates_ro if p.is_dir() and not any(
        p.resolve().is_relative_to(w) for w in rw)]
    return rw, ro


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not sys.stdin.isatty():
        raise UsageError("iglubuild chroot needs a terminal on standard input",
                         hint="run it from an interactive shell")
    executor = ChrootExecutor.from_settings(settings, args.manifest)
    writable: list[Path] = []
    readonly: list[Path] = []
    cwd = Path("/root")
    if args.name:
        writable, readonly = package_folders(settings, args.name)
        if not writable and not readonly:
            raise UsageError(f"no work folder or sysroot for {args.name} in {settings.build_dir}",
                             hint="build it first (a failed build keeps its work folder)")
        cwd = writable[0] if writable else readonly[0]
    env = base_env({"TERM": os.environ.get("TERM", "xterm"), "PS1": r"(iglubuild) \w # "})
    if readonly:
        env["SYSROOT"] = str(readonly[0])
    job = PhaseJob(package=args.name or "shell", phase="chroot", script="", cwd=cwd,
                   env=env, writable=tuple(writable), readonly=tuple(readonly))
    for p in writable + readonly:
        print(f"mounted: {p}")
    return executor.interactive(job)
