"""Farm code paths that need no Docker engine: bad input, no engine, env for builds."""

from __future__ import annotations

from iglubuild import distcc, farm
from iglubuild.cli import main


def test_no_engine_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    code = main(["--build-dir", str(tmp_path), "farm", "status"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: cannot reach the Docker engine")
    assert "Traceback" not in err


def test_discover_without_engine_is_none(tmp_path, monkeypatch, caplog):
    from iglubuild.settings import Settings

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    assert farm.discover(Settings(build_dir=tmp_path)) is None
    assert "building locally" in caplog.text


def test_bad_allow_network_is_usage_error(capsys):
    assert main(["farm", "up", "--replicas", "1", "--allow", "10.0.0.300/8"]) == 2
    assert "not an address or CIDR" in capsys.readouterr().err


def test_farm_without_action_is_usage_error(capsys):
    assert main(["farm"]) == 2
    assert "hint: iglubuild farm up|status|down" in capsys.readouterr().err


def test_build_env_names_every_volunteer():
    vols = [distcc.Volunteer("t1", 1, "n1", "10.0.0.1", 3632, "running", slots=4),
            distcc.Volunteer("t2", 2, "n2", "10.0.0.2", 3634, "running", slots=2)]
    hosts = distcc.FarmHosts(volunteers=vols, jobs=7, local_identity="x")
    env = distcc.build_env(hosts, cc="clang --target=x86_64-linux-musl")
    assert env["DISTCC_HOSTS"] == "10.0.0.1:3632/4 10.0.0.2:3634/2"
    assert env["CC"] == "distcc clang --target=x86_64-linux-musl"
    assert env["MAKEFLAGS"] == "-j7"


def test_node_address_falls_back_to_manager_address():
    node = {"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "192.168.1.5:2377"}}
    assert farm._node_address(node) == "192.168.1.5"
    assert farm._node_address({"Status": {"Addr": "10.1.2.3"}}) == "10.1.2.3"


def test_local_identity_is_stable_and_names_clang():
    a = distcc.local_identity()
    assert a == distcc.local_identity()
    assert a[1] and "clang version" in a[1]
    assert len(a[0]) == 16


def test_image_from_missing_tarball_is_a_usage_error(tmp_path, capsys):
    import argparse

    from iglubuild.commands.toolchain import add_image_arguments, image_action
    from iglubuild.errors import UsageError
    from iglubuild.settings import Settings

    parser = argparse.ArgumentParser()
    add_image_arguments(parser)
    args = parser.parse_args(["--from", str(tmp_path / "nope.tar")])
    try:
        image_action(Settings(build_dir=tmp_path), args)
    except UsageError as exc:
        assert "no such build root tarball" in exc.message
        assert exc.hint and "toolchain export" in exc.hint
    else:
        raise AssertionError("no error")


def test_build_env_can_keep_local_slots(tmp_path):
    vols = [distcc.Volunteer("t1", 1, "n1", "10.0.0.1", 3632, "running", slots=2)]
    hosts = distcc.FarmHosts(volunteers=vols, jobs=3, local_identity="x")
    env = distcc.build_env(hosts, distcc_dir=tmp_path / "d" / "distcc", local_slots=1)
    assert env["DISTCC_HOSTS"] == "10.0.0.1:3632/2 localhost/1"
    assert env["JOBS"] == "4"
    assert (tmp_path / "d" / "distcc").is_dir()


def test_join_without_token_is_usage_error(capsys):
    code = main(["farm", "up", "--join", "127.0.0.1:2377"])
    assert code == 2
    assert "join token" in capsys.readouterr().err


def test_phase_additions_for_the_build_engine(tmp_path):
    vols = [distcc.Volunteer("t1", 1, "n1", "10.0.0.1", 3632, "running", slots=2)]
    hosts = distcc.FarmHosts(volunteers=vols, jobs=3, local_identity="x")
    launcher, env = distcc.phase_additions(hosts, distcc_dir=tmp_path / "distcc")
    assert launcher == ("distcc",)
    assert env["DISTCC_HOSTS"] == "10.0.0.1:3632/2"
    assert env["DISTCC_DIR"] == str(tmp_path / "distcc")
    # The engine's wrappers own CC/CXX and its jobserver owns MAKEFLAGS.
    assert not {"CC", "CXX", "MAKEFLAGS", "JOBS"} & set(env)


# ------------------------------------------------- compile tally: real distcc, local distccd

import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

needs_distccd = pytest.mark.skipif(
    shutil.which("distccd") is None or shutil.which("distcc") is None
    or shutil.which("clang") is None, reason="needs distcc, distccd and clang")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def distccd(tmp_path):
    """A real distccd on 127.0.0.1 (no Docker: a volunteer without its container),
    stopped through its own process group at the end."""
    port = _free_port()
    log = (tmp_path / "distccd.log").open("wb")
    proc = subprocess.Popen(
        ["distccd", "--daemon", "--no-detach", "--log-stderr", "--listen", "127.0.0.1",
         "--port", str(port), "--allow", "127.0.0.1", "--jobs", "2"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 20
    while not farm._reachable("127.0.0.1", port):
        assert proc.poll() is None, (tmp_path / "distccd.log").read_text()
        assert time.monotonic() < deadline, "distccd did not listen"
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def _distcc(tmp_path: Path, hosts: str, *args: str, check: bool = True) -> None:
    (tmp_path / "dd").mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DISTCC_HOSTS": hosts,
           "DISTCC_DIR": str(tmp_path / "dd"), "DISTCC_LOG": str(tmp_path / "distcc.log")}
    proc = subprocess.run(["distcc", "clang", "-target", "x86_64-linux-musl", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (proc.returncode == 0) == check, proc.stderr


@needs_distccd
def test_tally_counts_remote_and_local_compiles_from_distccs_log(distccd, tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.c").write_text(f"int {name}(void) {{ return 1; }}\n")
    (tmp_path / "main.c").write_text("int a(void);\nint main(void) { return a(); }\n")
    (tmp_path / "bad.c").write_text("int broken(void) { return nope; }\n")
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there: distcc falls back
    _distcc(tmp_path, distccd, "-O2", "-c", "a.c", "-o", "a.o")
    _distcc(tmp_path, distccd, "-O2", "-c", "b.c", "-o", "b.o")
    _distcc(tmp_path, distccd, "-O2", "-c", "main.c", "-o", "main.o")
    _distcc(tmp_path, dead, "-O2", "-c", "c.c", "-o", "c.o")
    _distcc(tmp_path, distccd, "-O2", "-c", "bad.c", "-o", "bad.o", check=False)
    # Preprocessing is no compile (nor is a link); compiling its output is.
    _distcc(tmp_path, distccd, "-E", "a.c", "-o", "a.i")
    _distcc(tmp_path, distccd, "-c", "-o", "/dev/null", "-x", "c", "a.i")
    tally = distcc.tally_compiles(tmp_path / "distcc.log")
    assert (tally.remote, tally.local) == (4, 2), (tmp_path / "distcc.log").read_text()
    assert tally.hosts == {distccd: 4}
    # The dead volunteer is worth a warning; code that does not compile is not
    # the farm's problem (configure probes fail all the time).
    assert any("failed to distribute c.c" in w for w in tally.warnings), tally.warnings
    assert not any("bad.c" in w for w in tally.warnings), tally.warnings
    assert tally.describe() == "farm: 4 of 6 compiles remote on 1 volunteer, 2 local"
    both = tally + distcc.CompileTally(remote=3, local=1, hosts={distccd: 1, "10.0.0.2:3632": 2})
    assert both.describe() == "farm: 7 of 10 compiles remote on 2 volunteers, 3 local"
    assert distcc.tally_compiles(tmp_path / "no-such.log") == distcc.CompileTally()


@needs_distccd
def test_build_stage_counts_a_packages_compiles(distccd, tmp_path):
    """build_package with the farm's launcher and DISTCC_HOSTS, through the farm's
    network as `--farm` runs it: distcc logs into the work folder and the package
    log and the CompileRecorder step get the tally, naming the volunteer."""
    from iglubuild.build import POST_BUILD_STEPS, BuildJob, build_package, work_paths
    from iglubuild.executors.host import HostExecutor
    from iglubuild.farmnet import farm_network
    from iglubuild.recipe import load_tree
    from iglubuild.settings import Settings
    from tests.engine_support import write_recipe

    recipes = tmp_path / "recipes"
    body = """
        name: {name}
        version: "1"
        {options}
        build: |
          for i in 1 2 3; do printf "int f$i(void) {{ return $i; }}\\n" > f$i.c; done
          for i in 1 2 3; do $CC -c f$i.c -o f$i.o; done
          $CC -E f1.c -o f1.i
          env | grep ^DISTCC_ > distcc.env || true
        package: |
          # Beside $pkgdir: DISTCC_LOG names the work folder, which a package may not.
          cp distcc.env "$pkgdir/../"
        """
    write_recipe(recipes, "farmed", body.format(name="farmed", options=""))
    write_recipe(recipes, "nodist", body.format(name="nodist", options="options: [no-distcc]"))
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build", jobs=1)
    addr, port = distccd.split(":")
    volunteer = distcc.Volunteer("t1", 1, "n1", addr, int(port), "running", slots=2)
    hosts = distcc.FarmHosts([volunteer], jobs=3, local_identity="x")
    launcher, extra = distcc.phase_additions(hosts, distcc_dir=tmp_path / "distcc")
    tree = load_tree(recipes)
    executor = HostExecutor()
    with farm_network(executor, hosts.volunteers) as net:
        if net is not None:  # as root: the phases reach distccd through a relay
            extra["DISTCC_HOSTS"] = net.distcc_hosts
        recorder = distcc.CompileRecorder(net.aliases if net is not None else None)
        for name in ("farmed", "nodist"):
            build_package(BuildJob(tree.recipes[name], settings, executor, [], "sig",
                                   launcher=launcher, extra_env=extra, keep_work=True,
                                   steps=(*POST_BUILD_STEPS, recorder),
                                   netns=net.namespace if net is not None else None))
    seen = recorder.tallies()
    assert set(seen) == {"farmed"}  # the no-distcc recipe has no DISTCC_HOSTS: no record
    assert recorder.summary_lines() == [
        "farm: 3 of 3 compiles remote on 1 volunteer, 0 local", f"  {distccd}: 3 compiles",
        f"  {distcc.NOT_DISTRIBUTABLE}: 1 run of distcc"]  # the -E
    farmed = seen["farmed"]
    assert (farmed.remote, farmed.local) == (3, 0)
    assert farmed.hosts == {distccd: 3}
    paths = work_paths(settings, "farmed")
    env_seen = (paths.work / "distcc.env").read_text()
    assert f"DISTCC_LOG={paths.compile_log}" in env_seen
    assert paths.compile_log.is_file()
    assert f"farm: 3 of 3 compiles remote on 1 volunteer, 0 local ({distccd} 3)" \
        in paths.log.read_text()
    # no-distcc: no launcher, and none of the farm's variables (nor its network).
    assert "nodist" not in seen
    assert (work_paths(settings, "nodist").work / "distcc.env").read_text() == ""


def test_farm_flag_without_farm_builds_locally(tmp_path, monkeypatch, cli):
    """`--farm pkg` with no Docker engine at all: said once, then a plain local build
    (no DISTCC_ variables in the phases, no farm line in the summary)."""
    from tests.engine_support import write_recipe

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
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
    write_recipe(recipes, "hello", """
        name: hello
        version: "1"
        package: |
          mkdir -p "$pkgdir/share"
          env | grep ^DISTCC_ > "$pkgdir/share/distcc.env" || true
          test -n "$TRIPLE"
        """)
    build = tmp_path / "build"
    result = cli("--recipes", str(recipes), "--build-dir", str(build), "--farm",
                 "pkg", "hello")
    assert result.code == 0, result.err
    assert "no distcc farm is running: building locally" in result.err
    assert "Traceback" not in result.err
    assert "built 2, up to date 0, failed 0" in result.err
    assert "farm:" not in result.err
    from iglubuild.package import install_artifact

    root = tmp_path / "root"
    (artifact,) = (build / "packages" / "x86_64").glob("hello-1-r1.*.tar.zst")
    install_artifact(artifact, root)
    assert (root / "share/distcc.env").read_text() == ""


@needs_distccd
def test_failed_farm_build_keeps_distccs_warnings_in_its_log(tmp_path):
    """A volunteer nobody answers at: the compile runs here, the build then fails,
    and the package log says both."""
    from iglubuild.build import POST_BUILD_STEPS, BuildJob, PhaseFailed, build_package
    from iglubuild.executors.host import HostExecutor
    from iglubuild.recipe import load_tree
    from iglubuild.settings import Settings
    from tests.engine_support import write_recipe

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
    dead = distcc.Volunteer("t1", 1, "n1", "127.0.0.1", _free_port(), "running", slots=1)
    launcher, extra = distcc.phase_additions(
        distcc.FarmHosts([dead], jobs=2, local_identity="x"), distcc_dir=tmp_path / "distcc")
    recorder = distcc.CompileRecorder()
    with pytest.raises(PhaseFailed) as failed:
        build_package(BuildJob(load_tree(recipes).recipes["doomed"], settings, HostExecutor(),
                               [], "sig", launcher=launcher, extra_env=extra,
                               steps=(*POST_BUILD_STEPS, recorder)))
    assert failed.value.phase == "build"
    seen = recorder.tallies()
    assert (seen["doomed"].remote, seen["doomed"].local) == (0, 1)
    log = failed.value.log.read_text()
    assert "distcc: Warning: failed to distribute f.c to 127.0.0.1:" in log
    assert "farm: 0 of 1 compiles remote on 0 volunteers, 1 local" in log
