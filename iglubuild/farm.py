"""The distcc compile farm: a Docker swarm service of distccd volunteers.

`farm_up` joins or initialises a swarm and runs the service `iglubuild-distcc`
from the toolchain image; `farm_status` lists the volunteers; `farm_down`
removes the service (and leaves the swarm only if iglubuild created it);
`discover` turns the live farm into DISTCC_HOSTS for a build, and
`build_env` into the variables a build phase needs; `tally_compiles` reads
back from distcc's own log how many of a build's compiles went to the farm.

Everything goes through the Docker Engine API (the docker Python SDK); the
docker CLI is never run.

Volunteers use host networking. Each listens on its own port, derived from
its task slot (slot 1 on BASE, slot 2 on BASE+2, ...; the distccd stats
page one port above), so several volunteers fit on one machine and are
reached at their node's address across machines.

A volunteer's compiler identity is measured, not declared: a fixed probe
file is compiled through that volunteer's distccd and the object file's
sha256 is compared with the local compiler's. Two compilers that produce the
same object for the probe are interchangeable for distcc's purposes (it only
ever sends them preprocessed code to compile); a different clang, a wrapper
adding flags or another target default all change the hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iglubuild.errors import IglubuildError, UsageError
from iglubuild.run import CommandError, base_env, require_tool, run
from iglubuild.settings import Settings

if TYPE_CHECKING:
    import docker

log = logging.getLogger("iglubuild.farm")

SERVICE_NAME = "iglubuild-distcc"
IMAGE_REPOSITORY = "iglubuild-toolchain"
LABEL_FARM = "org.iglunix.farm"
LABEL_BASE_PORT = "org.iglunix.farm.base-port"
LABEL_SLOTS = "org.iglunix.farm.slots"
LABEL_TOOLCHAIN = "org.iglunix.toolchain-id"
DEFAULT_BASE_PORT = 3632
DEFAULT_SWARM_PORT = 2377
STATE_FILE = "farm-state.json"

# The flags every build uses for the musl target; the probe is compiled with
# them so that the identity covers the code generation builds will get.
PROBE_FLAGS = ("-target", "x86_64-linux-musl", "-O2")  # distcc keeps an explicit -target
PROBE_SOURCE = """\
/* iglubuild compiler identity probe: exercises the optimiser and codegen. */
struct node { struct node *next; unsigned long key; double weight; };
static unsigned long mix(unsigned long h, unsigned long v) {
    h ^= v + 0x9e3779b97f4a7c15UL + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdUL;
}
unsigned long iglubuild_probe(const struct node *n, int rounds) {
    unsigned long h = 0;
    double w = 0.0;
    for (int r = 0; r < rounds; r++)
        for (const struct node *p = n; p; p = p->next) {
            h = mix(h, p->key + (unsigned long)r);
            w += p->weight * (double)r;
        }
    return h ^ (unsigned long)w;
}
"""

# The volunteer's start script, run by `sh` in the toolchain image. The port
# comes from the task slot (a service template), so replicas on one machine
# do not collide. distccd drops root to its own user by itself.
VOLUNTEER_SCRIPT = r"""
set -eu
port=$((BASE_PORT + 2 * (SLOT - 1)))
set -- distccd --daemon --no-detach --log-stderr --log-level info \
    --listen "$LISTEN" --port "$port" --stats --stats-port "$((port + 1))" --jobs "$JOBS"
