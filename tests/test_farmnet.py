"""The farm's network (iglubuild.farmnet): a phase that compiles on the farm
reaches the volunteers' distcc ports and nothing else.

No Docker here: the "volunteer" is a real distccd the test starts on
127.0.0.1 (the farm's volunteers are distccds too, in containers; the docker
level is in tests/test_farm.py). The compiles are counted by distccd's own
statistics (its --stats port), not by our logs. Every server a test starts
listens on 127.0.0.1, except the probe server on the machine's own
non-loopback address, which the test stops itself; distccd is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from iglubuild import distcc
from iglubuild.distcc import Volunteer, read_stats
from iglubuild.executor import PhaseJob
from iglubuild.farmnet import FarmNet, relays_for
from iglubuild.run import base_env
from tests.sandbox_support import run_to_log

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
needs_distccd = pytest.mark.skipif(
    shutil.which("distccd") is None or shutil.which("distcc") is None
    or shutil.which("clang") is None, reason="needs distcc, distccd and clang")


def _free_port_pair() -> int:
    """A port P with P+1 free too (distccd's stats port), on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


class Distccd:
    """A real distccd on 127.0.0.1 with its --stats page one port above."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port_pair()
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            ["distccd", "--daemon", "--no-detach", "--log-stderr", "--listen", "127.0.0.1",
             "--port", str(self.port), "--allow", "127.0.0.1", "--jobs", "2",
             "--stats", "--stats-port", str(self.port + 1)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port + 1), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "distccd did not listen"
                time.sleep(0.1)

    @property
    def compiles(self) -> int:
        return int(read_stats("127.0.0.1", self.port + 1)["dcc_compile_ok"])

    def volunteer(self, slots: int = 2) -> Volunteer:
        return Volunteer("t1", 1, "node", "127.0.0.1", self.port, "running", slots=slots)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def distccd(tmp_path: Path) -> Iterator[Distccd]:
    d = Distccd(tmp_path / "distccd.log")
    yield d
    d.stop()


class ProbeServer:
    """A TCP server that counts the connections it accepts (a thread, closed by the test)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.address = address
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


def _host_address() -> str | None:
    """This machine's first non-loopback IPv4 address (`ip -4 addr`), if any."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return None


@pytest.fixture
def probes() -> Iterator[list[ProbeServer]]:
    """Servers no farm phase may reach: one on 127.0.0.1, one on the host's address."""
    servers = [ProbeServer("127.0.0.1")]
    address = _host_address()
    if address is not None:
        servers.append(ProbeServer(address))
    yield servers
    for s in servers:
        s.close()


def _reach_script(targets: list[tuple[str, int]], out: str = "reach.txt") -> str:
    """Shell that writes `ADDR PORT open|closed` per target (bash's /dev/tcp)."""
    lines = [f": > {out}"]
    for address, port in targets:
        lines.append(f"if bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>/dev/null; "
                     f"then echo '{address} {port} open' >> {out}; "
                     f"else echo '{address} {port} closed' >> {out}; fi")
    # What the namespace holds: interfaces (per-namespace /proc/net) and routes.
    lines.append("awk 'NR > 2 { sub(\":\", \"\", $1); print \"if\", $1 }' /proc/net/dev"
                 f" >> {out}")
    lines.append(f"awk 'NR > 1 {{ print \"route\", $1 }}' /proc/net/route >> {out}")
    return "\n".join(lines) + "\n"


def _reach(text: str) -> dict[str, str]:
    return {" ".join(line.split()[:2]): line.split()[2]
            for line in text.splitlines() if len(line.split()) == 3}


def _check_confined(reach_txt: Path, relay_port: int, probes: list[ProbeServer]) -> None:
    text = reach_txt.read_text()
    seen = _reach(text)
    assert seen[f"127.0.0.1 {relay_port}"] == "open", text
    for p in probes:
        assert seen[f"{p.address} {p.port}"] == "closed", text
        assert p.accepted == 0, (p.address, text)
    assert [line for line in text.splitlines() if line.startswith(("if ", "route "))] \
        == ["if lo"], text


# --------------------------------------------------------------------------- unit level


def test_local_ports_are_the_volunteers_own_unless_they_clash() -> None:
    a = Volunteer("a", 1, "n1", "10.0.0.1", 3632, "running", slots=4)
    b = Volunteer("b", 2, "n1", "10.0.0.1", 3634, "running", slots=2)
    c = Volunteer("c", 1, "n2", "10.0.0.2", 3632, "running", slots=8)
    assert [r.local for r in relays_for([a, b])] == ["127.0.0.1:3632", "127.0.0.1:3634"]
    clash = relays_for([a, b, c])
    assert [r.local_port for r in clash] == [3632, 3634, 3636]
    assert [r.remote for r in clash] == ["10.0.0.1:3632", "10.0.0.1:3634", "10.0.0.2:3632"]
    assert [r.slots for r in clash] == [4, 2, 8]


def test_tally_names_the_volunteers_behind_the_relays(tmp_path: Path) -> None:
    log = tmp_path / "distcc.log"
    log.write_text(
        "distcc[10] compile from a.c to a.o\n"
        "distcc[10] compile a.c on 127.0.0.1:3632/4 completed ok\n"
        "distcc[11] compile from b.c to b.o\n"
        "distcc[11] Warning: failed to distribute b.c to 127.0.0.1:3634/2, running locally\n"
        "distcc[11] compile b.c on localhost completed ok\n")
    aliases = {"127.0.0.1:3632": "10.0.0.2:3632", "127.0.0.1:3634": "10.0.0.3:3632"}
    tally = distcc.tally_compiles(log, aliases)
    assert (tally.remote, tally.local, tally.hosts) == (1, 1, {"10.0.0.2:3632": 1})
    assert tally.warnings == ["Warning: failed to distribute b.c to 10.0.0.3:3632/2, "
                              "running locally"]


@needs_root
def test_relays_reach_their_volunteer_and_close_with_the_farmnet(tmp_path: Path) -> None:
    """From inside the namespace: the relay answers with the volunteer's bytes, a
    refusing volunteer gives a closed connection, and closing ends open relays."""
    upstream = ProbeServer("127.0.0.1")  # accepts and hangs up: enough to see the relay
    dead_port = _free_port_pair()
    # Listens but never accepts: the kernel completes the connection, which then
    # stays open with nothing said, as a busy volunteer's would.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent_port = int(silent.getsockname()[1])
    try:
        alive = Volunteer("a", 1, "n", "127.0.0.1", upstream.port, "running", slots=1)
        dead = Volunteer("d", 2, "n", "127.0.0.1", dead_port, "running", slots=1)
        quiet = Volunteer("q", 3, "n", "127.0.0.1", silent_port, "running", slots=1)
        with FarmNet([alive, dead, quiet]) as net:
            assert net.distcc_hosts == (f"127.0.0.1:{upstream.port}/1 127.0.0.1:{dead_port}/1 "
                                        f"127.0.0.1:{silent_port}/1")
            probe = (
                "import socket, sys\n"
                "for port in sys.argv[1:]:\n"
                "    s = socket.create_connection(('127.0.0.1', int(port)), timeout=5)\n"
                "    s.settimeout(5)\n"
                "    print(port, repr(s.recv(10)))\n")
            out = subprocess.run(
                ["nsenter", f"--net={net.path}", "--", "python3", "-c", probe,
                 str(upstream.port), str(dead_port)],
                capture_output=True, text=True, timeout=30, check=True).stdout
            assert out.splitlines() == [f"{upstream.port} b''", f"{dead_port} b''"]
            assert upstream.accepted == 1
            # A connection held open inside the namespace ends when the FarmNet closes.
            holder = subprocess.Popen(
                ["nsenter", f"--net={net.path}", "--", "python3", "-c",
                 "import socket; s = socket.create_connection(('127.0.0.1', "
                 f"{silent_port}), timeout=5); s.settimeout(30); print('on', flush=True); "
                 "print(s.recv(1))"],
                stdout=subprocess.PIPE, text=True)
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "on"
            deadline = time.monotonic() + 10
            while net.relayed < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert net.relayed == 2  # the refused volunteer was never relayed
        try:
            assert holder.communicate(timeout=30)[0].strip() == "b''"
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
    finally:
        upstream.close()
        silent.close()


@needs_root
def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    silent = socket.socket()  # listens, never accepts: relayed connections stay open
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        v = Volunteer("q", 1, "n", "127.0.0.1", int(silent.getsockname()[1]), "running", slots=1)
        with FarmNet([v], max_connections=2) as net:
            probe = (
                "import socket, sys\n"
                "held = [socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)"
                " for _ in range(3)]\n"
                "for s in held:\n"
                "    s.settimeout(1)\n"
                "    try:\n"
                "        print(repr(s.recv(1)))\n"
                "    except TimeoutError:\n"
                "        print('open')\n")
            out = subprocess.run(["nsenter", f"--net={net.path}", "--", "python3", "-c", probe,
                                  str(v.port)], capture_output=True, text=True, timeout=30,
                                 check=True).stdout
            assert out.splitlines() == ["open", "open", "b''"]
            assert (net.relayed, net.refused_over_limit) == (2, 1)
    finally:
        silent.close()


# --------------------------------------------------------------------------- host executor


@needs_root
@needs_distccd
def test_host_phase_with_farm_compiles_remotely_and_reaches_nothing_else(
        distccd: Distccd, probes: list[ProbeServer], tmp_path: Path) -> None:
    """build_package as `--farm pkg` drives it (the distcc launcher, DISTCC_HOSTS of
    the relays, the farm's namespace): the compile is distccd's, and the phase
    cannot reach another 127.0.0.1 port nor the host's own address."""
    from iglubuild.build import POST_BUILD_STEPS, BuildJob, build_package, work_paths
    from iglubuild.executors.host import HostExecutor
    from iglubuild.recipe import load_tree
    from iglubuild.settings import Settings
    from iglubuild.target import load_target
    from tests.engine_support import write_recipe

    executor = HostExecutor()
    if not executor.isolated:
        pytest.skip("the host executor cannot sandbox here")
    recipes = tmp_path / "recipes"
    targets = [("127.0.0.1", distccd.port)] + [(p.address, p.port) for p in probes]
    write_recipe(recipes, "farmed", """
        name: farmed
        version: "1"
        sources:
          - url: TARBALL_URL
        build: |
          $CC -O2 -c f.c -o f.o
          sh reach.sh
        package: |
          install -D -m644 f.o "$pkgdir/usr/lib/farmed/f.o"
        """, {"f.c": "int triple(int x) { return 3 * x; }\n", "reach.sh": _reach_script(targets)})
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build", jobs=1)
    hosts = distcc.FarmHosts([distccd.volunteer()], jobs=3, local_identity="x")
    launcher, extra = distcc.phase_additions(hosts, distcc_dir=tmp_path / "distcc")
    extra["DISTCC_FALLBACK"] = "0"  # a compile that cannot reach distccd fails the build
    target = replace(load_target(), implicit_build_deps=())  # f.c needs no C library
    before = distccd.compiles
    with FarmNet(hosts.volunteers) as net:
        extra["DISTCC_HOSTS"] = net.distcc_hosts
        recorder = distcc.CompileRecorder(net.aliases)
        build_package(BuildJob(load_tree(recipes).recipes["farmed"], settings, executor, [],
                               "sig", target=target, launcher=launcher, extra_env=extra,
                               keep_work=True, steps=(*POST_BUILD_STEPS, recorder),
                               netns=net.namespace))
        assert net.relayed >= 1
    assert distccd.compiles - before == 1
    assert recorder.tallies()["farmed"].hosts == {f"127.0.0.1:{distccd.port}": 1}
    work = work_paths(settings, "farmed")
    src = next(p for p in work.src.rglob("reach.txt"))
    _check_confined(src, distccd.port, probes)


@needs_root
@needs_distccd
def test_a_refusing_volunteer_means_a_local_compile_named_by_its_real_address(
        distccd: Distccd, tmp_path: Path) -> None:
    """The relay hangs up when its volunteer refuses; distcc compiles locally, and
    its warning in the package log names the volunteer, not the relay."""
    from iglubuild.build import POST_BUILD_STEPS, BuildJob, PhaseFailed, build_package
    from iglubuild.executors.host import HostExecutor
    from iglubuild.recipe import load_tree
    from iglubuild.settings import Settings
    from iglubuild.target import load_target
    from tests.engine_support import write_recipe

    executor = HostExecutor()
    if not executor.isolated:
        pytest.skip("the host executor cannot sandbox here")
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "doomed", """
        name: doomed
        version: "1"
        build: |
          printf 'int f(void) { return 1; }\\n' > f.c
          $CC -c f.c -o f.o
          test -f f.o
          exit 7
        """)
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build", jobs=1)
    # Nothing listens on 127.0.0.2 (distccd is on 127.0.0.1 only): it refuses.
    dead = Volunteer("t1", 1, "n1", "127.0.0.2", distccd.port, "running", slots=1)
    hosts = distcc.FarmHosts([dead], jobs=2, local_identity="x")
    launcher, extra = distcc.phase_additions(hosts, distcc_dir=tmp_path / "distcc")
    target = replace(load_target(), implicit_build_deps=())
    with FarmNet([dead]) as net:
        extra["DISTCC_HOSTS"] = net.distcc_hosts
        assert net.distcc_hosts == f"127.0.0.1:{distccd.port}/1"
        recorder = distcc.CompileRecorder(net.aliases)
        with pytest.raises(PhaseFailed) as failed:
            build_package(BuildJob(load_tree(recipes).recipes["doomed"], settings, executor,
                                   [], "sig", target=target, launcher=launcher,
                                   extra_env=extra, steps=(*POST_BUILD_STEPS, recorder),
                                   netns=net.namespace))
        assert net.relayed == 0
    tally = recorder.tallies()["doomed"]
    assert (tally.remote, tally.local) == (0, 1)
    log = failed.value.log.read_text()
    assert f"failed to distribute f.c to 127.0.0.2:{distccd.port}" in log, log
    assert distccd.compiles == 0


