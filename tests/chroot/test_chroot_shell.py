"""`iglubuild chroot [NAME]`: a real interactive shell on a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iglubuild.toolchain_root import BuildRoot, load_manifest
from tests.chroot.helpers import MANIFEST, MUSL_FLAGS, PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture
def build_dir(build_root: BuildRoot, tmp_path: Path) -> Path:
    """A build directory whose toolchain/ holds the session's build root (by symlink)."""
    bdir = tmp_path / "build"
    tdir = bdir / "toolchain"
    tdir.mkdir(parents=True)
    # Record the root as made from the project's manifest, as `toolchain build` would.
    record = {"id": build_root.id, "manifest_digest": load_manifest(MANIFEST).digest,
              "packages": build_root.packages, "created": build_root.created}
    (tdir / f"root-{build_root.id}").symlink_to(build_root.path)
    (tdir / f"root-{build_root.id}.json").write_text(json.dumps(record))
    return bdir


def _talk(argv: list[str], typed: bytes, timeout: float = 30) -> tuple[int, str]:
    """Run argv on a new pseudo-terminal, type `typed` once it prompts, return (status, screen)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes iglubuild on the terminal
        os.environ["PYTHONPATH"] = str(PROJECT)
        os.execv(sys.executable, [sys.executable, "-m", "iglubuild", *argv])
    out = b""
    sent = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closed: the shell has exited
                break
            if not chunk:
                break
            out += chunk
        if not sent and b"# " in out:
            os.write(fd, typed)
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_shell_runs_in_the_build_root_with_the_package_work_folder(
    build_dir: Path, build_root: BuildRoot
) -> None:
    work = build_dir / "work" / "demo"
    (work / "src").mkdir(parents=True)
    (work / "sysroot" / "usr" / "include").mkdir(parents=True)
    (work / "src" / "note.txt").write_text("kept from the failed build\n")
    typed = (b"echo answer=$((6*7)); cat note.txt; echo sysroot=$SYSROOT; "
             b"tty; touch /usr/bin/from-shell; echo made > made.txt; exit 7\n")
    status, screen = _talk(["--build-dir", str(build_dir), "chroot", "demo"], typed)
    assert status == 7, screen
    assert "answer=42" in screen
    assert "\n/dev/pts/" in screen.replace("\r", "")  # the terminal is visible inside
    assert "kept from the failed build" in screen
    assert f"sysroot={work.resolve() / 'sysroot'}" in screen
    assert (work / "src" / "made.txt").read_text() == "made\n"  # the work folder is writable
    assert not (build_root.path / "usr/bin/from-shell").exists()  # the root is not


def test_shell_without_a_terminal_is_refused(build_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "iglubuild", "--build-dir", str(build_dir), "chroot"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT)},
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    first = proc.stderr.splitlines()[0]
    assert first == "error: iglubuild chroot needs a terminal on standard input"


def test_shell_for_an_unknown_package_says_so(build_dir: Path) -> None:
    status, screen = _talk(["--build-dir", str(build_dir), "chroot", "nosuch"], b"exit\n",
                           timeout=15)
    assert status == 2
    assert "no work folder for nosuch" in screen
    assert "Traceback" not in screen


def test_shell_replays_a_build_with_the_wrappers_shared_sysroot(
    build_dir: Path, musl_sysroot: Path
) -> None:
    # The build stage's layout: wrappers in work/NAME/bin pin a shared sysroot.
    work = build_dir / "work" / "replay"
    (work / "src").mkdir(parents=True)
    (work / "bin").mkdir()
    wrapper = work / "bin" / "x86_64-linux-musl-cc"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/clang {MUSL_FLAGS} --sysroot={musl_sysroot}'
                       ' "$@"\n')
    wrapper.chmod(0o755)
    (work / "src" / "hi.c").write_text(
        '#include <stdio.h>\nint main(void) { puts("replayed"); return 0; }\n')
    typed = (b"x86_64-linux-musl-cc -static -o hi hi.c && ./hi; "
             b"touch $SYSROOT/usr/lib/evil; exit\n")
    status, screen = _talk(["--build-dir", str(build_dir), "chroot", "replay"], typed,
                           timeout=60)
    assert status == 1, screen  # the touch in the read-only sysroot fails
    assert "replayed\n" in screen.replace("\r", "")
    assert "Read-only file system" in screen
    assert f"mounted at its own path: {musl_sysroot}" in screen
    assert not (musl_sysroot / "usr/lib/evil").exists()
    assert subprocess.run([work / "src" / "hi"], capture_output=True,
                          text=True).stdout == "replayed\n"
