"""The scheduler with real subprocess builds (sleeps writing real files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from iglubuild.plan import StateStore, make_plan
from iglubuild.scheduler import Summary, run_plan
from tests.conftest import REPO_ROOT
from tests.plan_fixtures import load, make_tree
from tests.sleep_builder import SleepBuilder


@pytest.fixture
def tree_dir(recipes: Path) -> Path:
    return make_tree(recipes)


def build(tree_dir: Path, build_dir: Path, jobs: int, **kw: object) -> tuple[Summary, SleepBuilder]:
    tree, graph = load(tree_dir)
    state = StateStore(build_dir)
    plan = make_plan(tree, graph, "tc-1", state)
    builder = SleepBuilder(build_dir / "out", kw.pop("durations", None),  # type: ignore[arg-type]
                           fail=kw.pop("fail", set()), default=0.3)  # type: ignore[arg-type]
    summary = run_plan(plan, builder.build_one, jobs=jobs, state=state,
                       terminators=[builder.terminate], **kw)  # type: ignore[arg-type]
    return summary, builder


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def test_dependency_order_is_respected(tree_dir: Path, tmp_path: Path) -> None:
    summary, builder = build(tree_dir, tmp_path / "build", jobs=2)
    _, graph = load(tree_dir)
    assert sorted(summary.built) == sorted(graph.order())
    for name, (start, _) in builder.times.items():
        for dep in graph.build_deps(name):
            assert start >= builder.times[dep][1], f"{name} started before {dep} ended"
    assert all(builder.artifact(n).read_text() == f"{n}\n" for n in summary.built)


def test_independent_packages_overlap_in_time(tree_dir: Path, tmp_path: Path) -> None:
    summary, builder = build(tree_dir, tmp_path / "build", jobs=2,
                             durations={"zlib": 0.8, "pkgconf": 0.8})
    # After musl, zlib and pkgconf (the two longest chains) start together.
    assert overlap(builder.times["zlib"], builder.times["pkgconf"]) > 0.5
    serial = sum(end - start for start, end in builder.times.values())
    assert summary.elapsed < serial * 0.85
    # Three packages are ready at once after musl, but never more than jobs=2 run.
    stamps = sorted((t, +1 if i == 0 else -1) for span in builder.times.values()
                    for i, t in enumerate(span))
    running = [sum(step for _, step in stamps[: k + 1]) for k in range(len(stamps))]
    assert max(running) == 2


def test_longest_remaining_chain_goes_first(tree_dir: Path, tmp_path: Path) -> None:
    _, builder = build(tree_dir, tmp_path / "build", jobs=1, durations={})
    order = sorted(builder.times, key=lambda n: builder.times[n][0])
    # mksh would come first alphabetically, but it heads no chain: it waits.
    assert order[:2] == ["musl", "zlib"]
    assert order.index("mksh") > order.index("openssl")


def test_ready_package_starts_as_soon_as_its_deps_finish(tree_dir: Path, tmp_path: Path) -> None:
    # pkgconf is slow; openssl needs only musl and zlib, so it must not wait for pkgconf.
    _, builder = build(tree_dir, tmp_path / "build", jobs=2,
                       durations={"pkgconf": 1.5, "zlib": 0.2, "openssl": 0.2})
    assert builder.times["openssl"][0] - builder.times["zlib"][1] < 0.5
    assert builder.times["openssl"][1] < builder.times["pkgconf"][1]


def test_failure_blocks_dependents_and_stops_new_work(tree_dir: Path, tmp_path: Path) -> None:
    summary, builder = build(tree_dir, tmp_path / "build", jobs=1, fail={"zlib"})
    assert list(summary.failed) == ["zlib"]
    assert summary.failed["zlib"].log == tmp_path / "build" / "out" / "logs" / "zlib.log"
    assert "building zlib" in summary.failed["zlib"].log.read_text()
    assert summary.blocked == {"openssl": "zlib", "curl": "zlib", "app": "zlib"}
    assert summary.built == ["musl"]
    assert sorted(summary.not_started) == ["mksh", "pkgconf"]
    assert summary.exit_code == 1
    record = json.loads((tmp_path / "build" / "state" / "zlib.json").read_text())
    assert record["result"] == "failed" and record["log"].endswith("zlib.log")
    assert not (tmp_path / "build" / "out" / ".zlib.pkg.tmp").exists()


def test_keep_going_builds_everything_not_depending_on_the_failure(
    tree_dir: Path, tmp_path: Path
) -> None:
    summary, _ = build(tree_dir, tmp_path / "build", jobs=2, fail={"zlib"}, keep_going=True)
    assert sorted(summary.built) == ["mksh", "musl", "pkgconf"]
    assert sorted(summary.blocked) == ["app", "curl", "openssl"]
    assert summary.not_started == []
    lines = summary.lines()
    assert lines[0].startswith("built 3, up to date 0, failed 1, blocked 3")
    assert any(line.startswith("failed: zlib:") and "zlib.log" in line for line in lines)


def test_second_run_skips_everything_and_a_failure_is_retried(tree_dir: Path,
                                                               tmp_path: Path) -> None:
    build(tree_dir, tmp_path / "build", jobs=2, fail={"mksh"}, keep_going=True)
    summary, builder = build(tree_dir, tmp_path / "build", jobs=2)
    assert summary.built == ["mksh"]
    assert len(summary.skipped) == 6
    assert list(builder.times) == ["mksh"]


def test_summary_names_the_critical_path(tree_dir: Path, tmp_path: Path) -> None:
    # zlib and openssl take longer so the chain through them is the longest by 0.9 s,
    # more than a loaded machine can add to the pkgconf chain.
    summary, builder = build(tree_dir, tmp_path / "build", jobs=2,
                             durations={"zlib": 0.6, "openssl": 0.6})
    assert summary.critical_path == ["musl", "zlib", "openssl", "curl", "app"]
    cp = summary.critical_path
    assert summary.critical_path_seconds == pytest.approx(sum(summary.durations[n] for n in cp))
    for n in cp:
        # The scheduler times the build itself: around the builder's own span,
        # not the time the package waited for its turn.
        built = builder.times[n][1] - builder.times[n][0]
        assert built <= summary.durations[n] < built + 1.0


def test_phase_callback_reaches_progress(tree_dir: Path, tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []

    class Recorder:
        def start(self, name: str) -> None:
            events.append((name, "start"))

        def phase(self, name: str, phase: str) -> None:
            events.append((name, phase))

        def finish(self, name: str, outcome: str, seconds: float) -> None:
            events.append((name, outcome))

        def tick(self) -> None:
            pass

        def close(self) -> None:
            events.append(("", "closed"))

    tree, graph = load(tree_dir)
    state = StateStore(tmp_path / "build")
    plan = make_plan(tree, graph, "tc-1", state, names=["zlib"])
    progress = Recorder()
    builder = SleepBuilder(tmp_path / "out", default=0.05, on_phase=progress.phase)
    run_plan(plan, builder.build_one, jobs=2, state=state, progress=progress)
    assert events == [("musl", "start"), ("musl", "build"), ("musl", "built"),
                      ("zlib", "start"), ("zlib", "build"), ("zlib", "built"), ("", "closed")]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def _driver(tree_dir: Path, build_dir: Path, durations: dict[str, float]
            ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.drivers.run_scheduler", str(tree_dir), str(build_dir),
         json.dumps(durations), "2"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Generous on purpose: on a loaded 2-core machine starting the driver alone can
# take seconds. Every wait below ends as soon as its condition holds.
DEADLINE = 120.0


def _wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str],
              timeout: float = DEADLINE) -> None:
    """Poll `condition` until it holds; fail naming `what` (and the driver's end) if not."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"driver exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.05)


def test_sigint_stops_builds_leaves_nothing_half_written_and_exits_130(
    tree_dir: Path, tmp_path: Path
) -> None:
    build_dir = tmp_path / "build"
    out = build_dir / "out"
    # zlib sleeps far longer than any deadline here, so "stopped, not waited for" is clear.
    proc = _driver(tree_dir, build_dir, {"zlib": 3600})
    try:
        _interrupt_and_check(tree_dir, build_dir, out, proc)
    finally:
        # If the test failed, stop what it started (by PID) so nothing lingers.
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _processes_mentioning(str(out)):
            os.kill(pid, signal.SIGKILL)


def _interrupt_and_check(tree_dir: Path, build_dir: Path, out: Path,
                         proc: subprocess.Popen[str]) -> None:
    # Interrupt while zlib is building (its artifact half-written) and only then:
    # pkgconf and mksh, which run one after the other in the second slot, must
    # have finished and been recorded, however slowly the machine ran them.
    state = build_dir / "state"
    done = ("musl", "pkgconf", "mksh")
    _wait_for(lambda: (out / ".zlib.pkg.tmp").exists(), "zlib started", proc)
    _wait_for(lambda: all((out / f"{n}.pkg").exists() and (state / f"{n}.json").exists()
                          for n in done), "musl, pkgconf and mksh built and recorded", proc)
    assert _processes_mentioning(str(out / ".zlib.pkg.tmp")), "zlib's sleep should be running"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < DEADLINE  # the hour-long sleep was stopped
    assert "interrupted" in err and "Traceback" not in err
    # The builds' processes are gone (a killed one may take a moment to be reaped).
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(out)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(str(out)) == []
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "mksh.pkg", "musl.pkg", "pkgconf.pkg"]
    state_files = sorted(p.name for p in state.iterdir())
    assert state_files == ["mksh.json", "musl.json", "pkgconf.json"]

    # The next run continues: only zlib and what needs it are built.
    again = _driver(tree_dir, build_dir, {"zlib": 0.1})
    stdout, err = again.communicate(timeout=DEADLINE)
    assert again.returncode == 0, err
    result = json.loads(stdout)
    assert result["built"] == ["zlib", "openssl", "curl", "app"]
    assert sorted(result["skipped"]) == ["mksh", "musl", "pkgconf"]
