"""The distcc farm against a real Docker engine and real distccd volunteers.

The session starts its own dockerd (private socket, data root and exec root,
no iptables, no bridge), imports a real debootstrap build root as the
toolchain image, and runs a single-node swarm advertised on 127.0.0.1 whose
volunteers use host networking. Builds are real: clang compiling a
multi-file C program through distcc.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iglubuild import distcc, farm
from iglubuild.cli import main
from iglubuild.docker_engine import IMAGE_REPOSITORY, LABEL_TOOLCHAIN
from iglubuild.elf import read_elf
from iglubuild.package import install_artifact
from iglubuild.settings import Settings
from tests.conftest import DISTFILES, REPO_ROOT

sys.path.insert(0, str(Path(__file__).parent))
from farm_support import (  # noqa: E402
    DOCKER_DIR,
    start_dockerd,
    write_farm_recipes,
    write_program,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NEEDED = ("dockerd", "distcc", "distccd", "clang", "make", "debootstrap")


def _missing_tools() -> list[str]:
    return [t for t in NEEDED if shutil.which(t) is None]


if _missing_tools() or os.geteuid() != 0:
    pytestmark.append(pytest.mark.skip(
        reason=f"needs root and {', '.join(NEEDED)} (missing: {', '.join(_missing_tools())})"))


def _free_port_block(count: int) -> int:
    """A base port with `count` consecutive free ports on 127.0.0.1."""
    for base in range(21000, 60000, 97):
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


# --------------------------------------------------------------------------- fixtures
# docker_engine, root_tarball and toolchain_image are session fixtures in
# tests/conftest.py, shared with the docker executor's tests.


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(build_dir=tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def farm_cfg() -> farm.FarmConfig:
    # Three volunteers' compile and stats ports, then the swarm's own port.
    base = _free_port_block(7)
    return farm.FarmConfig(replicas=2, base_port=base, swarm_port=base + 6, slots=2)


@pytest.fixture(scope="module")
def running_farm(docker_engine, toolchain_image, settings, farm_cfg):
    volunteers = farm.farm_up(settings, farm_cfg)
    yield volunteers
    farm.farm_down(settings)


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    return write_program(tmp_path_factory.mktemp("prog") / "src", nfiles=10, weight=30)


def _make(src: Path, dest: Path, env_extra: dict[str, str], jobs: int) -> subprocess.Popen:
    shutil.copytree(src, dest)
    env = {"PATH": os.environ["PATH"], "HOME": str(dest), "LANG": "C.UTF-8", **env_extra}
    env.setdefault("DISTCC_DIR", str(dest / ".distcc"))
    Path(env["DISTCC_DIR"]).mkdir(exist_ok=True)
    cc = env_extra.get("CC", "clang")
    return subprocess.Popen(["make", f"-j{jobs}", f"CC={cc}"], cwd=dest, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


def _compiles(volunteers) -> dict[int, int]:
    return {v.slot: int(distcc.read_stats(v.address, v.stats_port)["dcc_compile_ok"])
            for v in volunteers}


@pytest.fixture(scope="module")
def local_build(program, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("local") / "prog"
    _finish(_make(program, dest, {}, jobs=2))
    return dest


# --------------------------------------------------------------------------- tests


def test_image_is_the_build_root_with_its_clang(toolchain_image, docker_engine):
    import docker

    local_clang = subprocess.run(["clang", "--version"], capture_output=True, text=True,
                                 check=True).stdout.splitlines()[0]
    assert toolchain_image.compiler == local_clang
    image = docker.from_env().images.get(toolchain_image.ref)
    assert image.labels[LABEL_TOOLCHAIN] == toolchain_image.toolchain_id
    assert toolchain_image.ref == f"{IMAGE_REPOSITORY}:{toolchain_image.toolchain_id}"


def test_image_action_saves_and_loads(toolchain_image, root_tarball, docker_engine, tmp_path,
                                      capsys):
    """`toolchain image --from T --save F`, then `--load F` on a "node" without the image."""
    import argparse

    import docker

    from iglubuild.commands.toolchain import add_image_arguments, image_action

    parser = argparse.ArgumentParser()
    add_image_arguments(parser)
    saved = tmp_path / "toolchain.tar"
    settings = Settings(build_dir=tmp_path)
    args = parser.parse_args(["--from", str(root_tarball), "--save", str(saved)])
    assert image_action(settings, args) == 0
    out = capsys.readouterr().out
    assert toolchain_image.ref in out and "Debian clang version" in out
    assert saved.stat().st_size > 100_000_000
    assert not list(tmp_path.glob(".*tmp*")), "a temporary file was left behind"

    client = docker.from_env()
    made = client.images.get(toolchain_image.ref)
    made.tag("iglubuild-toolchain", "roundtrip")
    client.images.remove(toolchain_image.ref)
    assert image_action(settings, parser.parse_args(["--load", str(saved)])) == 0
    assert f"loaded {toolchain_image.ref}" in capsys.readouterr().out
    assert client.images.get(toolchain_image.ref).id == made.id
    client.images.remove("iglubuild-toolchain:roundtrip")


def test_farm_up_gives_two_reachable_volunteers(running_farm, farm_cfg):
    assert len(running_farm) == 2
    ports = sorted(v.port for v in running_farm)
    assert ports == [farm_cfg.base_port, farm_cfg.base_port + 2]
    for v in running_farm:
        assert v.address == "127.0.0.1"
        stats = distcc.read_stats(v.address, v.stats_port)
        assert "dcc_compile_ok" in stats


def test_second_farm_up_rescales_instead_of_failing(running_farm, settings, farm_cfg):
    import docker

    before = {v.slot: v.task_id for v in running_farm}
    again = farm.farm_up(settings, farm_cfg)
    assert {v.slot: v.task_id for v in again} == before, "volunteers were restarted"
    three = farm.farm_up(settings, farm.FarmConfig(**{**farm_cfg.__dict__, "replicas": 3}))
    assert len(three) == 3
    assert {v.slot: v.task_id for v in three if v.slot in before} == before
    back = farm.farm_up(settings, farm_cfg)
    assert len(back) == 2
    service = docker.from_env().services.get(farm.SERVICE_NAME)
    assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2


def test_volunteers_only_accept_the_swarm_networks(running_farm):
    import docker

    service = docker.from_env().services.get(farm.SERVICE_NAME)
    env = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    allow = next(e for e in env if e.startswith("ALLOW=")).split("=", 1)[1].split()
    assert allow == ["127.0.0.1/32"]
    # No --listen: each volunteer listens on its node's address (NODE_ADDRS),
    # here the loopback address the swarm is advertised on.
    assert "LISTEN=" in env
    (node_addrs,) = [e for e in env if e.startswith("NODE_ADDRS=")]
    assert node_addrs.split("=", 1)[1].split("=")[1] == "127.0.0.1"
    for v in farm.list_volunteers(docker.from_env()):
        logs = docker.from_env().containers.get(v.container_id).logs()
        assert f"listening on 127.0.0.1:{v.port} ".encode() in logs, logs


def _hangs_up_on(source: str, port: int) -> bool:
    """Does distccd close a connection from `source` at once (refused client)?"""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(3)
        s.connect(("127.0.0.1", port))
        try:
            return s.recv(1) == b""
        except TimeoutError:
            return False  # still waiting for our request: the client was accepted
        except ConnectionResetError:
            return True


def test_volunteer_refuses_clients_outside_the_allowed_networks(running_farm):
    v = running_farm[0]
    assert _hangs_up_on("127.0.0.2", v.port)
    assert not _hangs_up_on("127.0.0.1", v.port)


def test_allow_everything_is_refused(capsys):
    code = main(["farm", "up", "--replicas", "1", "--allow", "0.0.0.0/0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "would accept every address" in err
    assert "Traceback" not in err


def test_farm_status_reports_each_volunteer(running_farm, settings, capsys):
    assert main(["farm", "status", "--build-dir", str(settings.build_dir)]) == 0
    text = capsys.readouterr().out
    assert text.count(" running ") == 2 and "MISMATCH" not in text
    for v in running_farm:
        assert f"{v.address}:{v.port}" in text
    code = main(["--build-dir", str(settings.build_dir), "farm", "status", "--json"])
    assert code == 0
    import json

    status = json.loads(capsys.readouterr().out)
    assert status["service"] == farm.SERVICE_NAME
    assert len(status["volunteers"]) == 2
    for v in status["volunteers"]:
        assert v["state"] == "running"
        assert v["identity"] == status["local_identity"]
        assert v["compiler"].startswith("Debian clang version")
        assert isinstance(v["jobs_served"], int)


def test_build_through_farm_matches_local_build(running_farm, settings, program,
                                                local_build, tmp_path):
    hosts = farm.discover(settings)
    assert hosts is not None
    assert len(hosts.volunteers) == 2
    before = _compiles(hosts.volunteers)
    # As the build engine does it: the launcher in front of an absolute
    # compiler path, DISTCC_HOSTS from the live farm.
    launcher, extra = distcc.phase_additions(hosts, distcc_dir=tmp_path / "distcc")
    assert extra["DISTCC_HOSTS"] == hosts.distcc_hosts
    clang = shutil.which("clang")
    env = {**extra, "CC": " ".join([*launcher, clang])}
    _finish(_make(program, tmp_path / "farm", env, hosts.jobs))
    after = _compiles(hosts.volunteers)

    objects = sorted(p.name for p in local_build.glob("*.o"))
    assert len(objects) == 11
    for name in objects:
        assert (tmp_path / "farm" / name).read_bytes() == (local_build / name).read_bytes(), name
    run_local = subprocess.run([local_build / "prog"], capture_output=True, check=True)
    run_farm = subprocess.run([tmp_path / "farm" / "prog"], capture_output=True, check=True)
    assert run_farm.stdout == run_local.stdout
    # Every compile arrived at a volunteer (none fell back to local).
    assert sum(after.values()) - sum(before.values()) == len(objects)


PROGRAM_FILES = 24  # modules; with main.c, 25 compiles for the farm


@pytest.fixture(scope="module")
def farm_recipes(tmp_path_factory) -> Path:
    """The shipped musl recipe and `farmprog`, a 25-file C program (farm_support)."""
    if not (DISTFILES / "musl-1.2.3.tar.gz").is_file():
        pytest.skip(f"shared distfiles not found at {DISTFILES}")
    return write_farm_recipes(tmp_path_factory.mktemp("farm-recipes"),
                              nfiles=PROGRAM_FILES, weight=6)


def _iglubuild(recipes: Path, build: Path, *args: str) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process (DOCKER_HOST names the test's engine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IGLUBUILD_")}
    return subprocess.run(
        [sys.executable, "-m", "iglubuild", "--recipes", str(recipes), "--build-dir",
         str(build), "--mirror", f"file://{DISTFILES}", "--jobs", "2", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)


FARM_LINE = re.compile(r"^farm: (\d+) of (\d+) compiles remote on (\d+) volunteers?, "
                       r"(\d+) local$", re.MULTILINE)


def test_cli_farm_pkg_compiles_on_the_volunteers_and_matches_a_local_build(
        running_farm, farm_recipes, tmp_path):
    """`iglubuild --farm pkg farmprog` end to end: the program's compiles go to the
    volunteers, it is linked here for musl, runs, and equals a local build.

    musl is built locally first (a plain `pkg farmprog`, which also gives the
    local artifact to compare with); through the farm it would cost ~110 s
    instead of ~35 s on this 2-core machine, with its ~1,360 compiles.
    """
    import docker

    build = tmp_path / "build"
    t0 = time.monotonic()
    alone = _iglubuild(farm_recipes, build, "pkg", "farmprog")
    local_seconds = time.monotonic() - t0
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "built 2, up to date 0, failed 0" in alone.stderr
    assert not FARM_LINE.search(alone.stderr)  # no farm, no farm line
    packages = build / "packages" / "x86_64"
    artifact = packages / "farmprog-1.0-r1.x86_64.tar.zst"
    local_bytes = artifact.read_bytes()

    volunteers = farm.wait_for_volunteers(docker.from_env(), 2, 60)
    before = _compiles(volunteers)
    t0 = time.monotonic()
    farmed = _iglubuild(farm_recipes, build, "--farm", "pkg", "farmprog", "--force", "farmprog")
    farm_seconds = time.monotonic() - t0
    assert farmed.returncode == 0, farmed.stderr[-3000:]
    after = _compiles(volunteers)
    assert "distcc farm: 2 volunteer(s), 5 compile jobs" in farmed.stderr
    assert "built 1, up to date 1, failed 0" in farmed.stderr

    # The summary says where the compiles ran, counted from distcc's own log...
    (line,) = FARM_LINE.findall(farmed.stderr)
    remote, total, used, local = map(int, line)
    print(f"local build (musl + farmprog) {local_seconds:.1f} s; farm build of farmprog "
          f"{farm_seconds:.1f} s: {remote} of {total} compiles remote, {local} local; "
          f"volunteers served {after} (before {before})")
    assert (remote, total, local) == (PROGRAM_FILES + 1, PROGRAM_FILES + 1, 0)
    assert used == 2
    # ...and the volunteers' own counters agree: every remote compile was
    # served by one of them, plus one identity probe each from `discover`.
    served = {slot: after[slot] - before[slot] for slot in after}
    assert sum(served.values()) == remote + len(volunteers)
    assert all(n > 1 for n in served.values()), served
    log = (build / "logs" / "farmprog.log").read_text()
    assert f"farm: {remote} of {total} compiles remote on 2 volunteers, 0 local (" in log

    # Objects compiled by the volunteers equal the local compiler's, so the
    # artifact is the local build's, byte for byte.
    assert artifact.read_bytes() == local_bytes

    # The program is linked for musl (an earlier bug linked it for glibc through
    # distcc) and runs, printing what the same source prints built natively.
    root = tmp_path / "root"
    for name in ("musl-1.2.3-r1", "farmprog-1.0-r1"):
        install_artifact(packages / f"{name}.x86_64.tar.zst", root)
    info = read_elf(root / "usr/bin/farmprog")
    assert info is not None and info.interpreter == "/lib/ld-musl-x86_64.so.1"
    assert info.glibc_reason is None
    ran = subprocess.run(["chroot", str(root), "/usr/bin/farmprog"], capture_output=True,
                         text=True, timeout=60, check=True)
    native = tmp_path / "native"
    _finish(_make(farm_recipes.parent / "farmprog-1.0", native, {}, jobs=2))
    expected = subprocess.run([native / "prog"], capture_output=True, text=True, check=True)
    assert ran.stdout == expected.stdout and ran.stdout.count("\n") == PROGRAM_FILES + 1


@pytest.mark.parametrize("executor", ["host", "chroot", "docker"])
def test_cli_farm_phase_reaches_the_volunteers_and_nothing_else(running_farm, toolchain_image,
                                                                executor, tmp_path):
    """`iglubuild --farm pkg` with each executor: the phase is in the farm's own
    network (iglubuild.farmnet), where 127.0.0.1:<volunteer port> is a relay to the
    volunteer and nothing else answers: not the volunteers' stats ports on the
    host's 127.0.0.1, not a server on 127.0.0.1, not one on the host's own address.
    The compiles are counted by the volunteers' own statistics."""
    import docker

    from tests.engine_support import write_recipe
    from tests.test_docker_executor import _project_build_dir, _untag
    from tests.test_farmnet import ProbeServer, _check_confined, _host_address, _reach_script

    build = tmp_path / "build"
    ident = None
    if executor != "host":
        given = os.environ.get("IGLUBUILD_TEST_BUILDROOT")
        if executor == "chroot" and not (given and (Path(given) / "bin" / "sh").exists()):
            pytest.skip("needs IGLUBUILD_TEST_BUILDROOT (a build root)")
        # The build root (chroot) and the toolchain image tagged with its id (docker).
        ident = _project_build_dir(build, toolchain_image)
    volunteers = farm.wait_for_volunteers(docker.from_env(), 2, 60)
    probes = [ProbeServer("127.0.0.1")]
    address = _host_address()
    if address is not None:  # the machine's own address; stopped below
        probes.append(ProbeServer(address))
    try:
        targets = [("127.0.0.1", v.port) for v in volunteers]
        targets += [("127.0.0.1", v.stats_port) for v in volunteers]
        targets += [(p.address, p.port) for p in probes]
        recipes = tmp_path / "recipes"
        # A stand-in C library (every recipe needs musl and musl-dev): shell only.
        write_recipe(recipes, "musl", """
            name: musl
            version: "1"
            package: |
              mkdir -p "$pkgdir/usr/lib" "$pkgdir/usr/include"
              touch "$pkgdir/usr/lib/libc.a" "$pkgdir/usr/include/stdio.h"
            subpackages:
              dev: [usr/include, usr/lib/libc.a]
            """)
        write_recipe(recipes, "reach", """
            name: reach
            version: "1"
            sources:
              - url: TARBALL_URL
            build: |
              $CC -O2 -c f1.c -o f1.o
              $CC -O2 -c f2.c -o f2.o
              sh reach.sh
            package: |
              install -D -m644 reach.txt "$pkgdir/share/reach.txt"
            """, {"f1.c": "int one(int x) { return x + 1; }\n",
                  "f2.c": "int two(int x) { return x + 2; }\n",
                  "reach.sh": _reach_script(targets)})
        before = _compiles(volunteers)
        result = _iglubuild(recipes, build, "--executor", executor, "--farm", "pkg", "reach")
        after = _compiles(volunteers)
        assert result.returncode == 0, result.stderr[-3000:]
        # Two compiles, plus the identity probe `discover` sends each volunteer.
        assert sum(after.values()) - sum(before.values()) == 2 + len(volunteers)
        (line,) = FARM_LINE.findall(result.stderr)
        assert (int(line[0]), int(line[1])) == (2, 2), result.stderr
        root = tmp_path / "root"
        (artifact,) = (build / "packages" / "x86_64").glob("reach-1-r1.*.tar.zst")
        install_artifact(artifact, root)
        reach_txt = root / "share/reach.txt"
        text = reach_txt.read_text()
        for v in volunteers:
            assert f"127.0.0.1 {v.stats_port} closed" in text, text
        for v in volunteers[1:]:
            assert f"127.0.0.1 {v.port} open" in text, text
        _check_confined(reach_txt, volunteers[0].port, probes)
        if executor == "docker":  # the holder of the farm's network went with the run
            assert docker.from_env().containers.list(
                all=True, filters={"label": "iglubuild.package=farm-network"}) == []
    finally:
        for p in probes:
            p.close()
        if ident is not None:
            _untag(ident, toolchain_image)


