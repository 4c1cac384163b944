"""Two nodes, proven on one machine: a farm spread over a second Docker engine.

The second node is a dockerd (own data root, exec root and socket) in a
network namespace this module makes, joined to this machine by a veth pair
with addresses of its own (tests/farm_support.NetNode): the manager is the
session's engine, advertised on the host end of the veth, the worker
advertises the far end. Everything goes through the real CLI in fresh
processes, as a person would type it (`DOCKER_HOST` says which machine):
the image travels with `toolchain image --save/--load`, the worker joins
with `farm up --join ... --token ...`, `farm up --replicas 4` spreads the
volunteers over both nodes, `--farm pkg` builds send compiles to both (per
node, counted from distccd's own statistics), the worker is killed mid-build
(every process of the node at once, and its link cut) and the build
finishes, `farm status` calls its volunteers down and the next build leaves
them out; `farm down` on both leaves nothing behind. The commands are written to
`$IGLUBUILD_TWO_NODE_LOG` (default: two-node-commands.txt in the module's
temporary folder) and docs/farm.md quotes them.

Run alone with tests/two_nodes.sh.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iglubuild import distcc, farm
from iglubuild.distcc import Volunteer
from iglubuild.settings import Settings
from tests.conftest import DISTFILES, REPO_ROOT

sys.path.insert(0, str(Path(__file__).parent))
from farm_support import (  # noqa: E402
    DOCKER_DIR,
    Dockerd,
    NetNode,
    start_dockerd,
    write_farm_recipes,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NEEDED = ("dockerd", "distcc", "distccd", "clang", "make", "ip", "nsenter", "unshare")
if [t for t in NEEDED if shutil.which(t) is None] or os.geteuid() != 0:
    pytestmark.append(pytest.mark.skip(reason=f"needs root and {', '.join(NEEDED)}"))

# The test network: the manager (this machine) and the worker (the namespace).
NETNS = os.environ.get("IGLUBUILD_TEST_NETNS", "iglu-node2")
MANAGER_ADDR = os.environ.get("IGLUBUILD_TEST_NET_MANAGER", "198.18.219.1")
WORKER_ADDR = os.environ.get("IGLUBUILD_TEST_NET_WORKER", "198.18.219.2")
REPLICAS = 4
PROGRAM_FILES = 24  # modules; with main.c, 25 compiles


def _free_port_block(count: int) -> int:
    """A base port with `count` consecutive ports free on every address of this
    machine (a wildcard bind fails if any address uses the port)."""
    import socket

    for base in range(23000, 60000, 89):
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("0.0.0.0", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


@dataclass
class TwoNodes:
    node: NetNode
    manager: Dockerd
    worker: Dockerd
    worker_root: Path
    base_port: int
    swarm_port: int
    manager_build: Path
    worker_build: Path
    commands: list[str] = field(default_factory=list)
    log: Path | None = None
    figures: dict[str, object] = field(default_factory=dict)

    def cli(self, host: Dockerd, *args: str, build: Path | None = None,
            timeout: float = 1200, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`iglubuild ARGS` in a fresh process on `host`'s engine."""
        build = build or (self.manager_build if host is self.manager else self.worker_build)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IGLUBUILD_")}
        env["DOCKER_HOST"] = host.host
        argv = ["--build-dir", str(build), *args]
        where = "manager" if host is self.manager else "worker "
        self.commands.append(f"[{where}] iglubuild {shlex.join(args)}")
        done = subprocess.run([sys.executable, "-m", "iglubuild", *argv], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
        if args[:2] == ("farm", "status") and "--json" not in args:
            self.commands.extend("    " + line for line in done.stdout.splitlines())
        if self.log is not None:
            self.log.write_text("\n".join(self.commands) + "\n")
        if check:
            assert done.returncode == 0, f"iglubuild {shlex.join(args)}:\n{done.stderr[-3000:]}"
        return done

    def status(self) -> dict[str, Any]:
        """`farm status --json` (which probes each volunteer: one compile each)."""
        status: dict[str, Any] = json.loads(
            self.cli(self.manager, "farm", "status", "--json").stdout)
        return status

    def volunteers(self) -> list[Volunteer]:
        """The volunteers as the manager lists them, without probing them."""
        import docker

        return farm.list_volunteers(docker.DockerClient(base_url=self.manager.host))


class _NodeDown(threading.Thread):
    """Polls the manager (4 times a second) until it calls the worker down."""

    def __init__(self, t: TwoNodes, since: float) -> None:
        super().__init__(daemon=True)
        self.t, self.since, self.seconds = t, since, -1.0
        self.done = threading.Event()

    def run(self) -> None:
        import docker

        manager = docker.DockerClient(base_url=self.t.manager.host)
        worker = next(n for n in manager.nodes.list()
                      if n.attrs["Description"]["Hostname"] == NETNS)
        while time.monotonic() - self.since < 120:
            worker.reload()
            if worker.attrs["Status"]["State"] == "down":
                self.seconds = round(time.monotonic() - self.since, 1)
                self.done.set()
                return
            time.sleep(0.25)

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)


