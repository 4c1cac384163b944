"""The chroot executor with a real build root: compiles, isolation, cleanup after every end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iglubuild.executor import PhaseJob
from iglubuild.executors.chroot import ChrootExecutor
from iglubuild.run import base_env
from iglubuild.toolchain_root import BuildRoot
from tests.chroot.helpers import MUSL_FLAGS, PROJECT, host_mounts, tree_manifest
from tests.sandbox_support import (
    RecordingServer,
    check_escapes,
    check_make_shares_the_runs_jobserver,
    run_to_log,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture
def executor(build_root: BuildRoot, tmp_path: Path) -> ChrootExecutor:
    return ChrootExecutor(build_root.path, build_root.id, tmp_path / "scratch")


def _job(work: Path, script: str, **kw: object) -> PhaseJob:
    return PhaseJob(package="t", phase="build", script=script, cwd=work, env=base_env(),
                    writable=(work,), **kw)  # type: ignore[arg-type]




def test_escapes_are_refused(executor: ChrootExecutor, tmp_path: Path) -> None:
    """Double chroot, a block device, mount, /proc/sys, unshare: each refused, the
    host untouched, and the phase holds only the four ownership capabilities."""
    work = tmp_path / "work"
    work.mkdir()
    check_escapes(executor, work, tmp_path / "escaped", _job)


def test_make_in_the_chroot_shares_the_runs_jobserver(executor: ChrootExecutor,
                                                     tmp_path: Path) -> None:
    check_make_shares_the_runs_jobserver(executor, tmp_path)


def test_musl_hello_compiled_in_chroot_runs_on_host(
    executor: ChrootExecutor, musl_sysroot: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.c").write_text(
        '#include <stdio.h>\nint main(void) { puts("hello from musl"); return 0; }\n')
    script = (
        f'F="{MUSL_FLAGS} --sysroot={musl_sysroot}"\n'
        "clang $F -o hello hello.c\n"
        "clang $F -static -o hello-static hello.c\n"
        # Prove where it ran: the build root's record, absent on the host.
        "cat /etc/iglubuild-toolchain.json > where.txt || echo none > where.txt\n"
    )
    job = PhaseJob("hello", "build", script, work, base_env(), writable=(work,),
                   readonly=(musl_sysroot,))
    rc, out = run_to_log(executor, job, tmp_path)
    assert rc == 0, out
    static = subprocess.run([work / "hello-static"], capture_output=True, text=True)
    assert static.stdout == "hello from musl\n"
    dynamic = subprocess.run([musl_sysroot / "usr/lib/libc.so", work / "hello"],
                             capture_output=True, text=True)
    assert dynamic.stdout == "hello from musl\n"
    info = subprocess.run(["file", work / "hello"], capture_output=True, text=True).stdout
    assert "interpreter /lib/ld-musl-x86_64.so.1" in info
    if executor.toolchain_id() != "external":
        assert executor.toolchain_id() in (work / "where.txt").read_text()


def test_sysroot_is_read_only_inside(
    executor: ChrootExecutor, musl_sysroot: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    job = PhaseJob("t", "build", f"touch {musl_sysroot}/usr/lib/evil", work, base_env(),
                   writable=(work,), readonly=(musl_sysroot,))
    rc, out = run_to_log(executor, job, tmp_path)
    assert rc != 0
    assert "Read-only file system" in out
    assert not (musl_sysroot / "usr/lib/evil").exists()




def test_phase_cannot_reach_host_server(executor: ChrootExecutor, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    server = RecordingServer()
    try:
        script = f"bash -c 'echo hello-server > /dev/tcp/127.0.0.1/{server.port}'"
        rc, out = run_to_log(executor, _job(work, script), tmp_path)
        assert rc != 0
        assert "Connection refused" in out or "unreachable" in out
        time.sleep(0.3)
        assert server.received == []
        # The same phase with the network left on reaches it: the test can fail.
        rc, out = run_to_log(executor, _job(work, script, network=True), tmp_path)
        assert rc == 0, out
        deadline = time.monotonic() + 5
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.received == [b"hello-server\n"]
    finally:
        server.close()


def test_loopback_inside_works(executor: ChrootExecutor, tmp_path: Path) -> None:
    # Servers a test suite starts inside the build must still work on lo.
    work = tmp_path / "work"
    work.mkdir()
    (work / "lo.pl").write_text(
        "use IO::Socket::INET;\n"
        '$s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:7777") or die "$!";\n'
        "if (fork) { $c = $s->accept; print $c->getline; wait }\n"
        'else { $k = IO::Socket::INET->new("127.0.0.1:7777") or die "$!"; print $k "over lo\\n" }\n'
    )
    script = "perl lo.pl"
    rc, out = run_to_log(executor, _job(work, script), tmp_path)
    assert rc == 0, out
    assert "over lo" in out


def test_exit_status_tells_a_signal_from_exit_128_plus_n(
    executor: ChrootExecutor, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert run_to_log(executor, _job(work, "exit 143"), tmp_path)[0] == 143
    assert run_to_log(executor, _job(work, "kill -SEGV $$"), tmp_path)[0] == -signal.SIGSEGV
    assert run_to_log(executor, _job(work, "no-such-program"), tmp_path)[0] == 127


def test_terminate_stops_a_running_phase(executor: ChrootExecutor, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        run_to_log(executor, _job(work, "touch started; sleep 600"), tmp_path)[0]))
    t.start()
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    start = time.monotonic()
    executor.terminate()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - start < 5
    assert result == [-signal.SIGTERM]
    # The executor still runs phases afterwards (one executor serves a whole session).
    assert run_to_log(executor, _job(work, "true"), tmp_path)[0] == 0


def test_pid_namespace_and_no_leftover_processes(
    executor: ChrootExecutor, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    marker = f"sleep 1234.{os.getpid()}"
    script = (f"cat /proc/1/cmdline | tr '\\0' ' '; echo; ({marker} &) ; echo started;"
              "echo dev: $(ls /dev); echo host: $(cat /proc/sys/kernel/hostname)")
    rc, out = run_to_log(executor, _job(work, script), tmp_path)
    assert rc == 0, out
    assert "_nsinit.py" in out  # PID 1 is our init, not the host's
    assert "host: iglubuild" in out  # a UTS namespace: the machine's name does not leak
    assert "dev: fd full null ptmx pts random shm stderr stdin stdout tty urandom zero" in out
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert marker not in ps


DRIVER = """
import sys
from pathlib import Path
from iglubuild.executors.chroot import ChrootExecutor
from iglubuild.executor import PhaseJob
from iglubuild.run import base_env
root, scratch, work, script = sys.argv[1:5]
ex = ChrootExecutor(Path(root), "t", Path(scratch))
job = PhaseJob("t", "build", script, Path(work), base_env(), writable=(Path(work),))
try:
    with open(Path(work) / "phase.log", "wb") as log:
        rc = ex.run_phase(job, log)