@pytest.fixture(scope="module")
def sandboxed_build(toolchain_image, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Recipes (the shipped musl and mksh) and one build dir for the chroot and
    docker executors: their toolchain ids agree, so musl is built once."""
    from tests.test_docker_executor import _project_build_dir, _untag

    base = tmp_path_factory.mktemp("sandboxed")
    recipes = base / "recipes"
    for name in ("musl", "mksh"):
        (shipped,) = (REPO_ROOT / "recipes").glob(f"*/{name}/recipe.yaml")
        shutil.copytree(shipped.parent, recipes / shipped.parent.parent.name / name)
    build = base / "build"
    ident = _project_build_dir(build, toolchain_image)
    yield recipes, build
    _untag(ident, toolchain_image)


@pytest.mark.parametrize("executor", ["chroot", "docker"])
def test_cli_farm_builds_real_packages_in_the_sandboxed_executors(running_farm, sandboxed_build,
                                                                  executor):
    """`--executor chroot|docker --farm`: the shipped musl, then mksh with its
    compiles on the volunteers (their own counters), the same bytes as mksh
    built without the farm by the same executor.

    musl is built without the farm (its ~1,360 compiles would cost minutes
    through two loopback volunteers on 2 cores); mksh's Build.sh compiles each
    source with $CC -c, which is what distcc sends out.
    """
    import docker

    given = os.environ.get("IGLUBUILD_TEST_BUILDROOT")
    if executor == "chroot" and not (given and (Path(given) / "bin" / "sh").exists()):
        pytest.skip("needs IGLUBUILD_TEST_BUILDROOT (a build root)")
    recipes, build = sandboxed_build
    alone = _iglubuild(recipes, build, "--executor", executor, "pkg", "mksh", "--force", "mksh")
    assert alone.returncode == 0, alone.stderr[-3000:]
    (artifact,) = (build / "packages" / "x86_64").glob("mksh-R59c-r1.*.tar.zst")
    local_bytes = artifact.read_bytes()

    volunteers = farm.wait_for_volunteers(docker.from_env(), 2, 60)
    before = _compiles(volunteers)
    farmed = _iglubuild(recipes, build, "--executor", executor, "--farm", "pkg", "mksh",
                        "--force", "mksh")
    after = _compiles(volunteers)
    assert farmed.returncode == 0, farmed.stderr[-3000:]
    assert "built 1, up to date 1, failed 0" in farmed.stderr
    (line,) = FARM_LINE.findall(farmed.stderr)
    remote, total, used, local = map(int, line)
    print(f"{executor}: mksh {remote} of {total} compiles remote on {used}, {local} local")
    # lksh and mksh: 16 sources each, compiled one by one.
    assert remote >= 20 and used == 2, farmed.stderr[-2000:]
    served = {slot: after[slot] - before[slot] for slot in after}
    assert sum(served.values()) == remote + len(volunteers), (served, line)
    assert artifact.read_bytes() == local_bytes


def test_killing_a_volunteer_mid_build_still_finishes(running_farm, settings, program,
                                                     local_build, tmp_path):
    import docker

    hosts = farm.discover(settings)
    assert hosts is not None
    victim = hosts.volunteers[0]
    before = _compiles(hosts.volunteers)
    proc = _make(program, tmp_path / "farm", distcc.build_env(hosts), hosts.jobs)
    deadline = time.monotonic() + 60
    while _compiles([victim])[victim.slot] == before[victim.slot]:
        assert proc.poll() is None, "build ended before the victim got a compile"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, "build ended before the kill"
    docker.from_env().containers.get(victim.container_id).kill()
    output = _finish(proc)
    assert "failed to distribute" in output or "running locally" in output.lower() \
        or "connect" in output.lower()
    run_local = subprocess.run([local_build / "prog"], capture_output=True, check=True)
    run_farm = subprocess.run([tmp_path / "farm" / "prog"], capture_output=True, check=True)
    assert run_farm.stdout == run_local.stdout
    # The swarm replaces the killed volunteer.
    assert len(farm.wait_for_volunteers(docker.from_env(), 2, 60)) == 2


def test_volunteer_with_other_compiler_is_excluded(running_farm, settings, caplog):
    import docker

    client = docker.from_env()
    volunteers = farm.wait_for_volunteers(client, 2, 60)
    odd = volunteers[1]
    # Give this volunteer a different compiler: a clang that always adds -O0,
    # as a node with an older or patched toolchain would differ.
    result = client.containers.get(odd.container_id).exec_run([
        "sh", "-c",
        "rm /usr/bin/clang && printf '#!/bin/sh\\nexec /usr/lib/llvm-14/bin/clang \"$@\" -O0\\n'"
        " > /usr/bin/clang && chmod 755 /usr/bin/clang",
    ])
    assert result.exit_code == 0, result.output
    with caplog.at_level(logging.WARNING, logger="iglubuild.farm"):
        hosts = farm.discover(settings)
    assert hosts is not None
    assert [v.slot for v in hosts.volunteers] == [volunteers[0].slot]
    assert [v.slot for v in hosts.excluded] == [odd.slot]
    assert f"{odd.address}:{odd.port}" not in hosts.distcc_hosts
    assert any("compiler identity" in r.getMessage() for r in caplog.records)
    # Put a clean volunteer back for the tests that follow.
    client.containers.get(odd.container_id).kill()
    farm.wait_for_volunteers(client, 2, 60)


def test_farm_down_leaves_nothing(running_farm, settings, capsys):
    import docker

    assert farm.state_path(settings).exists()
    code = main(["--build-dir", str(settings.build_dir), "farm", "down"])
    assert code == 0
    assert "left the swarm" in capsys.readouterr().out
    client = docker.from_env()
    # The swarm (and so every service) is gone, since farm up had created it.
    assert client.info()["Swarm"]["LocalNodeState"] == "inactive"
    assert client.containers.list(all=True, filters={"label": farm.LABEL_FARM}) == []
    assert client.containers.list(all=True) == []
    assert not farm.state_path(settings).exists()


def test_discover_without_farm_builds_locally(docker_engine, settings, caplog):
    with caplog.at_level(logging.WARNING, logger="iglubuild.farm"):
        assert farm.discover(settings) is None
    assert any("no distcc farm" in r.getMessage() for r in caplog.records)


def test_farm_down_keeps_a_swarm_it_did_not_create(docker_engine, toolchain_image,
                                                   tmp_path, farm_cfg):
    import docker

    client = docker.from_env()
    client.swarm.init(advertise_addr="127.0.0.1",
                      listen_addr=f"127.0.0.1:{farm_cfg.swarm_port}")
    try:
        s = Settings(build_dir=tmp_path)
        assert len(farm.farm_up(s, farm.FarmConfig(**{**farm_cfg.__dict__,
                                                      "replicas": 1}))) == 1
        assert farm.farm_down(s) == {"service_removed": True, "left_swarm": False}
        assert client.info()["Swarm"]["LocalNodeState"] == "active"
        assert client.services.list() == []
        assert client.containers.list(all=True) == []
    finally:
        client.swarm.leave(force=True)


def test_second_engine_joins_as_worker_and_leaves(docker_engine, toolchain_image, tmp_path,
                                                   farm_cfg, monkeypatch, capsys):
    """A second machine, simulated by a second dockerd advertised on 127.0.0.2."""
    import dataclasses

    import docker

    manager = docker.from_env()
    mgr = Settings(build_dir=tmp_path / "manager")
    assert main(["--build-dir", str(mgr.build_dir), "farm", "up", "--replicas", "0",
                 "--base-port", str(farm_cfg.base_port),
                 "--swarm-port", str(farm_cfg.swarm_port)]) == 0
    out = capsys.readouterr().out
    join_line = next(line for line in out.splitlines() if "--join" in line)
    words = join_line.split()
    addr, token = words[words.index("--join") + 1], words[words.index("--token") + 1]
    assert addr == f"127.0.0.1:{farm_cfg.swarm_port}"
    second = start_dockerd(DOCKER_DIR.with_name(DOCKER_DIR.name + "-2"))
    try:
        other = docker.DockerClient(base_url=second.host)
        if other.info()["Swarm"]["LocalNodeState"] != "inactive":
            other.swarm.leave(force=True)  # a fresh machine: no swarm from an earlier run
        monkeypatch.setenv("DOCKER_HOST", second.host)
        worker = Settings(build_dir=tmp_path / "worker")
        cfg = dataclasses.replace(farm_cfg, join=addr, token=token, advertise_addr="127.0.0.2")
        node_id = farm.farm_join(worker, cfg)
        assert farm.farm_join(worker, cfg) == node_id  # joining twice is harmless
        nodes = {n.id: n.attrs for n in manager.nodes.list()}
        assert nodes[node_id]["Spec"]["Role"] == "worker"
        assert nodes[node_id]["Status"]["State"] == "ready"
        assert len(nodes) == 2
        assert farm.farm_down(worker)["left_swarm"] is True
        assert docker.from_env().info()["Swarm"]["LocalNodeState"] == "inactive"
    finally:
        second.stop()
        monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
        farm.farm_down(mgr)
    assert manager.info()["Swarm"]["LocalNodeState"] == "inactive"