def _watch_node_down(t: TwoNodes, since: float) -> _NodeDown:
    watcher = _NodeDown(t, since)
    watcher.start()
    return watcher


def _served(volunteers: list[Volunteer]) -> dict[tuple[str, int], int]:
    """distccd's own count of successful compiles, per volunteer (None if it is gone)."""
    out = {}
    for v in volunteers:
        try:
            stats = distcc.read_stats(v.address, v.stats_port)
            out[(v.address, v.port)] = int(stats["dcc_compile_ok"])
        except OSError:
            out[(v.address, v.port)] = -1
    return out


def _per_node(before: dict[tuple[str, int], int],
              after: dict[tuple[str, int], int]) -> dict[str, int]:
    nodes: dict[str, int] = {}
    for key, n in after.items():
        if n >= 0 and before.get(key, -1) >= 0:
            nodes[key[0]] = nodes.get(key[0], 0) + n - before[key]
    return nodes


@pytest.fixture(scope="module")
def two_nodes(docker_engine, toolchain_image, root_tarball,
              tmp_path_factory) -> Iterator[TwoNodes]:
    """The second node, joined, with 4 volunteers over both; all undone at the end."""
    import docker

    tmp = tmp_path_factory.mktemp("two-nodes")
    base = _free_port_block(2 * REPLICAS + 1)
    # The session's engine may still be in a swarm another module left (on
    # 127.0.0.1): the manager's swarm must be made on the veth's address.
    manager = docker.DockerClient(base_url=docker_engine.host)
    if manager.info()["Swarm"]["LocalNodeState"] != "inactive":
        manager.swarm.leave(force=True)
    node = NetNode.create(NETNS, MANAGER_ADDR, WORKER_ADDR)
    worker_root = DOCKER_DIR.with_name(DOCKER_DIR.name + "-" + NETNS)
    worker: Dockerd | None = None
    nodes: TwoNodes | None = None
    try:
        worker = start_dockerd(worker_root, wrap=node.wrap)
        other = docker.DockerClient(base_url=worker.host)
        if other.info()["Swarm"]["LocalNodeState"] != "inactive":
            other.swarm.leave(force=True)  # a fresh machine: no swarm from an earlier run
        nodes = TwoNodes(node=node, manager=docker_engine, worker=worker,
                         worker_root=worker_root, base_port=base,
                         swarm_port=base + 2 * REPLICAS,
                         manager_build=tmp / "manager", worker_build=tmp / "worker",
                         log=Path(os.environ.get("IGLUBUILD_TWO_NODE_LOG",
                                                 tmp / "two-node-commands.txt")))
        yield nodes
    finally:
        try:
            if nodes is not None:
                print("\n".join(["commands run:", *nodes.commands]))
                print("figures:", json.dumps(nodes.figures, indent=1))
            # Undo whatever a failed test left: the manager's swarm, every
            # process of the node, its dockerd (by PID), veth and namespace.
            manager = docker.DockerClient(base_url=docker_engine.host)
            if manager.info()["Swarm"]["LocalNodeState"] == "active":
                manager.swarm.leave(force=True)
            for c in manager.containers.list(all=True, filters={"label": "org.iglunix.farm"}):
                c.remove(force=True)
        finally:
            for daemon in {id(d): d for d in (worker, nodes and nodes.worker) if d}.values():
                daemon.stop()
            node.remove()


