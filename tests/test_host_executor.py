"""The host executor: real processes, real process groups, a real network namespace."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from iglubuild.executor import PhaseJob
from iglubuild.executors.host import HostExecutor
from iglubuild.run import base_env
from iglubuild.target import DEFAULT_TARGET_FILE, load_target


def job(tmp_path: Path, script: str, **kw: object) -> PhaseJob:
    return PhaseJob(package="t", phase="build", script=script, cwd=tmp_path,
                    env=base_env({"MARK": "1"}), **kw)  # type: ignore[arg-type]


def test_runs_sh_e_in_cwd_with_exact_env(tmp_path: Path) -> None:
    ex = HostExecutor()
    log = tmp_path / "log"
    with log.open("ab") as f:
        rc = ex.run_phase(job(tmp_path, "pwd; echo MARK=$MARK; false; echo not reached"), f)
    assert rc == 1  # sh -e stops at `false`
    text = log.read_text()
    assert f"{tmp_path}\nMARK=1\n" == text


def test_stderr_goes_to_the_log_too(tmp_path: Path) -> None:
    ex = HostExecutor()
    with (tmp_path / "log").open("ab") as f:
        assert ex.run_phase(job(tmp_path, "echo to-stderr >&2; exit 4"), f) == 4
    assert "to-stderr" in (tmp_path / "log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_phase_has_no_network(tmp_path: Path) -> None:
    ex = HostExecutor()
    assert ex.isolated
    with (tmp_path / "log").open("ab") as f:
        assert ex.run_phase(job(tmp_path, "cat /proc/net/dev"), f) == 0
    interfaces = [line.split(":")[0].strip() for line in
                  (tmp_path / "log").read_text().splitlines() if ":" in line]
    assert interfaces == ["lo"]


def _pids_running(command: str) -> list[int]:
    """Host PIDs of live processes whose command line is exactly `command`.

    Phases may run in their own PID namespace, where `$!` is not the host's PID.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if cmdline.strip() == command and _alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_gone(command: str, limit: float = 5.0) -> list[int]:
    deadline = time.monotonic() + limit
    while (left := _pids_running(command)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_terminate_kills_the_whole_process_group(tmp_path: Path) -> None:
    ex = HostExecutor()
    result: dict[str, int] = {}
    marker = f"60.{os.getpid()}1"
    script = f"sleep {marker} & sleep {marker}"

    def runner() -> None:
        with (tmp_path / "log").open("ab") as f:
            result["rc"] = ex.run_phase(job(tmp_path, script), f)

    t = threading.Thread(target=runner)
    t.start()
    deadline = time.monotonic() + 10
    while len(_pids_running(f"sleep {marker}")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_pids_running(f"sleep {marker}")) == 2
    start = time.monotonic()
    ex.terminate()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - start < 5
    assert result["rc"] != 0
    assert not _wait_gone(f"sleep {marker}"), "the background job outlived terminate()"


def test_background_jobs_die_with_their_phase(tmp_path: Path) -> None:
    ex = HostExecutor()
    marker = f"60.{os.getpid()}2"
    with (tmp_path / "log").open("ab") as f:
        assert ex.run_phase(job(tmp_path, f"sleep {marker} & echo started"), f) == 0
    assert not _wait_gone(f"sleep {marker}")


@pytest.mark.skipif(os.geteuid() != 0, reason="PID namespaces need root")
def test_kill_9_of_iglubuild_leaves_no_phase_running(tmp_path: Path) -> None:
    """The attack of issue 16 case 9: iglubuild dies by SIGKILL in the middle of a
    phase (and its background job). Nobody can clean up, so the kernel must."""
    import signal
    import subprocess
    import sys

    marker = f"60.{os.getpid()}3"
    code = (
        "from pathlib import Path\n"
        "from iglubuild.executor import PhaseJob\n"
        "from iglubuild.executors.host import HostExecutor\n"
        "from iglubuild.run import base_env\n"
        f"job = PhaseJob('t', 'build', 'sleep {marker} & sleep {marker}', Path({str(tmp_path)!r}),"
        " base_env())\n"
        f"with open({str(tmp_path / 'log')!r}, 'ab') as f:\n"
        "    HostExecutor().run_phase(job, f)\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 15
        while len(_pids_running(f"sleep {marker}")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_pids_running(f"sleep {marker}")) == 2
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert not _wait_gone(f"sleep {marker}"), "a phase outlived kill -9 of iglubuild"
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_phase_sees_the_build_host_name_and_its_exit_by_signal(tmp_path: Path) -> None:
    ex = HostExecutor()
    with (tmp_path / "log").open("ab") as f:
        assert ex.run_phase(job(tmp_path, "hostname > h; kill -TERM $$"), f) == -15
    assert (tmp_path / "h").read_text().strip() == "iglubuild"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_toolchain_id_follows_compiler_and_target_file(tmp_path: Path) -> None:
    a, b = HostExecutor(), HostExecutor()
    assert a.toolchain_id() == b.toolchain_id() and len(a.toolchain_id()) == 64
    changed = tmp_path / "target.toml"
    changed.write_text(DEFAULT_TARGET_FILE.read_text().replace('cflags = "-O2 -pipe"',
                                                               'cflags = "-O3 -pipe"'))
    assert changed.read_text() != DEFAULT_TARGET_FILE.read_text()
    c = HostExecutor(load_target(changed))
    assert c.toolchain_id() != a.toolchain_id()


def test_check_names_missing_compiler(tmp_path: Path) -> None:
    from dataclasses import replace

    from iglubuild.errors import ToolMissingError

    ex = HostExecutor(replace(load_target(), cc="clang-does-not-exist"))
    with pytest.raises(ToolMissingError, match="clang-does-not-exist"):
        ex.check()