@needs_root
def test_host_phase_without_farm_has_no_network(probes: list[ProbeServer],
                                                tmp_path: Path) -> None:
    from iglubuild.executors.host import HostExecutor

    executor = HostExecutor()
    if not executor.isolated:
        pytest.skip("the host executor cannot sandbox here")
    work = tmp_path / "work"
    work.mkdir()
    script = _reach_script([(p.address, p.port) for p in probes])
    rc, out = run_to_log(executor, PhaseJob("t", "build", script, work, base_env(),
                                            writable=(work,)), tmp_path)
    assert rc == 0, out
    text = (work / "reach.txt").read_text()
    assert all(v == "closed" for v in _reach(text).values()), text
    assert [line for line in text.splitlines() if line.startswith(("if ", "route "))] \
        == ["if lo"], text
    assert all(p.accepted == 0 for p in probes)


# --------------------------------------------------------------------------- chroot executor


@pytest.fixture
def chroot_executor(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The chroot executor on IGLUBUILD_TEST_BUILDROOT (skipped without one: making a
    build root is the chroot tests' business)."""
    import json

    from iglubuild.executors.chroot import ChrootExecutor

    if os.geteuid() != 0:
        pytest.skip("needs root")
    given = os.environ.get("IGLUBUILD_TEST_BUILDROOT")
    if not given or not (Path(given) / "bin" / "sh").exists():
        pytest.skip("needs IGLUBUILD_TEST_BUILDROOT (a build root)")
    root = Path(given).resolve()
    record = root.with_name(root.name + ".json")
    root_id = json.loads(record.read_text())["id"] if record.is_file() else "external"
    return ChrootExecutor(root, root_id, tmp_path / "scratch")


@pytest.mark.slow
@needs_distccd
def test_chroot_phase_with_farm_compiles_remotely_and_reaches_nothing_else(
        chroot_executor, distccd: Distccd, probes: list[ProbeServer],  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "distcc").mkdir(parents=True)
    (work / "f.c").write_text("int triple(int x) { return 3 * x; }\n")
    targets = [("127.0.0.1", distccd.port)] + [(p.address, p.port) for p in probes]
    before = distccd.compiles
    with FarmNet([distccd.volunteer()]) as net:
        env = base_env({"DISTCC_HOSTS": net.distcc_hosts, "DISTCC_DIR": str(work / "distcc"),
                        "DISTCC_FALLBACK": "0", "HOME": str(work)})
        script = ("distcc clang -target x86_64-linux-musl -O2 -c f.c -o f.o\n"
                  + _reach_script(targets))
        rc, out = run_to_log(chroot_executor, PhaseJob(
            "t", "build", script, work, env, writable=(work,), netns=net.namespace), tmp_path)
    assert rc == 0, out
    assert (work / "f.o").is_file()
    assert distccd.compiles - before == 1
    _check_confined(work / "reach.txt", distccd.port, probes)


@pytest.mark.slow
def test_chroot_phase_without_farm_has_no_network(chroot_executor,  # type: ignore[no-untyped-def]
                                                  probes: list[ProbeServer],
                                                  tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = _reach_script([(p.address, p.port) for p in probes])
    rc, out = run_to_log(chroot_executor, PhaseJob("t", "build", script, work, base_env(),
                                                   writable=(work,)), tmp_path)
    assert rc == 0, out
    text = (work / "reach.txt").read_text()
    assert all(v == "closed" for v in _reach(text).values()), text
    assert [line for line in text.splitlines() if line.startswith(("if ", "route "))] \
        == ["if lo"], text


# --------------------------------------------------------------------------- docker executor


@pytest.fixture
def docker_executor(toolchain_image):  # type: ignore[no-untyped-def]
    from iglubuild.executors.docker import DockerExecutor

    ex = DockerExecutor(toolchain_image.ref, toolchain_image.toolchain_id)
    ex.check()
    yield ex
    ex.terminate()


def _our_containers(owner: str) -> list[str]:
    import docker

    from iglubuild.executors.docker import LABEL_EXECUTOR, LABEL_OWNER

    return [c.id for c in docker.from_env().containers.list(
        all=True, filters={"label": [f"{LABEL_EXECUTOR}=docker", f"{LABEL_OWNER}={owner}"]})]


@pytest.mark.docker
@pytest.mark.slow
@needs_distccd
def test_docker_phase_with_farm_compiles_remotely_and_reaches_nothing_else(
        docker_executor, distccd: Distccd, probes: list[ProbeServer],  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    """The phase's container shares the holder container's network, which
    iglubuild set up from outside: only the relay is reachable, the compile is
    distccd's, and the holder is gone when the FarmNet closes."""
    from iglubuild.farmnet import farm_network

    work = tmp_path / "work"
    (work / "distcc").mkdir(parents=True)
    (work / "f.c").write_text("int triple(int x) { return 3 * x; }\n")
    targets = [("127.0.0.1", distccd.port)] + [(p.address, p.port) for p in probes]
    before = distccd.compiles
    with farm_network(docker_executor, [distccd.volunteer()]) as net:
        assert net is not None and net.namespace.container is not None
        env = base_env({"DISTCC_HOSTS": net.distcc_hosts, "DISTCC_DIR": str(work / "distcc"),
                        "DISTCC_FALLBACK": "0", "HOME": str(work)})
        script = ("distcc clang -target x86_64-linux-musl -O2 -c f.c -o f.o\n"
                  + _reach_script(targets) + "hostname > hostname.txt\n")
        rc, out = run_to_log(docker_executor, PhaseJob(
            "t", "build", script, work, env, writable=(work,), netns=net.namespace), tmp_path)
        assert _our_containers(docker_executor.owner) == [net.namespace.container]
    assert rc == 0, out
    assert (work / "f.o").is_file()
    assert distccd.compiles - before == 1
    _check_confined(work / "reach.txt", distccd.port, probes)
    assert (work / "hostname.txt").read_text().strip() == "iglubuild"
    assert _our_containers(docker_executor.owner) == []  # the holder was removed


@pytest.mark.docker
@pytest.mark.slow
def test_docker_phase_without_farm_has_no_network(
        docker_executor, probes: list[ProbeServer], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    script = _reach_script([(p.address, p.port) for p in probes])
    rc, out = run_to_log(docker_executor, PhaseJob("t", "build", script, work, base_env(),
                                                   writable=(work,)), tmp_path)
    assert rc == 0, out
    text = (work / "reach.txt").read_text()
    assert all(v == "closed" for v in _reach(text).values()), text
    assert [line for line in text.splitlines() if line.startswith(("if ", "route "))] \
        == ["if lo"], text
