"""The docker executor against a real Docker engine and the real toolchain image.

The session's private dockerd and the build root imported as the toolchain
image come from tests/conftest.py (shared with the farm tests). Phases are
real containers: a real TCP server on the host's 127.0.0.1 for the network
tests, real signals for terminate and Ctrl-C, and real clang compiling musl
and a C program through the build engine with `--executor docker`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from iglubuild import toolchain_root
from iglubuild.cli import main
from iglubuild.elf import read_elf
from iglubuild.executor import PhaseJob
from iglubuild.executors.docker import LABEL_EXECUTOR, LABEL_OWNER, DockerExecutor, image_ref
from iglubuild.run import base_env
from iglubuild.settings import Settings
from tests.conftest import DISTFILES, REPO_ROOT
from tests.engine_support import MUSL_TARBALL, musl_recipe_text, write_recipe
from tests.sandbox_support import (
    RecordingServer,
    check_escapes,
    check_make_shares_the_runs_jobserver,
    run_to_log,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


# --------------------------------------------------------------------------- helpers


def _containers(**labels: str) -> list:  # type: ignore[type-arg]
    import docker

    filters = [f"{LABEL_EXECUTOR}=docker", *(f"{k}={v}" for k, v in labels.items())]
    return docker.from_env().containers.list(all=True, filters={"label": filters})


@pytest.fixture
def executor(toolchain_image):  # type: ignore[no-untyped-def]
    ex = DockerExecutor(toolchain_image.ref, toolchain_image.toolchain_id)
    ex.check()
    yield ex
    ex.terminate()
    assert _containers(**{LABEL_OWNER: ex.owner}) == [], "a phase's container was left behind"


def _job(work: Path, script: str, **kw: object) -> PhaseJob:
    return PhaseJob(package="t", phase="build", script=script, cwd=work,
                    env=base_env({"MARK": "one two"}), writable=(work,),
                    **kw)  # type: ignore[arg-type]


class _TimedLog:
    """A binary log file that notes when each write arrived (to see streaming)."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by the caller
        self.writes: list[tuple[float, bytes]] = []

    def write(self, data: bytes) -> int:
        self.writes.append((time.monotonic(), bytes(data)))
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()






# --------------------------------------------------------------------------- phases


def test_escapes_are_refused(executor: DockerExecutor, tmp_path: Path) -> None:
    """The chroot executor's escape tests, in a container."""
    work = tmp_path / "work"
    work.mkdir()
    check_escapes(executor, work, tmp_path / "escaped", _job)