for net in $ALLOW; do set -- "$@" --allow "$net"; done
echo "iglubuild volunteer: slot $SLOT listening on $LISTEN:$port (stats $((port + 1)))"
if [ -n "$CPUSET" ]; then exec taskset -c "$CPUSET" "$@"; fi
exec "$@"
"""


class FarmError(IglubuildError):
    """The farm could not be set up, queried or taken down."""


@dataclass
class Volunteer:
    """One running distccd of the farm, as seen from the swarm API."""

    task_id: str
    slot: int
    node: str
    address: str
    port: int
    state: str
    container_id: str = ""
    slots: int = 1
    identity: str | None = None
    compiler: str | None = None
    jobs_served: int | None = None
    problem: str | None = None

    @property
    def stats_port(self) -> int:
        return self.port + 1

    @property
    def host_spec(self) -> str:
        """This volunteer as a DISTCC_HOSTS entry."""
        return f"{self.address}:{self.port}/{self.slots}"


@dataclass
class FarmHosts:
    """The usable part of a live farm, ready for a build."""

    volunteers: list[Volunteer]
    jobs: int
    local_identity: str
    excluded: list[Volunteer] = field(default_factory=list)

    @property
    def distcc_hosts(self) -> str:
        return " ".join(v.host_spec for v in self.volunteers)


# --------------------------------------------------------------------------- docker


def docker_client() -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (or the default socket)."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise FarmError(
            f"cannot reach the Docker engine at {where}",
            hint="start dockerd (or set DOCKER_HOST to a running engine)",
        ) from exc
    return client


def _swarm_state(client: docker.DockerClient) -> dict[str, Any]:
    swarm: dict[str, Any] = client.info().get("Swarm", {})
    return swarm


def _node_address(node_attrs: Mapping[str, Any]) -> str:
    """The address a node's host-networked volunteers are reached at."""
    addr = str(node_attrs.get("Status", {}).get("Addr", ""))
    if not addr or addr == "0.0.0.0":
        # Managers sometimes report 0.0.0.0; their advertised address is exact.
        manager = node_attrs.get("ManagerStatus", {}).get("Addr", "")
        addr = manager.rsplit(":", 1)[0] if manager else "127.0.0.1"
    return addr


def _find_service(client: docker.DockerClient) -> Any | None:
    """The farm's service, or None (also when this engine is in no swarm at all)."""
    swarm = _swarm_state(client)
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        return None
    for svc in client.services.list(filters={"name": SERVICE_NAME}):
        if svc.name == SERVICE_NAME:
            return svc
    return None


# --------------------------------------------------------------------------- state


def state_path(settings: Settings) -> Path:
    return settings.build_dir / STATE_FILE


def _read_state(settings: Settings) -> dict[str, Any]:
    path = state_path(settings)
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FarmError(f"{path}: unreadable farm state ({exc})",
                        hint="remove the file if no farm is running") from exc
    return state


def _write_state(settings: Settings, state: Mapping[str, Any]) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- up


@dataclass(frozen=True)
class FarmConfig:
    """What `farm up` asks for."""

    replicas: int
    image: str | None = None
    allow: tuple[str, ...] = ()
    advertise_addr: str = "127.0.0.1"
    swarm_port: int = DEFAULT_SWARM_PORT
    base_port: int = DEFAULT_BASE_PORT
    listen: str | None = None
    slots: int | None = None
    cpuset: str | None = None
    wait: float = 120.0
    join: str | None = None  # manager ADDR:PORT, to join this engine as a worker
    token: str | None = None


def _check_networks(nets: Iterable[str]) -> list[str]:
    out = []
    for net in nets:
        try:
            parsed = ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise UsageError(f"--allow {net}: not an address or CIDR network",
                             hint="e.g. --allow 10.0.0.0/24") from exc
        if parsed.prefixlen == 0:
            raise UsageError(f"--allow {net}: would accept every address",
                             hint="name the build machines' network, e.g. 10.0.0.0/24")
        out.append(str(parsed))
    return out


def default_toolchain_image(client: docker.DockerClient) -> str:
    """The newest local toolchain image (made by `iglubuild toolchain image`)."""
    images = client.images.list(filters={"label": LABEL_TOOLCHAIN})
    if not images:
        raise FarmError("no toolchain image in this Docker engine",
                        hint="run `iglubuild toolchain image` (or --load FILE) first")
    images.sort(key=lambda i: i.attrs.get("Created", ""), reverse=True)
    tags = images[0].tags
    return str(tags[0] if tags else images[0].id)


def ensure_swarm(client: docker.DockerClient, settings: Settings, cfg: FarmConfig) -> bool:
    """Use the swarm this engine manages, or initialise one; True if this call created it."""
    state = _swarm_state(client)
    local = state.get("LocalNodeState", "inactive")
    if local == "active":
        if not state.get("ControlAvailable"):
            raise FarmError("this Docker engine is a swarm worker, not a manager",
                            hint="run `iglubuild farm` on a manager node")
        return False
    if local != "inactive":
        raise FarmError(f"the swarm is in state {local!r}",
                        hint="wait for it to settle or `docker swarm leave --force`")
    client.swarm.init(advertise_addr=cfg.advertise_addr,
                      listen_addr=f"{cfg.advertise_addr}:{cfg.swarm_port}")
    info = _swarm_state(client)
    _write_state(settings, {"created_swarm": True,
                            "swarm_id": info.get("Cluster", {}).get("ID", ""),
                            "node_id": info.get("NodeID", "")})
    log.info("initialised a swarm advertised on %s", cfg.advertise_addr)
    return True


