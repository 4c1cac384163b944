"""The end-of-build tally of a --farm run, against a real distccd on 127.0.0.1.

No Docker: the volunteer is a plain distccd the test starts (and stops by its
process group); a "volunteer that refuses" is a port nothing listens on (or,
through the farm's relays as root, a relay whose upstream refuses: distcc then
sees a closed connection). The compiles are real clang compiles of C files;
the counts and reasons come from distcc's own client log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iglubuild import distcc, farm

needs_distccd = pytest.mark.skipif(
    shutil.which("distccd") is None or shutil.which("distcc") is None
    or shutil.which("clang") is None, reason="needs distcc, distccd and clang")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def distccd(tmp_path: Path) -> Iterator[str]:
    """A real distccd on 127.0.0.1; its address:port."""
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
def test_fallbacks_are_counted_by_distccs_reason(distccd: str, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.c").write_text(f"int {name}(void) {{ return 1; }}\n")
    (tmp_path / "main.c").write_text("int a(void);\nint main(void) { return a(); }\n")
    (tmp_path / "conftest.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "bad.c").write_text("int broken(void) { return nope; }\n")
    dead = f"127.0.0.1:{_free_port()}"  # refuses: distcc compiles here
    _distcc(tmp_path, distccd, "-O2", "-c", "a.c", "-o", "a.o")
    _distcc(tmp_path, distccd, "-O2", "-c", "b.c", "-o", "b.o")
    _distcc(tmp_path, dead, "-O2", "-c", "c.c", "-o", "c.o")
    _distcc(tmp_path, distccd, "-O2", "-c", "bad.c", "-o", "bad.o", check=False)
    # Never candidates: preprocessing, autoconf's probe, a link.
    _distcc(tmp_path, distccd, "-E", "a.c", "-o", "a.i")
    _distcc(tmp_path, distccd, "-c", "conftest.c", "-o", "conftest.o")
    _distcc(tmp_path, distccd, "-fuse-ld=lld", "-nostdlib", "a.o", "-o", "a.out")
    log = (tmp_path / "distcc.log").read_text()
    tally = distcc.tally_compiles(tmp_path / "distcc.log", volunteers=[distccd, "10.9.9.9:3632"])
    assert (tally.remote, tally.local) == (2, 2), log
    assert tally.hosts == {distccd: 2, "10.9.9.9:3632": 0}
    assert tally.fallbacks == {
        f"failed to connect to {dead}: Connection refused": 1,
        distcc.RETRIED_LOCALLY: 1,
    }, log
    assert tally.not_distributable == 3, log
    assert tally.detail_lines() == [
        f"  {distccd}: 2 compiles",
        "  10.9.9.9:3632: 0 compiles",
        "  local, compile on volunteer failed, retried locally: 1",
        f"  local, failed to connect to {dead}: Connection refused: 1",
        f"  {distcc.NOT_DISTRIBUTABLE}: 3 runs of distcc",
    ]
    # Relays are named as the volunteers they stand for, in the reasons too.
    aliased = distcc.tally_compiles(tmp_path / "distcc.log", aliases={dead: "10.0.0.7:3632"})
    assert aliased.fallbacks[
        "failed to connect to 10.0.0.7:3632: Connection refused"] == 1
    both = tally + aliased
    assert both.fallbacks[distcc.RETRIED_LOCALLY] == 2 and both.not_distributable == 6


@needs_distccd
def test_farm_build_tally_names_each_volunteer_and_lands_in_status_json(
        distccd: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real C package built as `--farm` builds it, with a volunteer that refuses
    listed first: its compile falls back with distcc's reason, the rest go to the
    live one; the summary lines and `status --json` say so."""
    from iglubuild.build import POST_BUILD_STEPS, BuildJob, build_package
    from iglubuild.cli import main
    from iglubuild.executors.host import HostExecutor
    from iglubuild.farmnet import farm_network
    from iglubuild.recipe import load_tree
    from iglubuild.settings import Settings
    from tests.engine_support import write_recipe

    recipes = tmp_path / "recipes"
    write_recipe(recipes, "farmed", """
        name: farmed
        version: "1"
        build: |
          for i in 1 2 3 4 5; do printf "int f$i(int x) {{ return x * $i; }}\\n" > f$i.c; done
          for i in 1 2 3 4; do $CC -O2 -c f$i.c -o f$i.o; done
          DISTCC_HOSTS="$IGLU_REFUSING" $CC -O2 -c f5.c -o f5.o
        package: |
          mkdir -p "$pkgdir/lib"
          cp f1.o "$pkgdir/lib/"
        """.replace("{{", "{").replace("}}", "}"))
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build", jobs=1)
    addr, port = distccd.split(":")
    dead_port = _free_port()
    refusing = distcc.Volunteer("t0", 1, "n0", "127.0.0.1", dead_port, "running", slots=1)
    live = distcc.Volunteer("t1", 2, "n1", addr, int(port), "running", slots=1)
    hosts = distcc.FarmHosts([refusing, live], jobs=3, local_identity="x")
    launcher, extra = distcc.phase_additions(hosts, distcc_dir=tmp_path / "distcc")
    executor = HostExecutor()
    names = [f"127.0.0.1:{dead_port}", distccd]
    with farm_network(executor, hosts.volunteers) as net:
        if net is not None:  # as root: through the relays
            extra["DISTCC_HOSTS"] = net.distcc_hosts
        extra["IGLU_REFUSING"] = extra["DISTCC_HOSTS"].split()[0]
        recorder = distcc.CompileRecorder(net.aliases if net is not None else None, names)
        build_package(BuildJob(load_tree(recipes).recipes["farmed"], settings, executor, [],
                               "sig", launcher=launcher, extra_env=extra, keep_work=True,
                               steps=(*POST_BUILD_STEPS, recorder),
                               netns=net.namespace if net is not None else None))
    log = (settings.build_dir / "work/farmed/distcc.log").read_text()
    refused = f"127.0.0.1:{dead_port}"
    tally = recorder.tallies()["farmed"]
    # f1: distcc tries the refusing volunteer first and (through a relay that
    # drops the connection) sends the compile to the live one; then it backs
    # off from the refusing one. f5 may only use that one: compiled here.
    assert (tally.remote, tally.local) == (4, 1), log
    assert tally.hosts == {distccd: 4}  # the run's total names every volunteer
    ((reason, n),) = tally.fallbacks.items()
    assert n == 1, log
    if net is not None:  # through the relays, as root
        assert tally.retried == {refused: 1}, log
        assert reason == distcc.NO_VOLUNTEER
    lines = recorder.summary_lines()
    assert lines[0] == "farm: 4 of 5 compiles remote on 2 volunteers, 1 local"
    assert lines[1:3] == [f"  {refused}: 0 compiles", f"  {distccd}: 4 compiles"]
    assert lines[3] == f"  local, {reason}: 1"
    if net is not None:
        assert lines[4] == f"  {refused} failed, retried on another volunteer: 1"
    package_log = (settings.build_dir / "logs/farmed.log").read_text()
    assert f"farm: 1 local, {reason}" in package_log

    saved = recorder.save(settings.build_dir)
    assert saved == settings.build_dir / distcc.TALLY_FILE
    doc = json.loads(saved.read_text())
    assert doc["total"]["hosts"] == {refused: 0, distccd: 4}
    assert main(["--recipes", str(recipes), "--build-dir", str(settings.build_dir),
                 "status", "--json", "farmed"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["farm"]["remote"] == 4 and item["farm"]["local"] == 1
    assert item["farm"]["hosts"] == {distccd: 4}
    assert item["farm"]["retried"] == tally.retried
    assert item["farm"]["fallbacks"] == {reason: 1}
    assert item["farm"]["run_finished"] == doc["finished"]


def test_queued_offers_each_volunteer_one_more_compile() -> None:
    assert distcc.queued("10.0.0.1:3632/2 10.0.0.2:3634/1,lzo localhost/2") \
        == "10.0.0.1:3632/3 10.0.0.2:3634/2,lzo localhost/2"
    assert distcc.queued("10.0.0.1:3632/2", 0) == "10.0.0.1:3632/2"
    vols = [distcc.Volunteer("t1", 1, "n1", "10.0.0.1", 3632, "running", slots=1)]
    env = distcc.build_env(distcc.FarmHosts(vols, jobs=2, local_identity="x"),
                           local_slots=1, queue_ahead=1)
    assert env["DISTCC_HOSTS"] == "10.0.0.1:3632/2 localhost/1"
    assert env["DISTCC_PAUSE_TIME_MSEC"] == "10"