def test_exit_status_and_output_streamed_to_the_log(executor: DockerExecutor,
                                                    tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    log = _TimedLog(tmp_path / "phase.log")
    start = time.monotonic()
    try:
        rc = executor.run_phase(_job(work, "echo first; echo to-stderr >&2; sleep 2; "
                                           "echo last; exit 7; echo not reached"), log)
    finally:
        log.close()
    end = time.monotonic()
    assert rc == 7
    text = (tmp_path / "phase.log").read_text()
    assert text.splitlines() == ["first", "to-stderr", "last"]
    # "first" reached the log while the phase still slept, not at its end.
    first_seen = next(t for t, data in log.writes if b"first" in data)
    assert end - first_seen > 1.5, (first_seen - start, end - start)


def test_sh_e_stops_at_the_first_failure_and_127_for_missing(executor: DockerExecutor,
                                                            tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert run_to_log(executor, _job(work, "false; touch reached"), tmp_path)[0] == 1
    assert not (work / "reached").exists()
    rc, out = run_to_log(executor, _job(work, "no-such-program"), tmp_path)
    assert rc == 127 and "not found" in out


def test_environment_is_exactly_the_jobs_and_cwd_is_the_jobs(executor: DockerExecutor,
                                                           tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    job = PhaseJob("t", "build", "pwd > pwd.txt; cat /proc/$$/environ > ../env.bin",
                   work / "src", base_env({"MARK": "one two", "EMPTY": ""}), writable=(work,))
    rc, out = run_to_log(executor, job, tmp_path)
    assert rc == 0, out
    assert (work / "src" / "pwd.txt").read_text() == f"{work / 'src'}\n"
    raw = (work / "env.bin").read_bytes().split(b"\0")
    seen = dict(item.decode().split("=", 1) for item in raw if item)
    # Nothing Docker adds on its own (HOSTNAME, HOME, the image's PATH) is left.
    assert seen == job.env


def test_writable_folder_is_writable_and_readonly_is_not(executor: DockerExecutor,
                                                         tmp_path: Path) -> None:
    work = tmp_path / "work"
    sysroot = tmp_path / "sysroot"
    work.mkdir()
    (sysroot / "usr/lib").mkdir(parents=True)
    (sysroot / "usr/lib/libc.a").write_text("real\n")
    script = (f"echo built > out.txt; cat {sysroot}/usr/lib/libc.a; "
              f"echo evil > {sysroot}/usr/lib/libc.a")
    job = PhaseJob("t", "build", script, work, base_env(), writable=(work,),
                   readonly=(sysroot,))
    rc, out = run_to_log(executor, job, tmp_path)
    assert rc != 0
    assert "real\n" in out and "Read-only file system" in out
    assert (sysroot / "usr/lib/libc.a").read_text() == "real\n"
    st = (work / "out.txt").stat()
    assert (work / "out.txt").read_text() == "built\n"
    # The container runs as root, as the chroot executor does: root's files.
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_image_is_not_changed_by_a_phase(executor: DockerExecutor, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rc, _ = run_to_log(executor, _job(work, "rm -f /usr/bin/make; touch /etc/evil"), tmp_path)
    assert rc == 0
    rc, out = run_to_log(executor, _job(work, "test -x /usr/bin/make; test ! -e /etc/evil; "
                                        "printf '#!/bin/sh\\necho exec-tmp\\n' > /tmp/t.sh; "
                                        "chmod +x /tmp/t.sh; /tmp/t.sh"), tmp_path)
    assert rc == 0, out
    assert "exec-tmp" in out


def test_make_in_a_container_shares_the_runs_jobserver(executor: DockerExecutor,
                                                       tmp_path: Path) -> None:
    check_make_shares_the_runs_jobserver(executor, tmp_path)


def test_no_network_unless_the_job_asks(executor: DockerExecutor, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    server = RecordingServer()
    try:
        script = (f"cat /proc/net/dev; "
                  f"bash -c 'echo hello-server > /dev/tcp/127.0.0.1/{server.port}'")
        rc, out = run_to_log(executor, _job(work, script), tmp_path)
        assert rc != 0
        assert "Connection refused" in out or "unreachable" in out
        interfaces = [line.split(":")[0].strip() for line in out.splitlines()
                      if ":" in line and "|" not in line and "bash" not in line]
        assert interfaces == ["lo"]
        time.sleep(0.3)
        assert server.received == []
        # With the network on (compiles to the distcc farm) the same phase reaches it.
        rc, out = run_to_log(executor, _job(work, script, network=True), tmp_path)
        assert rc == 0, out
        deadline = time.monotonic() + 5
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.received == [b"hello-server\n"]
    finally:
        server.close()


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two free ports in a row")


def test_farm_compiles_from_a_container_reach_a_distccd_on_the_host(
        executor: DockerExecutor, tmp_path: Path) -> None:
    """A package built through the engine with the distcc launcher, as `--farm` does:
    the phase's container (in the farm's network: tests/test_farmnet.py) sends its
    compile through the relay to a real distccd on 127.0.0.1, with local fallback
    off, and distcc's state folder is writable."""
    from dataclasses import replace

    from iglubuild.build import BuildJob, build_package
    from iglubuild.distcc import Volunteer
    from iglubuild.farm import read_stats
    from iglubuild.farmnet import farm_network
    from iglubuild.recipe import load_tree
    from iglubuild.target import load_target

    if shutil.which("distccd") is None:
        pytest.skip("needs distccd on the host")
    port = _free_port_pair()
    distccd = subprocess.Popen(
        ["distccd", "--daemon", "--no-detach", "--listen", "127.0.0.1", "--port", str(port),
         "--allow", "127.0.0.1", "--stats", "--stats-port", str(port + 1), "--log-stderr"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port + 1), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and distccd.poll() is None
                time.sleep(0.1)
        recipes = tmp_path / "recipes"
        write_recipe(recipes, "remote", """
            name: remote
            version: "1"
            sources:
              - url: TARBALL_URL
            build: |
              $CC $CFLAGS -O2 -c f.c -o f.o
            package: |
              install -D -m644 f.o "$pkgdir/usr/lib/remote/f.o"
            """, {"f.c": "int triple(int x) { return 3 * x; }\n"})
        settings = Settings(recipes=recipes, build_dir=tmp_path / "build")
        distcc_dir = tmp_path / "distcc"
        distcc_dir.mkdir()
        farm_env = {"DISTCC_HOSTS": f"127.0.0.1:{port}/2", "DISTCC_DIR": str(distcc_dir),
                    "DISTCC_FALLBACK": "0"}
        lr = load_tree(recipes).recipes["remote"]
        # f.c needs no C library: leave musl out of the sysroot.
        target = replace(load_target(), implicit_build_deps=())
        volunteer = Volunteer("t1", 1, "node", "127.0.0.1", port, "running", slots=2)
        with farm_network(executor, [volunteer]) as net:
            assert net is not None
            artifacts = build_package(BuildJob(lr, settings, executor, [], "sig",
                                               target=target, launcher=("distcc",),
                                               extra_env=farm_env, netns=net.namespace))
        assert [a.name for a in artifacts] == ["remote-1-r1.x86_64.tar.zst"]
        assert int(read_stats("127.0.0.1", port + 1)["dcc_compile_ok"]) == 1
        assert (distcc_dir / "lock").is_dir()  # distcc's state, written from the container
    finally:
        distccd.terminate()
        distccd.wait(10)


def test_terminate_kills_a_running_phase_and_its_container(executor: DockerExecutor,
                                                           tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        run_to_log(executor, _job(work, "touch started; sleep 600 & sleep 600"), tmp_path)[0]))
    t.start()
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert time.monotonic() < deadline and t.is_alive()
        time.sleep(0.02)
    assert len(_containers(**{LABEL_OWNER: executor.owner})) == 1
    start = time.monotonic()
    executor.terminate()
    t.join(15)
    assert not t.is_alive() and time.monotonic() - start < 6
    assert result == [-signal.SIGTERM]
    assert _containers(**{LABEL_OWNER: executor.owner}) == []
    assert "sleep 600" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                             text=True).stdout
    # One executor serves a whole session: it still runs phases afterwards.
    assert run_to_log(executor, _job(work, "true"), tmp_path)[0] == 0


def test_a_phase_ignoring_sigterm_is_killed_after_the_grace(executor: DockerExecutor,
                                                            tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        run_to_log(executor, _job(work, "trap '' TERM; touch started; sleep 600"), tmp_path)[0]))
    t.start()
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert time.monotonic() < deadline and t.is_alive()
        time.sleep(0.02)
    start = time.monotonic()
    executor.terminate()
    t.join(15)
    took = time.monotonic() - start
    assert not t.is_alive() and 2.5 < took < 8, took
    assert result == [-signal.SIGKILL]
    assert _containers(**{LABEL_OWNER: executor.owner}) == []


def test_phases_carry_labels(executor: DockerExecutor, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    seen: list[dict[str, str]] = []
    t = threading.Thread(target=lambda: run_to_log(
        executor, PhaseJob("curl", "check", "touch started; sleep 600", work, base_env(),
                           writable=(work,)), tmp_path))
    t.start()
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    seen = [c.labels for c in _containers(**{LABEL_OWNER: executor.owner})]
    executor.terminate()
    t.join(15)
    assert seen == [{"iglubuild.executor": "docker", "iglubuild.package": "curl",
                     "iglubuild.phase": "check", "iglubuild.owner": executor.owner,
                     "org.iglunix.toolchain-id": executor.toolchain_id()}]


DRIVER = """
import sys
from pathlib import Path
from iglubuild.executors.docker import DockerExecutor
from iglubuild.executor import PhaseJob
from iglubuild.run import base_env
image, work = sys.argv[1:3]
ex = DockerExecutor(image, "t")
job = PhaseJob("t", "build", "touch started; sleep 600", Path(work), base_env(),
               writable=(Path(work),))
with open(Path(work) / "phase.log", "wb") as log:
    sys.exit(ex.run_phase(job, log))
"""


def test_containers_of_a_killed_iglubuild_are_removed_by_the_next(
        executor: DockerExecutor, toolchain_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, toolchain_image.ref, str(work)],
                            env=env)
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()  # kill -9: iglubuild cannot stop its container
    proc.wait()
    owner = f"{socket.gethostname()}:{proc.pid}"
    left = _containers(**{LABEL_OWNER: owner})
    assert len(left) == 1 and left[0].status == "running"
    DockerExecutor(toolchain_image.ref, "t").check()  # the next iglubuild
    assert _containers(**{LABEL_OWNER: owner}) == []


# --------------------------------------------------------------------------- the CLI


def _project_build_dir(build: Path, toolchain_image) -> str:  # type: ignore[no-untyped-def]
    """A build dir whose build root matches the project's manifest; returns its id.

    The real build root of IGLUBUILD_TEST_BUILDROOT when it has its record (made
    by `toolchain build`); otherwise a record naming the imported image's id,
    since all the docker executor takes from the build root is its id. The
    image is tagged with that id, as `iglubuild toolchain image` does.
    """
    import docker

    tdir = build / "toolchain"
    tdir.mkdir(parents=True, exist_ok=True)
    given = os.environ.get("IGLUBUILD_TEST_BUILDROOT")
    record = Path(given).with_name(Path(given).name + ".json") if given else None
    manifest = toolchain_root.load_manifest(REPO_ROOT / toolchain_root.MANIFEST)
    if given and record and record.is_file() and \
            json.loads(record.read_text())["manifest_digest"] == manifest.digest:
        ident = json.loads(record.read_text())["id"]
        (tdir / f"root-{ident}").symlink_to(Path(given).resolve())
        shutil.copy(record, tdir / f"root-{ident}.json")
    else:
        ident = toolchain_image.toolchain_id
        (tdir / f"root-{ident}").mkdir()
        (tdir / f"root-{ident}.json").write_text(json.dumps(
            {"id": ident, "manifest_digest": manifest.digest, "packages": {},
             "created": time.time()}))
    docker.from_env().images.get(toolchain_image.ref).tag("iglubuild-toolchain", ident)
    return ident


def _untag(ident: str, toolchain_image) -> None:  # type: ignore[no-untyped-def]
    import docker

    if image_ref(ident) != toolchain_image.ref:
        docker.from_env().images.remove(image_ref(ident))


def test_same_toolchain_id_as_the_chroot_executor(toolchain_image, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from iglubuild.executors import make_executor
    from iglubuild.executors.chroot import ChrootExecutor

    monkeypatch.chdir(REPO_ROOT)
    ident = _project_build_dir(tmp_path / "build", toolchain_image)
    try:
        settings = Settings(build_dir=tmp_path / "build", executor="docker",
                            project_root=REPO_ROOT)
        docker_ex = make_executor(settings)
        assert isinstance(docker_ex, DockerExecutor)
        docker_ex.check()
        assert docker_ex.toolchain_id() == ident
        assert docker_ex.image == f"iglubuild-toolchain:{ident}"
        assert ChrootExecutor.from_settings(settings).toolchain_id() == ident
    finally:
        _untag(ident, toolchain_image)


def test_machine_with_only_the_loaded_image_finds_it_by_manifest(
        toolchain_image, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """No build root here, but an image made from this manifest elsewhere (--load)."""
    import docker

    from iglubuild.farm import LABEL_TOOLCHAIN
    from iglubuild.toolchain_image import LABEL_MANIFEST

    monkeypatch.chdir(REPO_ROOT)
    settings = Settings(build_dir=tmp_path / "build", executor="docker", project_root=REPO_ROOT)
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "one", 'name: one\nversion: "1"\nbuild: "true"\n')
    # Neither a build root nor an image for this manifest: one line, exit 1.
    code = main(["--recipes", str(recipes), "--build-dir", str(settings.build_dir),
                 "--executor", "docker", "pkg", "one"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: no build root for ") and "no toolchain image made from it" in err
    assert "hint: run `iglubuild toolchain build` then `iglubuild toolchain image`" in err

    digest = toolchain_root.load_manifest(REPO_ROOT / toolchain_root.MANIFEST).digest
    client = docker.from_env()
    # What `toolchain image` labels an image made from the build root with:
    # its manifest's digest beside the toolchain id.
    box = client.containers.create(toolchain_image.ref, ["true"])
    try:
        box.commit("iglubuild-toolchain", "10ad000000000000",
                   changes=[f"LABEL {LABEL_MANIFEST}={digest}",
                            f"LABEL {LABEL_TOOLCHAIN}=10ad000000000000"])
    finally:
        box.remove()
    try:
        ex = DockerExecutor.from_settings(settings)
        assert (ex.image, ex.toolchain_id()) == ("iglubuild-toolchain:10ad000000000000",
                                                 "10ad000000000000")
        ex.check()
        work = tmp_path / "work"
        work.mkdir()
        assert run_to_log(ex, _job(work, "test -x /usr/bin/clang"), tmp_path)[0] == 0
    finally:
        client.images.remove("iglubuild-toolchain:10ad000000000000")


def test_toolchain_image_from_the_build_root_serves_a_machine_without_it(
        toolchain_image, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """`iglubuild toolchain image` tags the image with the build root's id and labels
    it with the manifest; `--executor docker` elsewhere finds it by that label."""
    import docker

    from iglubuild.toolchain_image import LABEL_MANIFEST

    given = os.environ.get("IGLUBUILD_TEST_BUILDROOT")
    record = Path(given).with_name(Path(given).name + ".json") if given else None
    if not (record and record.is_file()):
        pytest.skip("needs IGLUBUILD_TEST_BUILDROOT made by `iglubuild toolchain build`")
    monkeypatch.chdir(REPO_ROOT)
    build = tmp_path / "build"
    ident = _project_build_dir(build, toolchain_image)
    client = docker.from_env()
    client.images.remove(image_ref(ident))  # made below by the command itself
    try:
        assert main(["--build-dir", str(build), "toolchain", "image"]) == 0
        assert f"iglubuild-toolchain:{ident} (" in capsys.readouterr().out
        (build / "toolchain" / f"{ident}.tar").unlink()  # the export, 700 MB
        image = client.images.get(image_ref(ident))
        digest = toolchain_root.load_manifest(REPO_ROOT / toolchain_root.MANIFEST).digest
        assert image.labels[LABEL_MANIFEST] == digest
        other = Settings(build_dir=tmp_path / "elsewhere", project_root=REPO_ROOT)
        ex = DockerExecutor.from_settings(other)
        assert (ex.image, ex.toolchain_id()) == (image_ref(ident), ident)
    finally:
        _untag(ident, toolchain_image)


def test_missing_image_is_one_line_with_hint(docker_engine, tmp_path: Path, capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(REPO_ROOT)
    build = tmp_path / "build"
    (build / "toolchain" / "root-0000000000000000").mkdir(parents=True)
    manifest = toolchain_root.load_manifest(REPO_ROOT / toolchain_root.MANIFEST)
    (build / "toolchain" / "root-0000000000000000.json").write_text(json.dumps(
        {"id": "0000000000000000", "manifest_digest": manifest.digest, "packages": {},
         "created": 1.0}))
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "one", 'name: one\nversion: "1"\nbuild: "true"\n')
    code = main(["--recipes", str(recipes), "--build-dir", str(build), "--executor", "docker",
                 "pkg", "one"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "error: the docker executor needs the toolchain image "
        "iglubuild-toolchain:0000000000000000, which is not in the Docker engine",
        "hint: run `iglubuild toolchain image` (or `iglubuild toolchain image --load FILE` "
        "with an image saved elsewhere)",
    ]
    # No engine at all: one line too.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    code = main(["--recipes", str(recipes), "--build-dir", str(build), "--executor", "docker",
                 "pkg", "one"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: the docker executor cannot reach the Docker engine at "
                          f"unix://{tmp_path}/no-such.sock\nhint: start dockerd")


HELLO = """
    name: hello
    version: "1.0"
    license: MIT
    sources:
      - url: TARBALL_URL
    build: |
      $CC $CFLAGS -o hello hello.c $LDFLAGS
      $CC $CFLAGS -static -o hello-static hello.c $LDFLAGS
      cat /etc/iglubuild-toolchain.json > where.txt 2>/dev/null || echo host > where.txt
    package: |
      install -D -m755 hello "$pkgdir/usr/bin/hello"
      install -D -m755 hello-static "$pkgdir/usr/bin/hello-static"
      install -D -m644 where.txt "$pkgdir/usr/share/hello/where.txt"
    """
HELLO_FILES = {"hello.c": '#include <stdio.h>\nint main(void) { puts("hello from musl"); '
                          'return 0; }\n'}


@pytest.fixture(scope="module")
def cli_build(toolchain_image, tmp_path_factory: pytest.TempPathFactory
              ) -> Callable[..., subprocess.CompletedProcess]:  # type: ignore[no-untyped-def]
    """`iglubuild --executor docker ...` as a process, on a build dir with a build root.

    Module-scoped: the Ctrl-C test reuses the musl the engine test built.
    """
    if not MUSL_TARBALL.is_file():
        pytest.skip(f"{MUSL_TARBALL} not present")
    base = tmp_path_factory.mktemp("docker-cli")
    build = base / "build"
    ident = _project_build_dir(build, toolchain_image)
    recipes = base / "recipes"
    (recipes / "base" / "musl").mkdir(parents=True)
    (recipes / "base" / "musl" / "recipe.yaml").write_text(musl_recipe_text())

    def argv(*args: str) -> list[str]:
        return [sys.executable, "-m", "iglubuild", "--recipes", str(recipes), "--build-dir",
                str(build), "--distfiles", str(DISTFILES), "--executor", "docker", *args]

    def run(*args: str, **kw: object) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        return subprocess.run(argv(*args), capture_output=True, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, **kw)

    run.argv = argv  # type: ignore[attr-defined]
    run.recipes = recipes  # type: ignore[attr-defined]
    run.build = build  # type: ignore[attr-defined]
    yield run
    _untag(ident, toolchain_image)


def test_engine_builds_musl_and_a_c_program_in_containers(cli_build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from iglubuild.package import install_artifact

    write_recipe(cli_build.recipes, "hello", HELLO, HELLO_FILES)
    start = time.monotonic()
    proc = cli_build("pkg", "hello", timeout=1200)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"musl + hello with --executor docker: {elapsed:.1f} s")
    log = (cli_build.build / "logs" / "hello.log").read_text()
    assert "executor docker" in log
    packages = cli_build.build / "packages" / "x86_64"
    root = tmp_path / "root"
    for name in ("musl-1.2.3-r1.x86_64.tar.zst", "hello-1.0-r1.x86_64.tar.zst"):
        install_artifact(packages / name, root)
    info = read_elf(root / "usr/bin/hello")
    assert info is not None and info.interpreter == "/lib/ld-musl-x86_64.so.1"
    assert info.needed == ("libc.so",) or list(info.needed) == ["libc.so"]
    out = subprocess.run([root / "lib/ld-musl-x86_64.so.1", root / "usr/bin/hello"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "hello from musl\n"
    static = subprocess.run([root / "usr/bin/hello-static"], capture_output=True, text=True)
    assert static.stdout == "hello from musl\n"
    # It was compiled inside the toolchain image (the build root's record is there).
    where = (root / "usr/share/hello/where.txt").read_text()
    if "packages" in where:
        assert json.loads(where)["manifest_digest"]
    assert where != "host\n"
    assert _containers() == []
    # Up to date afterwards, with the docker executor's toolchain id in the signatures.
    again = cli_build("pkg", "hello", timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr


def test_ctrl_c_leaves_no_container_running(cli_build) -> None:  # type: ignore[no-untyped-def]
    # musl (every package's implicit dep) is up to date after the test above.
    write_recipe(cli_build.recipes, "slow", """
        name: slow
        version: "1"
        build: |
          sleep 600
        """)
    proc = subprocess.Popen(cli_build.argv("pkg", "slow"), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    deadline = time.monotonic() + 900
    while not [c for c in _containers(**{"iglubuild.package": "slow"}) if c.status == "running"]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _containers() == [], err