except KeyboardInterrupt:
    ex.terminate()
    sys.exit(130)
sys.exit(rc)
"""

# Tries to change the build root every way it can, then ends as the case says.
VANDAL = (
    "touch /usr/bin/evil; rm -f /bin/ls; echo x >> /etc/passwd; chmod 777 /etc; "
    "mkdir -p /opt/x; mount -t tmpfs none /opt/x || true; "  # refused since the caps drop
    "(sleep 1000 &); touch started; "
)


def _system(mounts: list[str]) -> list[str]:
    points = {"/", "/proc", "/dev", "/sys", "/dev/pts", "/dev/shm", "/tmp"}
    return [m for m in mounts if m.split()[2] in points]


@pytest.fixture(scope="module")
def root_before(build_root: BuildRoot) -> dict[str, tuple[int, int, str]]:
    return tree_manifest(build_root.path)


@pytest.mark.parametrize("end", ["success", "failure", "sigint", "kill9", "kill9-sandbox"])
def test_root_and_mount_table_unchanged(
    end: str, build_root: BuildRoot, root_before: dict[str, tuple[int, int, str]],
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    mounts_before = host_mounts()
    assert host_mounts(tmp_path, build_root.path) == []
    tail = {"success": "exit 0", "failure": "exit 3"}.get(end, "sleep 600")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(build_root.path), str(tmp_path / "scratch"),
         str(work), VANDAL + tail],
        env=env, start_new_session=True,
    )
    if end in ("sigint", "kill9", "kill9-sandbox"):
        deadline = time.monotonic() + 30
        while not (work / "started").exists():
            assert proc.poll() is None, (work / "phase.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # While the phase runs its mounts exist only in its own namespace.
        assert host_mounts(tmp_path, build_root.path) == []
        # Like Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        if end == "sigint":
            os.killpg(proc.pid, signal.SIGINT)
        elif end == "kill9":  # iglubuild itself dies
            os.kill(proc.pid, signal.SIGKILL)
        else:  # the sandbox (unshare) dies; iglubuild sees the phase killed
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            os.kill(int(children[0]), signal.SIGKILL)
    rc = proc.wait(timeout=60)
    expected = {"success": 0, "failure": 3, "sigint": 130, "kill9": -9,
                "kill9-sandbox": 256 - 9}[end]
    assert rc == expected, (work / "phase.log").read_text()
    assert (work / "started").exists()  # the vandal really ran
    # The sandbox dies with its parent even after kill -9: give the kernel a moment.
    deadline = time.monotonic() + 10
    while "sleep 1000" in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                         text=True).stdout:
        assert time.monotonic() < deadline, "a process of the phase outlived it"
        time.sleep(0.1)
    assert host_mounts(tmp_path, build_root.path) == []
    # The host's own mounts (/, /proc, /dev ...) are all still there, unchanged.
    assert _system(host_mounts()) == _system(mounts_before)
    assert tree_manifest(build_root.path) == root_before
    scratch = tmp_path / "scratch"
    if end == "kill9":
        # iglubuild died before removing its scratch folder; the next run does.
        assert len(list(scratch.iterdir())) == 1
        ex = ChrootExecutor(build_root.path, "t", scratch)
        with open(os.devnull, "wb") as log:
            assert ex.run_phase(_job(work, "true"), log) == 0
    assert list(scratch.iterdir()) == []
