"""Several nodes, without Docker: where a volunteer listens, and how a lost node shows.

The real thing is tests/test_farm_two_nodes.py (two Docker engines); these
check the same rules in milliseconds: the volunteer's start script run by a
real `sh` with a stand-in distccd that prints its arguments, and
`list_volunteers` / `list_nodes` against a stand-in of the swarm API.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from iglubuild import farm
from iglubuild.settings import Settings


def _run_script(tmp_path: Path, **env: str) -> str:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "distccd").write_text('#!/bin/sh\necho "distccd $*"\n')
    (fake / "distccd").chmod(0o755)
    base = {"SLOT": "2", "NODE": "n2", "NODE_ADDRS": "n1=10.1.0.1 n2=10.1.0.2",
            "BASE_PORT": "4000", "LISTEN": "", "ALLOW": "10.1.0.0/24", "JOBS": "3",
            "CPUSET": "", "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", farm.VOLUNTEER_SCRIPT], env={**base, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout


def test_volunteer_listens_on_its_own_nodes_address(tmp_path):
    out = _run_script(tmp_path)
    assert "--listen 10.1.0.2 --port 4002 --stats --stats-port 4003 --jobs 3" in out
    assert "--allow 10.1.0.0/24" in out
    assert "slot 2 on node n2 listening on 10.1.0.2:4002" in out


def test_volunteer_of_a_node_that_joined_later_listens_everywhere_and_says_so(tmp_path):
    out = _run_script(tmp_path, NODE="n3")
    assert "--listen 0.0.0.0 --port 4002" in out
    assert "run farm up on the manager again" in out


def test_listen_given_to_farm_up_wins(tmp_path):
    out = _run_script(tmp_path, LISTEN="192.0.2.9")
    assert "--listen 192.0.2.9 --port 4002" in out


def _node(node_id: str, host: str, addr: str, state: str, role: str = "worker") -> Any:
    attrs = {"ID": node_id, "Description": {"Hostname": host},
             "Status": {"State": state, "Addr": addr},
             "Spec": {"Role": role, "Availability": "active"}}
    if role == "manager":
        attrs["ManagerStatus"] = {"Addr": f"{addr}:2377"}
        attrs["Status"]["Addr"] = "0.0.0.0"
    return SimpleNamespace(id=node_id, attrs=attrs)


def _client(nodes: list[Any], tasks: list[dict[str, Any]]) -> Any:
    service = SimpleNamespace(
        name=farm.SERVICE_NAME,
        attrs={"Spec": {"Labels": {farm.LABEL_BASE_PORT: "4000", farm.LABEL_SLOTS: "2"}}},
        tasks=lambda filters: tasks)
    return SimpleNamespace(
        info=lambda: {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}},
        services=SimpleNamespace(list=lambda filters: [service]),
        nodes=SimpleNamespace(list=lambda: nodes))


def _task(task_id: str, slot: int, node_id: str) -> dict[str, Any]:
    return {"ID": task_id, "Slot": slot, "NodeID": node_id,
            "Status": {"State": "running", "ContainerStatus": {"ContainerID": "c" + task_id}}}


@pytest.fixture
def swarm() -> Any:
    nodes = [_node("m", "alpha", "10.1.0.1", "ready", "manager"),
             _node("w", "beta", "10.1.0.2", "down")]
    return _client(nodes, [_task("t2", 2, "w"), _task("t1", 1, "m")])


def test_volunteers_of_a_node_the_manager_calls_down_are_down(swarm):
    v1, v2 = farm.list_volunteers(swarm)
    assert (v1.slot, v1.node, v1.address, v1.port, v1.state, v1.problem) == (
        1, "alpha", "10.1.0.1", 4000, "running", None)
    assert (v2.slot, v2.node, v2.address, v2.port, v2.state) == (
        2, "beta", "10.1.0.2", 4002, "down")
    assert v2.problem == "node beta is down"
    # inspect_volunteer leaves a down volunteer alone (no probe of a dead node).
    assert farm.inspect_volunteer(v2) is v2 and v2.jobs_served is None


def test_nodes_are_listed_manager_first_with_their_address_and_state(swarm):
    assert [(n["hostname"], n["address"], n["role"], n["state"])
            for n in farm.list_nodes(swarm)] == [
        ("alpha", "10.1.0.1", "manager", "ready"), ("beta", "10.1.0.2", "worker", "down")]


def test_a_volunteer_that_does_not_answer_is_down(swarm, monkeypatch):
    def refused(address: str, port: int) -> dict[str, str]:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(farm, "read_stats", refused)
    v1 = farm.list_volunteers(swarm)[0]
    farm.inspect_volunteer(v1)
    assert v1.state == "down"
    assert v1.problem is not None and v1.problem.startswith("stats port 10.1.0.1:4001: ")


def test_the_build_says_why_volunteers_were_left_out():
    from iglubuild.commands._pkg_world import _left_out_reasons
    from iglubuild.distcc import FarmHosts, Volunteer

    def vol(slot: int, state: str, identity: str | None) -> Volunteer:
        return Volunteer(task_id=f"t{slot}", slot=slot, node="n", address="10.1.0.2",
                         port=4000 + 2 * slot, state=state, identity=identity, problem="x")

    hosts = FarmHosts(volunteers=[], jobs=1, local_identity="aaaa", excluded=[
        vol(1, "down", None), vol(2, "down", None), vol(3, "running", "bbbb"),
        vol(4, "running", None)])
    assert _left_out_reasons(hosts) == "2 down, 1 different compiler, 1 probe failed"


def test_joining_a_remote_manager_while_advertising_loopback_is_refused() -> None:
    """The manager would reach this node's volunteers at its own 127.0.0.1."""
    from iglubuild.errors import UsageError

    cfg = farm.FarmConfig(replicas=0, join="198.18.219.1:2377", token="SWMTKN-1-x")
    with pytest.raises(UsageError) as info:
        farm.farm_join(Settings(build_dir=Path("/nonexistent")), cfg)
    assert "could not reach this machine" in info.value.message
    assert info.value.hint is not None and "--advertise-addr" in info.value.hint