def test_image_travels_and_worker_joins(two_nodes: TwoNodes, root_tarball, toolchain_image,
                                        tmp_path_factory) -> None:
    t = two_nodes
    saved = tmp_path_factory.mktemp("image") / "toolchain.tar"
    start = time.monotonic()
    t.cli(t.manager, "toolchain", "image", "--from", str(root_tarball), "--save", str(saved))
    out = t.cli(t.worker, "toolchain", "image", "--load", str(saved)).stdout
    t.figures["image save+load s"] = round(time.monotonic() - start, 1)
    assert f"loaded {toolchain_image.ref}" in out

    up = t.cli(t.manager, "farm", "up", "--replicas", "0", "--advertise-addr", MANAGER_ADDR,
               "--swarm-port", str(t.swarm_port), "--base-port", str(t.base_port),
               "--slots", "1").stdout
    join = shlex.split(next(line for line in up.splitlines() if "--join" in line)
                       .split(": ", 1)[1])
    assert join[join.index("--join") + 1] == f"{MANAGER_ADDR}:{t.swarm_port}"
    # The printed command asks for this machine's own address: the person fills it in.
    assert join[join.index("--advertise-addr") + 1] == "THIS_MACHINES_ADDR"
    join[join.index("--advertise-addr") + 1] = WORKER_ADDR
    joined = t.cli(t.worker, *join[1:], "--swarm-port", str(t.swarm_port)).stdout
    assert "joined the swarm" in joined

    # The worker joined after the first `farm up`: a second one on the manager
    # puts it in the volunteers' node map (and the allowed networks).
    up = t.cli(t.manager, "farm", "up", "--replicas", str(REPLICAS), "--advertise-addr",
               MANAGER_ADDR, "--swarm-port", str(t.swarm_port),
               "--base-port", str(t.base_port), "--slots", "1").stdout
    assert f"{REPLICAS} volunteer(s)" in up


def test_volunteers_spread_over_both_nodes_and_status_shows_them(two_nodes: TwoNodes,
                                                                 ) -> None:
    t = two_nodes
    status = t.status()
    nodes = {n["address"]: n for n in status["nodes"]}
    assert set(nodes) == {MANAGER_ADDR, WORKER_ADDR}
    assert nodes[WORKER_ADDR]["hostname"] == NETNS and nodes[WORKER_ADDR]["role"] == "worker"
    assert all(n["state"] == "ready" for n in nodes.values())
    volunteers = status["volunteers"]
    assert len(volunteers) == REPLICAS
    by_node: dict[str, int] = {}
    for v in volunteers:
        assert v["state"] == "running", v
        assert v["identity"] == status["local_identity"], v
        assert isinstance(v["jobs_served"], int) and v["problem"] is None
        by_node[v["address"]] = by_node.get(v["address"], 0) + 1
    assert by_node == {MANAGER_ADDR: 2, WORKER_ADDR: 2}
    worker_hosts = {v["node"] for v in volunteers if v["address"] == WORKER_ADDR}
    assert worker_hosts == {NETNS}
    # Each volunteer listens on its own node's address only (NODE_ADDRS).
    import docker

    service = docker.DockerClient(base_url=t.manager.host).services.get("iglubuild-distcc")
    env = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    node_addrs = next(e for e in env if e.startswith("NODE_ADDRS=")).split("=", 1)[1]
    assert sorted(p.split("=")[1] for p in node_addrs.split()) == [MANAGER_ADDR, WORKER_ADDR]

    # Each volunteer listens on its own node's address, and only there.
    for v in t.volunteers():
        host = t.manager if v.address == MANAGER_ADDR else t.worker
        logs = docker.DockerClient(base_url=host.host).containers.get(v.container_id).logs()
        assert f"listening on {v.address}:{v.port} ".encode() in logs, logs

    text = t.cli(t.manager, "farm", "status").stdout
    for v in volunteers:
        assert re.search(rf"{re.escape(v['node'])}\s+{re.escape(v['address'])}:{v['port']}\s+"
                         r"running\s+compiler \S+  jobs \d+", text), text
    assert re.search(rf"node {NETNS}\s+{re.escape(WORKER_ADDR)}\s+worker\s+ready", text), text


@pytest.fixture(scope="module")
def farm_recipes(tmp_path_factory) -> Path:
    if not (DISTFILES / "musl-1.2.3.tar.gz").is_file():
        pytest.skip(f"shared distfiles not found at {DISTFILES}")
    return write_farm_recipes(tmp_path_factory.mktemp("recipes"), PROGRAM_FILES, weight=14)


FARM_LINE = re.compile(r"^farm: (\d+) of (\d+) compiles remote on (\d+) volunteers?, "
                       r"(\d+) local$", re.MULTILINE)


def _pkg(t: TwoNodes, farm_recipes: Path, build: Path, *args: str) -> list[str]:
    return ["--recipes", str(farm_recipes), "--mirror", f"file://{DISTFILES}", "--jobs", "2",
            "--build-dir", str(build), *args]


