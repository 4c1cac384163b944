"""The one process door: run.spawn's kill policy on real processes."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from iglubuild.executors import PhaseProcesses
from iglubuild.run import base_env, spawn


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, limit: float = 2.0) -> bool:
    """A SIGKILL is delivered asynchronously: give the kernel a moment."""
    deadline = time.monotonic() + limit
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _wait_file(path: Path, limit: float = 5.0) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def test_leaving_the_block_kills_what_the_child_left_in_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    script = f"sleep 300 & echo $! > {pidfile}; exit 0"
    with spawn(["sh", "-c", script], env=base_env()) as proc:
        assert proc.wait() == 0
        bg = int(_wait_file(pidfile))
        assert _alive(bg)  # the background job outlived its parent...
    assert _gone(bg)  # ...but not the block


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = f"trap '' TERM; echo up > {ready}; while :; do sleep 0.1; done"
    start = time.monotonic()
    with pytest.raises(RuntimeError), spawn(["sh", "-c", script], env=base_env(),
                                            grace=0.5) as proc:
        _wait_file(ready)
        raise RuntimeError("the owner fails while the child runs")
    took = time.monotonic() - start
    assert proc.returncode == -9  # SIGKILL after SIGTERM was ignored
    assert 0.5 <= took < 5


def test_the_environment_is_exactly_the_one_given(tmp_path: Path) -> None:
    out = tmp_path / "env"
    os.environ["IGLUBUILD_LEAK_CHECK"] = "leaked"
    try:
        with open(out, "wb") as fh, spawn(["env"], env={"PATH": "/usr/bin:/bin", "X": "1"},
                                          stdout=fh) as proc:
            proc.wait()
    finally:
        del os.environ["IGLUBUILD_LEAK_CHECK"]
    lines = set(out.read_text().split())
    assert lines == {"PATH=/usr/bin:/bin", "X=1"}


def test_the_command_line_is_logged_in_debug_mode(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="iglubuild.run"), \
            spawn(["true", "an argument"], env=base_env()) as proc:
        proc.wait()
    assert "spawn: true 'an argument'" in caplog.text


def test_no_phase_starts_after_terminate() -> None:
    phases = PhaseProcesses()
    ticket = phases.ticket()
    phases.terminate()
    with phases.start(ticket, ["true"], env=base_env()) as proc:
        assert proc is None
    with phases.start(phases.ticket(), ["true"], env=base_env()) as proc:
        assert proc is not None and proc.wait() == 0


def test_terminate_stops_running_phases_with_one_grace(tmp_path: Path) -> None:
    phases = PhaseProcesses()
    results: list[int] = []

    def one(i: int) -> None:
        script = f"trap 'exit 7' TERM; echo up > {tmp_path / str(i)}; while :; do sleep 0.05; done"
        with phases.start(phases.ticket(), ["sh", "-c", script], env=base_env()) as proc:
            assert proc is not None
            results.append(proc.wait())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for i in range(3):
        _wait_file(tmp_path / str(i))
    start = time.monotonic()
    phases.terminate()
    for t in threads:
        t.join(10)
    assert sorted(results) == [7, 7, 7]  # SIGTERM reached each shell, which exited itself
    assert time.monotonic() - start < 3


def test_a_missing_program_is_one_line() -> None:
    from iglubuild.errors import ToolMissingError

    with pytest.raises(ToolMissingError, match="no-such-program-here: program not found"), \
            spawn(["no-such-program-here"], env=base_env()):
        pass


def test_spawn_never_reads_our_stdin() -> None:
    with spawn(["sh", "-c", "read x; echo rc=$?"], env=base_env(),
               stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=5)
    assert out.strip() == b"rc=1"  # EOF at once: stdin is /dev/null
