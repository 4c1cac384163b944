"""The shared GNU make jobserver: real `make` processes, real concurrency measured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from iglubuild.jobserver import Jobserver, budget_split
from iglubuild.plan import StateStore, make_plan
from iglubuild.run import require_tool
from iglubuild.scheduler import run_plan
from tests.plan_fixtures import load, make_tree

MAKEFILE = """\
JOBS_LIST := a b c d
all: $(JOBS_LIST)
$(JOBS_LIST):
\t@echo "S $$(date +%s%N)" >> $(EVENTS); sleep 0.5; echo "E $$(date +%s%N)" >> $(EVENTS)
.PHONY: all $(JOBS_LIST)
"""


def max_concurrency(events: Path) -> int:
    """Most jobs running at one instant, from start/end stamps (ends sort first on ties)."""
    stamps = []
    for line in events.read_text().split("\n"):
        if line:
            kind, ns = line.split()
            stamps.append((int(ns), 0 if kind == "E" else 1))
    running = peak = 0
    for _, is_start in sorted(stamps):
        running += 1 if is_start else -1
        peak = max(peak, running)
    return peak


def make_package(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Makefile").write_text(MAKEFILE)
    return folder


def run_makes(folders: list[Path], events: Path, env: dict[str, str],
              pass_fds: tuple[int, ...] = ()) -> None:
    procs = [subprocess.Popen(["make", "-s", f"EVENTS={events}"], cwd=f, env=env,
                              pass_fds=pass_fds, stdin=subprocess.DEVNULL)
             for f in folders]
    assert [p.wait(timeout=30) for p in procs] == [0] * len(procs)


@pytest.fixture(autouse=True)
def _make() -> None:
    require_tool("make", "make")


def test_without_a_jobserver_two_make_j2_run_four_jobs(tmp_path: Path) -> None:
    # The control: shows the problem the jobserver solves (and that the probe can see it).
    events = tmp_path / "events"
    env = {"PATH": "/usr/bin:/bin", "MAKEFLAGS": "-j2"}
    run_makes([make_package(tmp_path / "p1"), make_package(tmp_path / "p2")], events, env)
    assert max_concurrency(events) == 4


def test_shared_jobserver_caps_two_makes_at_the_budget(tmp_path: Path) -> None:
    events = tmp_path / "events"
    with Jobserver(2) as js:
        # The scheduler holds one token per running package (its make's free slot).
        assert js.acquire(timeout=1) and js.acquire(timeout=1)
        env = {"PATH": "/usr/bin:/bin", **js.env()}
        run_makes([make_package(tmp_path / "p1"), make_package(tmp_path / "p2")], events,
                  env, js.pass_fds)
        js.release()
        js.release()
        assert js.available() == 2  # make gave back every token it took
    assert max_concurrency(events) == 2


def test_lone_package_gets_the_whole_budget(tmp_path: Path) -> None:
    events = tmp_path / "events"
    with Jobserver(3) as js:
        assert js.acquire(timeout=1)
        env = {"PATH": "/usr/bin:/bin", **js.env()}
        run_makes([make_package(tmp_path / "p1")], events, env, js.pass_fds)
        js.release()
    assert max_concurrency(events) == 3


def test_missing_descriptors_degrade_to_serial_not_failure(tmp_path: Path) -> None:
    events = tmp_path / "events"
    with Jobserver(2) as js:
        env = {"PATH": "/usr/bin:/bin", **js.env()}
        run_makes([make_package(tmp_path / "p1")], events, env, pass_fds=())
    assert max_concurrency(events) == 1


def test_scheduler_with_make_builds_stays_within_budget(recipes: Path, tmp_path: Path) -> None:
    tree, graph = load(make_tree(recipes))
    state = StateStore(tmp_path / "build")
    plan = make_plan(tree, graph, "tc-1", state, names=["mksh", "pkgconf", "zlib"])
    events = tmp_path / "events"
    with Jobserver(2) as js:
        env = {"PATH": "/usr/bin:/bin", **js.env()}

        def build_one(name: str) -> None:
            run_makes([make_package(tmp_path / name)], events, env, js.pass_fds)

        summary = run_plan(plan, build_one, jobs=2, state=state, jobserver=js)
        assert js.available() == 2
    assert sorted(summary.built) == ["mksh", "musl", "pkgconf", "zlib"]
    assert max_concurrency(events) == 2
    # 16 jobs of 0.5 s on a budget of 2 cannot finish faster than 4 s.
    assert summary.elapsed >= 3.9


def test_acquire_gives_up_when_stopped(tmp_path: Path) -> None:
    import threading

    with Jobserver(1) as js:
        assert js.acquire(timeout=1)
        stop = threading.Event()
        stop.set()
        assert js.acquire(stop) is False
        assert js.acquire(timeout=0.2) is False
        js.release()


def test_reset_refills_tokens_lost_by_a_killed_make(tmp_path: Path) -> None:
    with Jobserver(2) as js:
        os.read(js.pass_fds[0], 2)  # as if a make took two tokens and was SIGKILLed
        assert js.available() == 0
        js.reset()
        assert js.available() == 2


def test_budget_split() -> None:
    assert budget_split(8, 3) == 3
    assert budget_split(2, 2) == 1
    assert budget_split(2, 5) == 1
    assert budget_split(4, 0) == 4