@pytest.fixture(scope="module")
def local_artifact(two_nodes: TwoNodes, farm_recipes: Path, tmp_path_factory) -> tuple[Path, bytes]:
    """musl and farmprog built without the farm: the bytes the farm builds must give."""
    build = tmp_path_factory.mktemp("pkg-build")
    start = time.monotonic()
    done = two_nodes.cli(two_nodes.manager,
                         *_pkg(two_nodes, farm_recipes, build, "pkg", "farmprog"))
    two_nodes.figures["local musl+farmprog s"] = round(time.monotonic() - start, 1)
    assert "built 2, up to date 0, failed 0" in done.stderr
    artifact = build / "packages" / "x86_64" / "farmprog-1.0-r1.x86_64.tar.zst"
    return build, artifact.read_bytes()


def test_farm_pkg_compiles_on_both_nodes(two_nodes: TwoNodes, farm_recipes: Path,
                                         local_artifact: tuple[Path, bytes]) -> None:
    t = two_nodes
    build, local_bytes = local_artifact
    volunteers = t.volunteers()
    before = _served(volunteers)
    start = time.monotonic()
    done = t.cli(t.manager, *_pkg(t, farm_recipes, build, "--farm", "pkg", "farmprog",
                                  "--force", "farmprog"))
    seconds = time.monotonic() - start
    after = _served(volunteers)
    assert f"distcc farm: {REPLICAS} volunteer(s), {REPLICAS + 1} compile jobs" in done.stderr
    (line,) = FARM_LINE.findall(done.stderr)
    remote, total, used, local = map(int, line)
    per_node = _per_node(before, after)
    t.figures["farm build (both nodes)"] = {
        "seconds": round(seconds, 1), "remote": remote, "local": local,
        "served by node (minus 1 probe per volunteer)":
            {a: n - 2 for a, n in per_node.items()}}
    # distccd's counters: every remote compile plus one identity probe per
    # volunteer (the build's `discover`), and both nodes did real work.
    assert sum(per_node.values()) == remote + REPLICAS
    assert per_node[MANAGER_ADDR] > 2 and per_node[WORKER_ADDR] > 2, per_node
    assert total == PROGRAM_FILES + 1 and used >= 3
    artifact = build / "packages" / "x86_64" / "farmprog-1.0-r1.x86_64.tar.zst"
    assert artifact.read_bytes() == local_bytes