def farm_join(settings: Settings, cfg: FarmConfig) -> str:
    """Join this engine to an existing swarm as a worker; returns the node id.

    A worker only hosts volunteers: the service itself is created and scaled
    from a manager. `farm down` on this machine leaves the swarm again.
    """
    if not cfg.join or not cfg.token:
        raise UsageError("joining needs the manager's address and a join token",
                         hint="farm up --join ADDR:PORT --token TOKEN (printed by farm up "
                              "on the manager)")
    client = docker_client()
    state = _swarm_state(client)
    if state.get("LocalNodeState") not in ("inactive", "active"):
        raise FarmError(f"this Docker engine's swarm is in state {state.get('LocalNodeState')!r}",
                        hint="`iglubuild farm down` (or leave that swarm) first")
    if state.get("LocalNodeState") == "active":
        managers = {m.get("Addr") for m in state.get("RemoteManagers") or []}
        if cfg.join in managers:
            return str(state.get("NodeID", ""))
        raise FarmError("this Docker engine is already in another swarm",
                        hint="`iglubuild farm down` (or leave that swarm) first")
    import docker.errors

    try:
        client.swarm.join(remote_addrs=[cfg.join], join_token=cfg.token,
                          advertise_addr=cfg.advertise_addr,
                          listen_addr=f"{cfg.advertise_addr}:{cfg.swarm_port}")
    except docker.errors.APIError as exc:
        raise FarmError(f"cannot join the swarm at {cfg.join}: {exc.explanation}",
                        hint="check the address, the token and that port "
                             f"{cfg.join.rsplit(':', 1)[-1]} is reachable") from exc
    node_id = str(_swarm_state(client).get("NodeID", ""))
    _write_state(settings, {"joined_swarm": True, "manager": cfg.join, "node_id": node_id})
    return node_id


def join_command(client: docker.DockerClient) -> str:
    """The command other machines run to join this manager's swarm as workers."""
    client.swarm.reload()
    token = client.swarm.attrs.get("JoinTokens", {}).get("Worker", "")
    addr = _swarm_state(client).get("RemoteManagers", [{}])[0].get("Addr", "")
    return f"iglubuild farm up --join {addr} --token {token}"


def _allowed_networks(client: docker.DockerClient, extra: Sequence[str]) -> list[str]:
    """Who may send compiles: the swarm's nodes and the networks named by --allow."""
    nets = ["127.0.0.1/32"]
    for node in client.nodes.list():
        addr = _node_address(node.attrs)
        try:
            nets.append(str(ipaddress.ip_network(addr)))
        except ValueError:
            continue
    nets.extend(_check_networks(extra))
    return sorted(set(nets))


