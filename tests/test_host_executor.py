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
    assert ex.isolate_network
    with (tmp_path / "log").open("ab") as f:
        assert ex.run_phase(job(tmp_path, "cat /proc/net/dev"), f) == 0
    interfaces = [line.split(":")[0].strip() for line in
                  (tmp_path / "log").read_text().splitlines() if ":" in line]
    assert interfaces == ["lo"]


def test_terminate_kills_the_whole_process_group(tmp_path: Path) -> None:
    ex = HostExecutor()
    result: dict[str, int] = {}
    script = "sleep 60 & echo $! > bg.pid; sleep 60"

    def runner() -> None:
        with (tmp_path / "log").open("ab") as f:
            result["rc"] = ex.run_phase(job(tmp_path, script), f)

    t = threading.Thread(target=runner)
    t.start()
    pidfile = tmp_path / "bg.pid"
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    bg = int(pidfile.read_text())
    start = time.monotonic()
    ex.terminate()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - start < 5
    assert result["rc"] != 0
    deadline = time.monotonic() + 5
    while _alive(bg) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(bg), "the background job outlived terminate()"


def test_background_jobs_die_with_their_phase(tmp_path: Path) -> None:
    ex = HostExecutor()
    with (tmp_path / "log").open("ab") as f:
        assert ex.run_phase(job(tmp_path, "sleep 60 & echo $! > bg.pid"), f) == 0
    bg = int((tmp_path / "bg.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(bg) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(bg)


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
