"""The build-dir lock, held and contested by real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iglubuild.errors import LockError
from iglubuild.lock import BuildDirLock
from tests.conftest import REPO_ROOT

HOLDER = (
    "import sys, time; from pathlib import Path\n"
    "from iglubuild.lock import BuildDirLock\n"
    "lock = BuildDirLock(Path(sys.argv[1])); lock.acquire()\n"
    "print('held', flush=True); time.sleep(60)\n"
)


def hold(build_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(build_dir)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    holder = hold(tmp_path / "build")
    try:
        with pytest.raises(LockError) as info:
            BuildDirLock(tmp_path / "build").acquire()
        assert info.value.message == f"build dir {tmp_path / 'build'} is in use by PID {holder.pid}"
        assert f"kill {holder.pid}" in (info.value.hint or "")
        # And a second real process is refused too (exit 2, one line, no traceback).
        other = subprocess.run(
            [sys.executable, "-m", "tests.drivers.run_scheduler", str(tmp_path / "none"),
             str(tmp_path / "build"), "{}"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=30)
        assert other.returncode == 2
        assert f"is in use by PID {holder.pid}" in other.stderr
        assert "Traceback" not in other.stderr
    finally:
        holder.kill()
        holder.wait()


def test_kill_9_releases_the_lock(tmp_path: Path) -> None:
    holder = hold(tmp_path / "build")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with BuildDirLock(tmp_path / "build") as lock:
        assert lock.held
        assert (tmp_path / "build" / ".lock").read_text() == f"{os.getpid()}\n"


def test_release_on_exit_and_reacquire(tmp_path: Path) -> None:
    with BuildDirLock(tmp_path / "b"):
        with pytest.raises(LockError):
            BuildDirLock(tmp_path / "b").acquire()  # a second descriptor, same process
    with BuildDirLock(tmp_path / "b") as again:
        assert again.held
    assert (tmp_path / "b" / ".lock").read_text() == ""


def test_lock_is_not_inherited_by_build_processes(tmp_path: Path) -> None:
    # A build that leaves a background process behind must not keep the dir locked.
    with BuildDirLock(tmp_path / "b"):
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        with BuildDirLock(tmp_path / "b") as lock:
            assert lock.held
    finally:
        child.kill()
        child.wait()