def test_killing_the_worker_mid_build(two_nodes: TwoNodes, farm_recipes: Path,
                                      local_artifact: tuple[Path, bytes]) -> None:
    t = two_nodes
    build, local_bytes = local_artifact
    volunteers = t.volunteers()
    on_worker = [v for v in volunteers if v.address == WORKER_ADDR]
    before = _served(volunteers)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IGLUBUILD_")}
    env["DOCKER_HOST"] = t.manager.host
    args = _pkg(t, farm_recipes, build, "--farm", "pkg", "farmprog", "--force", "farmprog")
    t.commands.append(f"[manager] iglubuild {shlex.join(args)}  # the worker is killed")
    proc = subprocess.Popen([sys.executable, "-m", "iglubuild", *args], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        # Kill the node once its volunteers are busy with this build (more
        # than the one identity probe each).
        deadline = time.monotonic() + 120
        while sum(_served(on_worker).values()) - sum(before[(v.address, v.port)]
                                                     for v in on_worker) < 4:
            assert proc.poll() is None, "the build ended before the worker was busy"
            assert time.monotonic() < deadline, "the worker's volunteers got no compile"
            time.sleep(0.05)
        killed = t.node.kill_all()
        t.node.set_link(False)  # and silent: no refusals, connections time out
        kill_time = time.monotonic()
        (t.worker_root / "docker.pid").unlink(missing_ok=True)  # its PID may be reused
        marked_down = _watch_node_down(t, kill_time)
        assert proc.poll() is None, "the build ended before the kill"
        assert t.worker.proc.wait(5) == -9
        assert len(killed) >= 4  # dockerd, containerd, a shim and a distccd at least
        # At once, before the manager notices (9-15 s measured): its
        # volunteers are down, and a build starting now leaves them out.
        # In-process, in that order, so a loaded machine does not push
        # these checks past the manager's heartbeat timeout.
        hosts = farm.discover(Settings(build_dir=t.manager_build))
        status = farm.farm_status(Settings(build_dir=t.manager_build))
        t.figures["status and discover done s after the kill"] = round(
            time.monotonic() - kill_time, 1)
        assert hosts is not None
        assert sorted(v.address for v in hosts.excluded) == [WORKER_ADDR] * 2
        assert {v.address for v in hosts.volunteers} == {MANAGER_ADDR}
        assert WORKER_ADDR not in hosts.distcc_hosts
        down = [v for v in status["volunteers"] if v["address"] == WORKER_ADDR]
        assert len(down) == 2 and all(v["state"] == "down" and v["problem"] for v in down), down
        # The CLI says the same (its volunteers down, or by now the node).
        text = t.cli(t.manager, "farm", "status").stdout
        assert (len(re.findall(rf"{re.escape(WORKER_ADDR)}:\d+\s+down ", text)) == 2
                or re.search(rf"node {NETNS}\s+\S+\s+worker\s+down", text)), text
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    build_done = time.monotonic()
    (line,) = FARM_LINE.findall(err)
    remote, total, used, local = map(int, line)
    after = _served([v for v in volunteers if v.address == MANAGER_ADDR])
    t.figures["build with the worker killed"] = {
        "killed pids": len(killed), "remote": remote, "local": local,
        "served by manager's volunteers": _per_node(before, after),
        "build finished s after the kill": round(build_done - kill_time, 1)}
    assert total == PROGRAM_FILES + 1
    artifact = build / "packages" / "x86_64" / "farmprog-1.0-r1.x86_64.tar.zst"
    assert artifact.read_bytes() == local_bytes

    # The manager marks the node down once its heartbeat is overdue.
    assert marked_down.wait(120), "the manager never marked the node down"
    t.figures["manager marked the node down s after the kill"] = marked_down.seconds
    status = t.status()
    nodes = {n["address"]: n["state"] for n in status["nodes"]}
    assert nodes == {MANAGER_ADDR: "ready", WORKER_ADDR: "down"}
    for v in status["volunteers"]:
        if v["address"] == WORKER_ADDR:
            assert v["state"] == "down", v

    # The next build leaves the worker's volunteers out, whether they are
    # still listed (down) or the swarm has moved their slots to the manager.
    listed = t.volunteers()
    before = _served([v for v in listed if v.address == MANAGER_ADDR])
    done = t.cli(t.manager, *_pkg(t, farm_recipes, build, "--farm", "pkg", "farmprog",
                                  "--force", "farmprog"))
    now = [v for v in t.volunteers() if v.address == MANAGER_ADDR]
    after = _served(now)
    (line,) = FARM_LINE.findall(done.stderr)
    remote, total, used, local = map(int, line)
    # A volunteer the swarm was still starting when `before` was read (-1: not
    # answering yet) had served nothing.
    served = sum(n - max(before.get(k, 0), 0) for k, n in after.items())
    t.figures["next build"] = {
        "volunteers listed before": [f"{v.address}:{v.port} {v.state}" for v in listed],
        "remote": remote, "local": local, "served on manager (with probes)": served}
    log_line = [line for line in (build / "logs" / "farmprog.log").read_text().splitlines()
                if "compiles remote on" in line][-1]  # the log keeps earlier builds
    assert WORKER_ADDR not in log_line and MANAGER_ADDR in log_line, log_line
    assert local == 0 and remote == total == PROGRAM_FILES + 1
    # distccd's counters: every remote compile was served on the manager's
    # node (plus one identity probe per volunteer there).
    assert remote < served <= remote + len(now), (served, remote, len(now))
    assert (build / "packages" / "x86_64" / "farmprog-1.0-r1.x86_64.tar.zst"
            ).read_bytes() == local_bytes


def test_farm_down_on_both_leaves_nothing(two_nodes: TwoNodes) -> None:
    """The killed machine comes back (its dockerd restarts on its data root, still a
    swarm member), then `farm down` on the manager and on the worker."""
    import docker

    t = two_nodes
    t.node.set_link(True)
    t.worker = start_dockerd(t.worker_root, wrap=t.node.wrap)
    out = t.cli(t.manager, "farm", "down").stdout
    assert "removed iglubuild-distcc" in out and "left the swarm" in out
    out = t.cli(t.worker, "farm", "down").stdout
    assert "left the swarm" in out
    for host in (t.manager, t.worker):
        client = docker.DockerClient(base_url=host.host)
        assert client.info()["Swarm"]["LocalNodeState"] == "inactive"
        assert client.containers.list(all=True) == []
    t.worker.stop()
    assert t.node.pids() == []
    t.node.remove()
    assert t.node.exists() == {"netns": False, "veth": False}
    with open("/proc/mounts", encoding="utf-8") as mounts:
        left = [line for line in mounts if str(t.worker_root) in line or NETNS in line]
    assert left == []
