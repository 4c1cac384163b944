"""A whole build run: lock, plan, jobserver, progress lines, scheduler, summary."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iglubuild.errors import LockError
from iglubuild.lock import BuildDirLock
from iglubuild.session import BuildContext, Builder, run_build
from iglubuild.settings import Settings
from tests.conftest import REPO_ROOT
from tests.plan_fixtures import load, make_tree
from tests.sleep_builder import SleepBuilder


@pytest.fixture
def tree_dir(recipes: Path) -> Path:
    return make_tree(recipes)


class Run:
    def __init__(self, tree_dir: Path, build_dir: Path, **durations: float) -> None:
        self.tree_dir, self.build_dir, self.durations = tree_dir, build_dir, durations
        self.settings = Settings(recipes=tree_dir, build_dir=build_dir, jobs=2)
        self.builders: list[SleepBuilder] = []
        self.contexts: list[BuildContext] = []

    def make_builder(self, ctx: BuildContext) -> Builder:
        sb = SleepBuilder(self.build_dir / "out", self.durations, default=0.05,
                          fail={n for n, d in self.durations.items() if d < 0},
                          jobserver_env=ctx.jobserver.env(), pass_fds=ctx.jobserver.pass_fds,
                          on_phase=ctx.on_phase)
        self.builders.append(sb)
        self.contexts.append(ctx)
        return Builder(sb.build_one, [sb.terminate])

    def __call__(self, **kw: object) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        tree, graph = load(self.tree_dir)
        code = run_build(self.settings, tree, graph, "tc-1", self.make_builder,
                         out=out, err=err, **kw)  # type: ignore[arg-type]
        return code, out.getvalue(), err.getvalue()


def test_build_then_nothing_to_do(tree_dir: Path, tmp_path: Path) -> None:
    run = Run(tree_dir, tmp_path / "build")
    code, _, err = run()
    assert code == 0, err
    assert "[7/7] app: built" in err  # plain progress lines: stderr is not a terminal
    assert "app: build" in err  # the phase the builder reported
    assert "built 7, up to date 0, failed 0, blocked 0" in err
    assert "critical path" in err
    assert run() == (0, "", "nothing to do: 7 package(s) up to date\n")
    assert len(run.builders) == 1  # the second run never built anything


def test_builder_summary_lines_follow_the_summary(tree_dir: Path, tmp_path: Path) -> None:
    """What a builder adds (the farm's share of the compiles) ends the summary."""
    run = Run(tree_dir, tmp_path / "build")
    calls = []

    def with_summary(ctx: BuildContext) -> Builder:
        plain = run.make_builder(ctx)
        return Builder(plain.build_one, plain.terminators,
                       summary=lambda: calls.append(1) or ["farm: 3 of 4 compiles remote"])

    tree, graph = load(tree_dir)
    err = io.StringIO()
    code = run_build(run.settings, tree, graph, "tc-1", with_summary, names=["musl"],
                     out=io.StringIO(), err=err)
    assert code == 0
    lines = err.getvalue().splitlines()
    assert lines[-1].startswith("report: ")
    assert lines[-1].endswith("(iglubuild report for the page)")
    assert lines[-2] == "farm: 3 of 4 compiles remote"
    assert lines[-3].startswith("critical path") and calls == [1]


def test_builder_gets_the_jobserver_environment(tree_dir: Path, tmp_path: Path) -> None:
    run = Run(tree_dir, tmp_path / "build")
    run(names=["musl"])
    env = run.builders[0].env
    r, w = run.contexts[0].jobserver.pass_fds
    assert env["MAKEFLAGS"] == f"-j2 --jobserver-auth={r},{w}"
    assert run.contexts[0].plan.packages["musl"].signature


def test_dry_run_prints_waves_and_builds_nothing(tree_dir: Path, tmp_path: Path) -> None:
    run = Run(tree_dir, tmp_path / "build")
    code, out, _ = run(names=["curl"], dry_run=True)
    assert code == 0 and run.builders == []
    assert out.splitlines() == [
        "build plan: 5 package(s) in 4 wave(s)",
        "wave 1: musl",
        "wave 2: pkgconf zlib",
        "wave 3: openssl",
        "wave 4: curl",
        "critical path (4 packages, 4 s estimated): musl -> zlib -> openssl -> curl",
        "5 to build, 0 up to date",
    ]


def test_force_and_failure_exit_code(tree_dir: Path, tmp_path: Path) -> None:
    Run(tree_dir, tmp_path / "build")()
    run = Run(tree_dir, tmp_path / "build", mksh=-1)
    code, _, err = run(force=["mksh"])
    assert code == 1
    assert "failed: mksh: mksh: build failed (exit 1)" in err
    assert "hint: see " in err


def test_second_run_on_same_build_dir_is_refused(tree_dir: Path, tmp_path: Path) -> None:
    with BuildDirLock(tmp_path / "build"):
        with pytest.raises(LockError, match="is in use by PID"):
            Run(tree_dir, tmp_path / "build")()


def test_sigterm_stops_like_ctrl_c(tree_dir: Path, tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.drivers.run_build", str(tree_dir), str(build_dir),
         json.dumps({"zlib": 60})], cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (build_dir / "out" / ".zlib.pkg.tmp").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 130, err
        assert not (build_dir / "out" / ".zlib.pkg.tmp").exists()
        assert not (build_dir / "state" / "zlib.json").exists()
        # The run's record is written on the way out, zlib in it as interrupted.
        [saved] = (build_dir / "reports").glob("*.json")
        record = json.loads(saved.read_text())
        assert record["outcome"] == "interrupted"
        zlib = next(p for p in record["packages"] if p["name"] == "zlib")
        assert zlib["outcome"] == "interrupted" and zlib["phases"][-1]["outcome"] == "interrupted"
        # The lock went with the process.
        with BuildDirLock(build_dir) as lock:
            assert lock.held
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