def farm_up(settings: Settings, cfg: FarmConfig) -> list[Volunteer]:
    """Create the service, or change it (replica count, image) if it exists."""
    import docker.types

    if cfg.replicas < 0:
        raise UsageError("--replicas must be 0 or more")
    _check_networks(cfg.allow)
    client = docker_client()
    image = cfg.image or default_toolchain_image(client)
    try:
        client.images.get(image)
    except Exception as exc:  # docker.errors.ImageNotFound, APIError
        raise FarmError(f"image {image} is not in this Docker engine",
                        hint="`iglubuild toolchain image --load FILE` on every node") from exc
    ensure_swarm(client, settings, cfg)
    listen = cfg.listen or (
        "127.0.0.1" if ipaddress.ip_address(cfg.advertise_addr).is_loopback else "0.0.0.0"
    )
    slots = cfg.slots or (os.cpu_count() or 1)
    env = [
        "SLOT={{.Task.Slot}}",
        f"BASE_PORT={cfg.base_port}",
        f"LISTEN={listen}",
        f"ALLOW={' '.join(_allowed_networks(client, cfg.allow))}",
        f"JOBS={slots}",
        f"CPUSET={cfg.cpuset or ''}",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    labels = {LABEL_FARM: "1", LABEL_BASE_PORT: str(cfg.base_port), LABEL_SLOTS: str(slots)}
    spec: dict[str, Any] = dict(
        image=image,
        command=["sh", "-c", VOLUNTEER_SCRIPT],
        env=env,
        labels=labels,
        container_labels={LABEL_FARM: "1"},
        mode=docker.types.ServiceMode("replicated", replicas=cfg.replicas),
        networks=["host"],
        restart_policy=docker.types.RestartPolicy(condition="any", delay=1_000_000_000),
        stop_grace_period=2_000_000_000,
    )
    service = _find_service(client)
    if service is None:
        client.services.create(name=SERVICE_NAME, **spec)
    elif _same_volunteers(service.attrs["Spec"], spec):
        # A second `farm up` changes the farm instead of failing. Only the
        # replica count changes here, and the task template is sent back
        # untouched so running volunteers are not restarted (the SDK's
        # Service.update would add empty keys, which the engine counts as a change).
        current = service.attrs["Spec"]
        client.api.update_service(
            service.id, service.version, name=SERVICE_NAME,
            task_template=current["TaskTemplate"], labels=current.get("Labels"),
            mode=spec["mode"], update_config=current.get("UpdateConfig"),
            endpoint_spec=current.get("EndpointSpec"),
        )
    else:
        service.update(name=SERVICE_NAME, **spec)
    return wait_for_volunteers(client, cfg.replicas, cfg.wait)


def _same_volunteers(current: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Does the running service already start volunteers exactly as `spec` would?"""
    cs = current.get("TaskTemplate", {}).get("ContainerSpec", {})
    return bool(cs.get("Image", "").split("@")[0] == spec["image"]
            and cs.get("Command") == spec["command"]
            and cs.get("Env") == spec["env"]
            and (current.get("Labels") or {}) == spec["labels"])


def wait_for_volunteers(client: docker.DockerClient, count: int, timeout: float) -> list[Volunteer]:
    """Wait until `count` volunteers run and accept connections."""
    deadline = time.monotonic() + timeout
    volunteers: list[Volunteer] = []
    while True:
        volunteers = [v for v in list_volunteers(client) if v.state == "running"]
        ready = [v for v in volunteers if _reachable(v.address, v.stats_port)]
        if len(ready) == count and len(volunteers) == count:
            return ready
        if time.monotonic() > deadline:
            raise FarmError(
                f"only {len(ready)} of {count} volunteers answered within {timeout:.0f}s",
                hint="see the volunteers' logs through the Docker API (`farm status`)",
            )
        time.sleep(0.5)


def _reachable(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- status


def list_volunteers(client: docker.DockerClient) -> list[Volunteer]:
    """The service's tasks that should be running, with node address and port."""
    service = _find_service(client)
    if service is None:
        return []
    labels = service.attrs.get("Spec", {}).get("Labels", {}) or {}
    base = int(labels.get(LABEL_BASE_PORT, DEFAULT_BASE_PORT))
    slots = int(labels.get(LABEL_SLOTS, 1))
    nodes = {n.id: n.attrs for n in client.nodes.list()}
    out = []
    for task in service.tasks(filters={"desired-state": "running"}):
        node = nodes.get(task.get("NodeID", ""), {})
        slot = int(task.get("Slot", 0) or 0)
        status = task.get("Status", {})
        out.append(Volunteer(
            task_id=task["ID"],
            slot=slot,
            node=node.get("Description", {}).get("Hostname", task.get("NodeID", "?")),
            address=_node_address(node) if node else "?",
            port=base + 2 * (slot - 1),
            state=status.get("State", "?"),
            container_id=status.get("ContainerStatus", {}).get("ContainerID", ""),
            slots=slots,
        ))
    return sorted(out, key=lambda v: v.slot)


def read_stats(address: str, stats_port: int, timeout: float = 2.0) -> dict[str, str]:
    """distccd's --stats page as a dict (dcc_compile_ok, dcc_tcp_accept, ...)."""
    data = b""
    with socket.create_connection((address, stats_port), timeout=timeout) as sock:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    stats = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("dcc_"):
            stats[key] = value.strip()
    return stats


def _compiler_name(obj: bytes) -> str | None:
    """The compiler that produced an object, from its .comment section text."""
    match = re.search(rb"[\x20-\x7e]*clang version [\x20-\x7e]*", obj)
    return match.group(0).decode().strip() if match else None


def _compile_probe(cc: Sequence[str], env: Mapping[str, str], workdir: Path) -> bytes:
    src = workdir / "iglubuild_probe.c"
    out = workdir / "iglubuild_probe.o"
    src.write_text(PROBE_SOURCE, encoding="utf-8")
    out.unlink(missing_ok=True)
    run([*cc, *PROBE_FLAGS, "-c", src.name, "-o", out.name], env=env, cwd=workdir,
        capture=True, timeout=60)
    return out.read_bytes()


def local_identity(compiler: str = "clang") -> tuple[str, str | None]:
    """(identity, compiler name) of the local compiler: the probe object's sha256."""
    require_tool(compiler.split()[0], "clang")
    with tempfile.TemporaryDirectory(prefix="iglubuild-probe-") as tmp:
        obj = _compile_probe(compiler.split(), base_env(), Path(tmp))
    return hashlib.sha256(obj).hexdigest()[:16], _compiler_name(obj)


def volunteer_identity(address: str, port: int,
                       compiler: str = "clang") -> tuple[str, str | None]:
    """(identity, compiler name) measured by compiling the probe on one volunteer.

    Local fallback is switched off, so the object really comes from that
    volunteer; a failure raises CommandError.
    """
    require_tool("distcc")
    with tempfile.TemporaryDirectory(prefix="iglubuild-probe-") as tmp:
        (Path(tmp) / "distcc").mkdir()
        env = base_env({
            "DISTCC_HOSTS": f"{address}:{port}/1",
            "DISTCC_FALLBACK": "0",
            "DISTCC_DIR": str(Path(tmp) / "distcc"),
            "DISTCC_IO_TIMEOUT": "30",
        })
        obj = _compile_probe(["distcc", *compiler.split()], env, Path(tmp))
    return hashlib.sha256(obj).hexdigest()[:16], _compiler_name(obj)


def inspect_volunteer(v: Volunteer, compiler: str = "clang") -> Volunteer:
    """Fill in identity, compiler name and jobs served (or `problem`)."""
    if v.state != "running":
        return v
    try:
        stats = read_stats(v.address, v.stats_port)
        v.jobs_served = int(stats.get("dcc_compile_ok", "0"))
    except (OSError, ValueError) as exc:
        v.problem = f"stats port {v.address}:{v.stats_port}: {exc}"
        return v
    try:
        v.identity, v.compiler = volunteer_identity(v.address, v.port, compiler)
    except CommandError as exc:
        v.problem = "probe compile failed: " + (exc.output.strip().splitlines() or ["?"])[-1]
    return v


def _inspect_all(volunteers: list[Volunteer], compiler: str) -> list[Volunteer]:
    """Probe every volunteer at once: a big farm is checked in one probe's time."""
    if not volunteers:
        return volunteers
    with ThreadPoolExecutor(max_workers=min(16, len(volunteers))) as pool:
        return list(pool.map(lambda v: inspect_volunteer(v, compiler), volunteers))


def farm_status(settings: Settings, compiler: str = "clang") -> dict[str, Any]:
    """Everything `farm status` shows, as plain data (also its --json)."""
    client = docker_client()
    swarm = _swarm_state(client)
    service = _find_service(client)
    volunteers = _inspect_all(list_volunteers(client), compiler)
    local_id, local_name = local_identity(compiler)
    return {
        "swarm": swarm.get("LocalNodeState", "inactive"),
        "service": SERVICE_NAME if service is not None else None,
        "image": (service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
                  if service is not None else None),
        "local_identity": local_id,
        "local_compiler": local_name,
        "volunteers": [asdict(v) for v in volunteers],
    }


# --------------------------------------------------------------------------- down


def farm_down(settings: Settings, wait: float = 60.0) -> dict[str, bool]:
    """Remove the service; leave the swarm only if `farm up` created it."""
    client = docker_client()
    service = _find_service(client)
    removed = False
    if service is not None:
        service.remove()
        removed = True
    # Service removal is asynchronous: wait until this node runs none of its
    # containers, so "down" means down. Stopped ones the swarm keeps as task
    # history (or left behind by an earlier, force-left swarm) are removed.
    import docker.errors

    deadline = time.monotonic() + wait
    while True:
        left_over = client.containers.list(all=True, filters={
            "label": f"com.docker.swarm.service.name={SERVICE_NAME}"})
        if not left_over:
            break
        for container in left_over:
            if container.status != "running":
                try:
                    container.remove(force=True)
                except docker.errors.APIError:
                    pass  # already going away
        if time.monotonic() > deadline:
            raise FarmError("the volunteers' containers did not stop in time",
                            hint="check the engine; run `farm down` again")
        time.sleep(0.3)
    state = _read_state(settings)
    left = False
    swarm = _swarm_state(client)
    current = swarm.get("Cluster", {}).get("ID", "")
    created = state.get("created_swarm") and state.get("swarm_id") in ("", current)
    if swarm.get("LocalNodeState") == "active" and (created or state.get("joined_swarm")):
        client.swarm.leave(force=True)
        left = True
    if state:
        state_path(settings).unlink(missing_ok=True)
    return {"service_removed": removed, "left_swarm": left}


# --------------------------------------------------------------------------- discover


def discover(settings: Settings, compiler: str = "clang") -> FarmHosts | None:
    """The live farm's usable volunteers, or None (with a message) for a local build.

    Volunteers whose compiler identity differs from the local compiler's are
    left out with a warning: their objects would differ from a local build.
    """
    import docker.errors

    try:
        client = docker_client()
    except FarmError as exc:
        log.warning("no distcc farm: %s; building locally", exc.message)
        return None
    try:
        if _swarm_state(client).get("LocalNodeState") != "active":
            log.warning("no distcc farm: this Docker engine is not in a swarm; building locally")
            return None
        running = [v for v in list_volunteers(client) if v.state == "running"]
    except docker.errors.APIError as exc:
        log.warning("no distcc farm: %s; building locally", exc)
        return None
    if not running:
        log.warning("no distcc farm: service %s has no running volunteers "
                    "(`iglubuild farm up`); building locally", SERVICE_NAME)
        return None
    local_id, _ = local_identity(compiler)
    usable, excluded = [], []
    for v in _inspect_all(running, compiler):
        if v.problem:
            log.warning("volunteer %s:%d left out: %s", v.address, v.port, v.problem)
            excluded.append(v)
        elif v.identity != local_id:
            v.problem = f"compiler identity {v.identity} differs from local {local_id}"
            log.warning("volunteer %s:%d left out: %s", v.address, v.port, v.problem)
            excluded.append(v)
        else:
            usable.append(v)
    if not usable:
        log.warning("no usable distcc volunteer; building locally")
        return None
    # Preprocessing and linking stay local, so keep one job for this machine
    # on top of every remote slot.
    jobs = sum(v.slots for v in usable) + 1
    return FarmHosts(volunteers=usable, jobs=jobs, local_identity=local_id, excluded=excluded)


def phase_additions(hosts: FarmHosts, distcc_dir: Path | None = None,
                    local_slots: int = 0) -> tuple[tuple[str, ...], dict[str, str]]:
    """(launcher, extra_env) for iglubuild.build: `launcher` goes in front of the
    compiler in the phase's compiler wrappers, `extra_env` into the phase env.

    The build engine's wrappers keep the target flags and --sysroot, so only
    DISTCC_HOSTS and distcc's own settings are added here.
    """
    env = build_env(hosts, distcc_dir=distcc_dir, local_slots=local_slots)
    for key in ("CC", "CXX", "JOBS", "MAKEFLAGS"):
        env.pop(key)
    return ("distcc",), env


def build_env(hosts: FarmHosts, cc: str = "clang", cxx: str = "clang++",
              distcc_dir: Path | None = None, local_slots: int = 0) -> dict[str, str]:
    """Environment additions that send a build phase's compiles to the farm.

    distcc's default (non-pump) mode preprocesses and links locally against
    the sysroot and ships only preprocessed code, so the volunteers need no
    headers or libraries; a volunteer that fails makes distcc compile locally.
    `local_slots` > 0 lets this machine compile too (listed after the
    volunteers, so distcc fills them first).
    """
    host_list = hosts.distcc_hosts
    jobs = hosts.jobs
    if local_slots > 0:
        host_list += f" localhost/{local_slots}"
        jobs += local_slots
    env = {
        "DISTCC_HOSTS": host_list,
        "CC": f"distcc {cc}",
        "CXX": f"distcc {cxx}",
        "JOBS": str(jobs),
        "MAKEFLAGS": f"-j{jobs}",
        # With every slot busy distcc polls for a free one, by default once a
        # second: a second idle per compile on a small farm. 100 ms is cheap.
        "DISTCC_PAUSE_TIME_MSEC": "100",
    }
    if distcc_dir is not None:
        # distcc does not create its state folder and, without it, silently
        # compiles everything locally.
        distcc_dir.mkdir(parents=True, exist_ok=True)
        env["DISTCC_DIR"] = str(distcc_dir)
    return env


# --------------------------------------------------------------------------- tally

# distcc's client log (DISTCC_LOG, info level): one "compile from SRC to OBJ"
# per distributable compile, then "compile SRC on HOST completed ok" from the
# host whose result was kept (HOST is the DISTCC_HOSTS entry, or localhost
# after a fallback). Links, -E and autoconf tests never get a "compile from".
# Several distcc processes append to one log; every line is a single write
# and starts with the writer's pid, so lines are matched by pid.
_LOG_LINE = re.compile(r"^distcc\[(\d+)\] (.*)$")
_COMPILE_FROM = re.compile(r"^compile from .* to .*$")
_COMPILED_ON = re.compile(r"^compile .* on (\S+) completed ok$")
_COMPILE_FAILED = re.compile(r"^ERROR: compile .* on \S+ failed")
_EXIT = re.compile(r"^\(dcc_exit\) ")


@dataclass
class CompileTally:
    """Where a build's compiles ran, counted from distcc's client log.

    `remote` compiles returned an object from a volunteer; `local` ones were
    compiled on the build machine (a volunteer failed or refused, or the
    compile failed remotely and was retried). Links and preprocessing are not
    compiles and are not counted.
    """

    remote: int = 0
    local: int = 0
    hosts: dict[str, int] = field(default_factory=dict)  # volunteer address:port -> compiles
    # distcc's complaints about distributing (not about code that does not
    # compile, such as configure probes), first few
    warnings: list[str] = field(default_factory=list)

    @property
    def compiles(self) -> int:
        return self.remote + self.local

    def __add__(self, other: CompileTally) -> CompileTally:
        hosts = dict(self.hosts)
        for host, n in other.hosts.items():
            hosts[host] = hosts.get(host, 0) + n
        return CompileTally(self.remote + other.remote, self.local + other.local, hosts,
                            (self.warnings + other.warnings)[:MAX_WARNINGS])

    def describe(self) -> str:
        """One line for the build summary, e.g. `farm: 812 of 840 compiles remote on 2
        volunteers, 28 local`."""
        return (f"farm: {self.remote} of {self.compiles} compiles remote on "
                f"{len(self.hosts)} volunteer{'s' if len(self.hosts) != 1 else ''}, "
                f"{self.local} local")


MAX_WARNINGS = 20


def tally_compiles(log_path: Path) -> CompileTally:
    """Count a build's remote and local compiles from its DISTCC_LOG file.

    Reads the log distcc wrote because the build phase had DISTCC_LOG set
    (iglubuild.build sets it in the work folder whenever DISTCC_HOSTS is).
    The client's own log is exact for this build, unlike the volunteers'
    counters, which other builds sharing the farm move too. A missing log
    means distcc never ran: nothing was compiled.
    """
    tally = CompileTally()
    open_: set[str] = set()  # pids with a distributable compile not yet placed
    # pids whose compile failed on the volunteer: the code is bad (configure
    # probes are meant to fail), and distcc's retry-locally warnings say nothing
    # about the farm
    bad_code: set[str] = set()
    try:
        f = log_path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return tally
    with f:
        for line in f:
            m = _LOG_LINE.match(line.rstrip("\n"))
            if m is None:
                continue
            pid, text = m.groups()
            if _COMPILE_FROM.match(text):
                if pid in open_:  # a pid reused after an unfinished compile
                    tally.local += 1
                open_.add(pid)
            elif (done := _COMPILED_ON.match(text)) and pid in open_:
                open_.discard(pid)
                host = done.group(1)
                if host == "localhost":
                    tally.local += 1
                else:
                    # "addr:port/slots,options" -> "addr:port"
                    key = host.split("/", 1)[0]
                    tally.remote += 1
                    tally.hosts[key] = tally.hosts.get(key, 0) + 1
            elif _EXIT.match(text):
                bad_code.discard(pid)
                if pid in open_:
                    open_.discard(pid)
                    tally.local += 1  # failed everywhere: it was last tried here
            elif _COMPILE_FAILED.match(text):
                bad_code.add(pid)
            elif (text.startswith(("Warning:", "ERROR:", "(dcc_build_somewhere) Warning:"))
                  and pid not in bad_code and len(tally.warnings) < MAX_WARNINGS):
                tally.warnings.append(text)
    tally.local += len(open_)  # killed mid-compile
    return tally
