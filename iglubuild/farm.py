"""The distcc compile farm: a Docker swarm service of distccd volunteers.

This module is the swarm's lifecycle. `farm_up` joins or initialises a swarm
and runs the service `iglubuild-distcc` from the toolchain image;
`farm_status` lists the volunteers; `farm_down` removes the service (and
leaves the swarm only if iglubuild created it); `discover` turns the live
farm into the usable volunteers of a build (`distcc.FarmHosts`). What a build
does with them (the phase environment, the compile tally) is in
iglubuild.distcc; the engine client in iglubuild.docker_engine.

Volunteers use host networking. Each listens on its own port, derived from
its task slot (slot 1 on BASE, slot 2 on BASE+2, ...; the distccd stats
page one port above), so several volunteers fit on one machine and are
reached at their node's address across machines.

One service template serves every node, so a volunteer learns its address
from the environment: `NODE={{.Node.ID}}` (a swarm template) and
`NODE_ADDRS`, the map of node id to swarm address that `farm up` read from
the manager. The volunteer listens on its own node's address only, which is
where `list_volunteers` says it is (127.0.0.1 on a one-machine loopback
swarm, the LAN address on real machines). A node that joined after the last
`farm up` is not in the map: its volunteers listen on all addresses until
`farm up` on the manager runs again, which refreshes the map (and the
allowed networks) and restarts the volunteers.

A volunteer whose compiler identity (iglubuild.distcc) differs from the
local compiler's is left out of a build.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iglubuild.atomic import write_atomic
from iglubuild.distcc import (
    FarmHosts,
    Volunteer,
    local_identity,
    read_stats,
    volunteer_identity,
)
from iglubuild.docker_engine import LABEL_TOOLCHAIN, EngineError, docker_client
from iglubuild.errors import UsageError
from iglubuild.run import CommandError
from iglubuild.settings import Settings

if TYPE_CHECKING:
    import docker

log = logging.getLogger("iglubuild.farm")

SERVICE_NAME = "iglubuild-distcc"
LABEL_FARM = "org.iglunix.farm"
LABEL_BASE_PORT = "org.iglunix.farm.base-port"
LABEL_SLOTS = "org.iglunix.farm.slots"
DEFAULT_BASE_PORT = 3632
DEFAULT_SWARM_PORT = 2377
STATE_FILE = "farm-state.json"

# The volunteer's start script, run by `sh` in the toolchain image. The port
# comes from the task slot (a service template), so replicas on one machine
# do not collide. distccd drops root to its own user by itself.
# The listen address is LISTEN if `--listen` gave one, else this node's
# address from NODE_ADDRS ("id=addr ...", see the module docstring).
VOLUNTEER_SCRIPT = r"""
set -eu
port=$((BASE_PORT + 2 * (SLOT - 1)))
listen=${LISTEN:-}
if [ -z "$listen" ]; then
    for pair in $NODE_ADDRS; do
        if [ "${pair%%=*}" = "$NODE" ]; then listen=${pair#*=}; fi
    done
fi
if [ -z "$listen" ]; then
    echo "iglubuild volunteer: node $NODE joined after the last farm up: listening on" \
        "all addresses (run farm up on the manager again)"
    listen=0.0.0.0
fi
set -- distccd --daemon --no-detach --log-stderr --log-level info \
    --listen "$listen" --port "$port" --stats --stats-port "$((port + 1))" --jobs "$JOBS"
for net in $ALLOW; do set -- "$@" --allow "$net"; done
echo "iglubuild volunteer: slot $SLOT on node $NODE listening on $listen:$port" \
    "(stats $((port + 1)))"
if [ -n "$CPUSET" ]; then exec taskset -c "$CPUSET" "$@"; fi
exec "$@"
"""


class FarmError(EngineError):
    """The farm could not be set up, queried or taken down."""


# --------------------------------------------------------------------------- docker


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
    write_atomic(path, json.dumps(state, indent=2) + "\n")


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
    manager_host = cfg.join.rsplit(":", 1)[0].strip("[]")
    if _is_loopback(cfg.advertise_addr) and not _is_loopback(manager_host):
        # The manager would record this node at 127.0.0.1 and send its builds'
        # compiles to its own loopback instead of this machine.
        raise UsageError(f"joining the manager at {cfg.join} while advertising "
                         f"{cfg.advertise_addr}: the manager could not reach this machine",
                         hint="add --advertise-addr ADDR, this machine's address on the "
                              "manager's network")
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


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def join_command(client: docker.DockerClient) -> str:
    """The command other machines run to join this manager's swarm as workers."""
    client.swarm.reload()
    token = client.swarm.attrs.get("JoinTokens", {}).get("Worker", "")
    addr = _swarm_state(client).get("RemoteManagers", [{}])[0].get("Addr", "")
    command = f"iglubuild farm up --join {addr} --token {token}"
    if not _is_loopback(addr.rsplit(":", 1)[0].strip("[]")):
        command += " --advertise-addr THIS_MACHINES_ADDR"
    return command


def _node_addresses(client: docker.DockerClient) -> dict[str, str]:
    """Node id -> the address its volunteers are reached at, for every node."""
    return {node.id: _node_address(node.attrs) for node in client.nodes.list()}


def _allowed_networks(addresses: Iterable[str], extra: Sequence[str]) -> list[str]:
    """Who may send compiles: the swarm's nodes and the networks named by --allow."""
    nets = ["127.0.0.1/32"]
    for addr in addresses:
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
    slots = cfg.slots or (os.cpu_count() or 1)
    nodes = _node_addresses(client)
    env = [
        "SLOT={{.Task.Slot}}",
        "NODE={{.Node.ID}}",
        f"NODE_ADDRS={' '.join(f'{n}={a}' for n, a in sorted(nodes.items()))}",
        f"BASE_PORT={cfg.base_port}",
        f"LISTEN={cfg.listen or ''}",
        f"ALLOW={' '.join(_allowed_networks(nodes.values(), cfg.allow))}",
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
        hostname = node.get("Description", {}).get("Hostname", task.get("NodeID", "?"))
        v = Volunteer(
            task_id=task["ID"],
            slot=slot,
            node=hostname,
            address=_node_address(node) if node else "?",
            port=base + 2 * (slot - 1),
            state=status.get("State", "?"),
            container_id=status.get("ContainerStatus", {}).get("ContainerID", ""),
            slots=slots,
        )
        # The manager keeps a lost node's tasks "running" until it gives up
        # on the node's heartbeat; then the node is "down" (and its tasks are
        # replaced elsewhere). Say so rather than repeat the stale task state.
        node_state = node.get("Status", {}).get("State", "unknown")
        if node_state != "ready":
            v.state = "down"
            v.problem = f"node {hostname} is {node_state}"
        out.append(v)
    return sorted(out, key=lambda v: (v.slot, v.task_id))


def list_nodes(client: docker.DockerClient) -> list[dict[str, str]]:
    """The swarm's nodes as the manager sees them: hostname, address, role, state."""
    out = []
    for node in client.nodes.list():
        attrs = node.attrs
        out.append({
            "id": node.id,
            "hostname": attrs.get("Description", {}).get("Hostname", "?"),
            "address": _node_address(attrs),
            "role": attrs.get("Spec", {}).get("Role", "?"),
            "state": attrs.get("Status", {}).get("State", "unknown"),
            "availability": attrs.get("Spec", {}).get("Availability", "?"),
        })
    return sorted(out, key=lambda n: (n["role"] != "manager", n["hostname"], n["id"]))


def inspect_volunteer(v: Volunteer, compiler: str = "clang") -> Volunteer:
    """Fill in identity, compiler name and jobs served (or `problem`).

    A volunteer the swarm calls running whose stats port does not answer is
    "down": its node may be gone before the manager has noticed (that takes
    the manager's heartbeat timeout), and a build cannot use it either way.
    """
    if v.state != "running":
        return v
    try:
        stats = read_stats(v.address, v.stats_port)
        v.jobs_served = int(stats.get("dcc_compile_ok", "0"))
    except (OSError, ValueError) as exc:
        v.state = "down"
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
        "nodes": list_nodes(client) if service is not None else [],
        "volunteers": [asdict(v) for v in volunteers],
    }


# --------------------------------------------------------------------------- down


def farm_down(settings: Settings, wait: float = 60.0) -> dict[str, bool]:
    """Remove the service; leave the swarm only if `farm up` created or joined it.

    On a manager the service goes first, then the swarm. A worker leaves
    first: its volunteers belong to a service only a manager can remove
    (and one that may be gone or unreachable, as when the manager's `farm
    down` already ran), and leaving is what makes the engine stop them.
    Either way, "down" means this engine runs none of the volunteers'
    containers any more.
    """
    import docker.errors

    client = docker_client()
    state = _read_state(settings)
    service = _find_service(client)
    removed = False
    if service is not None:
        service.remove()
        removed = True
    left = False

    def leave_if_ours() -> None:
        nonlocal left
        swarm = _swarm_state(client)
        current = swarm.get("Cluster", {}).get("ID", "")
        created = state.get("created_swarm") and state.get("swarm_id") in ("", current)
        if swarm.get("LocalNodeState") == "active" and (created or state.get("joined_swarm")):
            client.swarm.leave(force=True)
            left = True

    if state.get("joined_swarm"):
        leave_if_ours()
    # Service removal is asynchronous: wait until this node runs none of its
    # containers, so "down" means down. Stopped ones the swarm keeps as task
    # history (or left behind by an earlier, force-left swarm, or a killed
    # engine) are removed.
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
    if not left:
        leave_if_ours()
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
    except EngineError as exc:
        log.warning("no distcc farm: %s; building locally", exc.message)
        return None
    try:
        if _swarm_state(client).get("LocalNodeState") != "active":
            log.warning("no distcc farm: this Docker engine is not in a swarm; building locally")
            return None
        listed = list_volunteers(client)
    except docker.errors.APIError as exc:
        log.warning("no distcc farm: %s; building locally", exc)
        return None
    running = [v for v in listed if v.state == "running"]
    excluded = [v for v in listed if v.state == "down"]
    for v in excluded:
        log.warning("volunteer %s:%d left out: %s", v.address, v.port, v.problem)
    if not running:
        log.warning("no distcc farm: service %s has no running volunteers "
                    "(`iglubuild farm up`); building locally", SERVICE_NAME)
        return None
    local_id, _ = local_identity(compiler)
    usable = []
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


