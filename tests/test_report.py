"""The run record (iglubuild.runrecord) and `iglubuild report` (iglubuild.report).

Real runs make the records: the scheduler with real `sleep` builds (lanes,
waits, critical path, failure), the CLI building shell-only recipes on the
host executor (CPU and memory measured by wait4), and the page is opened in
Debian's headless Chromium, whose screenshot and DOM are checked.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iglubuild.executor import PhaseJob
from iglubuild.executors.host import HostExecutor
from iglubuild.report import STEP_COLOURS, html_page, idle_spans, text_lines
from iglubuild.run import Usage
from iglubuild.runrecord import (
    RunRecord,
    RunRecorder,
    find_report,
    load_report,
    prune,
    reports,
)
from iglubuild.session import run_build
from tests.conftest import write_recipe
from tests.plan_fixtures import load, make_tree
from tests.pngread import colours
from tests.test_session import Run

CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")


# tests/plan_fixtures.make_tree: each package's dependencies (app needs curl-dev).
FIXTURE_DEPS = {"zlib": ["musl"], "pkgconf": ["musl"], "openssl": ["musl", "zlib"],
                "curl": ["openssl", "zlib", "pkgconf"], "app": ["musl", "curl"],
                "mksh": ["musl"]}


def _record(build_dir: Path) -> RunRecord:
    stored = reports(build_dir / "reports")
    assert len(stored) >= 1
    return load_report(stored[-1])


@pytest.fixture
def sleep_run(recipes: Path, tmp_path: Path) -> tuple[RunRecord, str]:
    """A real scheduler run of the 7-package fixture tree on 2 slots, curl slowest."""
    tree_dir = make_tree(recipes)
    run = Run(tree_dir, tmp_path / "build", curl=0.6, openssl=0.4, mksh=0.5)
    code, _, err = run()
    assert code == 0, err
    return _record(tmp_path / "build"), err


def test_a_run_records_slots_waits_and_the_critical_path(
        sleep_run: tuple[RunRecord, str]) -> None:
    record, err = sleep_run
    assert f"report: {record.run_id}" not in err  # the summary names the file by path
    assert any(line.startswith("report: ") and record.run_id in line
               for line in err.splitlines())
    assert record.outcome == "ok" and record.jobs == 2 and record.command == "build"
    by_name = {p.name: p for p in record.packages}
    assert set(by_name) == {"musl", "zlib", "pkgconf", "openssl", "curl", "app", "mksh"}
    # Lanes are job slots: never two packages at once in one lane, never a third lane.
    for lane in (1, 2):
        spans = sorted((p.start, p.end) for p in record.packages if p.lane == lane)
        pairs = zip(spans, spans[1:], strict=False)
        assert all(a_end <= b_start + 0.01 for (_, a_end), (b_start, _) in pairs)
    assert {p.lane for p in record.packages} <= {1, 2}
    # A package is ready when its last dependency ends, and starts after that.
    for pkg in record.packages:
        for dep in FIXTURE_DEPS.get(pkg.name, ()):
            assert pkg.ready >= by_name[dep].end - 0.01, (pkg.name, dep)
        assert pkg.start >= pkg.ready - 0.01
    assert by_name["curl"].waited_for in {"openssl", "zlib", "pkgconf"}
    assert by_name["openssl"].waited_for in {"zlib", "musl"}
    assert by_name["musl"].waited_for is None
    # The sleep builder announces one step, "build", after the setup step.
    assert [s.name for s in by_name["curl"].phases] == ["setup", "build"]
    assert by_name["curl"].seconds >= 0.6
    # The critical path is the summary's, and runs through the slow chain.
    assert record.critical_path[0] == "musl" and "curl" in record.critical_path
    assert f"critical path {record.critical_path_seconds:.1f} s: " \
           + " -> ".join(record.critical_path) in err
    assert record.load and all(s.load1 >= 0 for s in record.load)
    # Idle spans fill the rest of each lane.
    for lane, gaps in idle_spans(record).items():
        busy = sum(p.seconds for p in record.packages if p.lane == lane)
        assert abs(busy + sum(b - a for a, b in gaps) - record.elapsed) < 0.05


def test_a_failed_run_records_the_failed_step_and_what_it_blocked(
        recipes: Path, tmp_path: Path) -> None:
    tree_dir = make_tree(recipes)
    run = Run(tree_dir, tmp_path / "build", openssl=-1)
    code, _, err = run(keep_going=True)
    assert code == 1, err
    record = _record(tmp_path / "build")
    assert record.outcome == "failed"
    openssl = next(p for p in record.packages if p.name == "openssl")
    assert openssl.outcome == "failed" and openssl.phases[-1].outcome == "failed"
    assert record.blocked["curl"] == "openssl" and record.blocked["app"] in {"curl", "openssl"}
    assert "mksh" in {p.name for p in record.packages if p.outcome == "built"}
    assert any(line.startswith("blocked: curl") for line in text_lines(record))


def test_host_phases_report_their_cpu_and_peak_memory(tmp_path: Path) -> None:
    """wait4's rusage of the phase's whole tree: a child that burns CPU and holds 96 MiB."""
    script = (f"{sys.executable} -c 'import time\n"
              "b = bytearray(96 * 1024 * 1024)\n"
              "t = time.process_time()\n"
              "while time.process_time() - t < 0.5: pass' & wait")
    for isolated in (False, True):
        heard: list[tuple[str, str, Usage]] = []
        ex = HostExecutor(isolated=isolated)
        ex.usage_sink = lambda pkg, phase, usage, heard=heard: heard.append(  # type: ignore[misc]
            (pkg, phase, usage))
        job = PhaseJob(package="burn", phase="build", script=script, cwd=tmp_path,
                       env={"PATH": os.environ["PATH"]}, writable=(tmp_path,), readonly=())
        with open(tmp_path / "log", "wb") as log:
            assert ex.run_phase(job, log) == 0
        [(pkg, phase, usage)] = heard
        assert (pkg, phase) == ("burn", "build")
        assert usage.cpu_seconds >= 0.45, (isolated, usage)
        # No upper bound: a forked child's high-water mark starts at its parent's
        # (here pytest's) resident size before it execs.
        assert usage.peak_rss_kib >= 96 * 1024, (isolated, usage)


def _spin_tree(recipes: Path) -> None:
    write_recipe(recipes, "musl", 'name: musl\nversion: "1"\npackage: |\n'
                 '  mkdir -p "$pkgdir/usr/lib" "$pkgdir/usr/include"\n'
                 '  echo x > "$pkgdir/usr/lib/p"; echo y > "$pkgdir/usr/include/p.h"\n'
                 "subpackages:\n  dev: [usr/include]\n")
    write_recipe(recipes, "spin", 'name: spin\nversion: "1"\nbuild: |\n'
                 "  i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done\n"
                 'package: |\n  mkdir -p "$pkgdir/usr/share"; echo hi > "$pkgdir/usr/share/hi"\n')


def test_cli_pkg_run_then_report_text_json_and_page(cli, recipes: Path,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    _spin_tree(recipes)
    build = tmp_path / "b"
    r = cli("--recipes", str(recipes), "--build-dir", str(build), "pkg", "spin")
    assert r.code == 0, r.err
    saved = [line for line in r.err.splitlines() if line.startswith("report: ")]
    assert len(saved) == 1
    record = _record(build)
    assert record.command == "pkg" and record.executor == "host"
    spin = next(p for p in record.packages if p.name == "spin")
    assert [s.name for s in spin.phases] == ["setup", "sysroot", "unpack", "build",
                                            "package", "pack"]
    build_step = spin.phases[3]
    assert build_step.cpu_seconds is not None and build_step.cpu_seconds > 0.1
    assert build_step.peak_rss_kib is not None and build_step.peak_rss_kib > 0
    assert spin.waited_for == "musl"

    r = cli("--build-dir", str(build), "report", "--format", "json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["run_id"] == record.run_id
    r = cli("--build-dir", str(build), "report", record.run_id[:15], "--format", "text")
    assert r.code == 0, r.err
    assert r.out.startswith(f"run {record.run_id}: pkg, ok")
    assert "spin" in r.out and "critical path" in r.out
    r = cli("--build-dir", str(build), "report")
    assert r.code == 0, r.err
    page = Path(r.out.strip().removeprefix("file://"))
    assert page == (build / "reports" / f"{record.run_id}.html").resolve()
    text = page.read_text()
    assert "<script" in text and "https://cdn" not in text.split("<script", 1)[0]
    assert 'data-package="spin"' in text
    r = cli("--build-dir", str(build), "report", "--list")
    assert r.code == 0 and record.run_id in r.out


def test_report_errors_are_one_line_with_a_hint(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    build = tmp_path / "b"
    r = cli("--build-dir", str(build), "report")
    assert r.code == 2 and r.err.startswith("error: no run recorded in "), r.err
    assert "hint:" in r.err and "Traceback" not in r.err
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "run_id": 3}')
    r = cli("--build-dir", str(build), "report", str(bad))
    assert r.code == 2 and r.err.startswith(f"error: {bad}: not a run record"), r.err
    (build / "reports").mkdir(parents=True)
    r = cli("--build-dir", str(build), "report", "1999")
    assert r.code == 2 and "no run matching '1999'" in r.err


def test_records_are_pruned_and_load_samples_bounded(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "reports"
    folder.mkdir()
    for i in range(55):
        (folder / f"2026010{i:02d}T000000Z-1.json").write_text("{}")
        (folder / f"2026010{i:02d}T000000Z-1.html").write_text("")
    prune(folder)
    kept = reports(folder)
    assert len(kept) == 50 and kept[0].name.startswith("202601005")
    assert len(list(folder.glob("*.html"))) == 50
    assert find_report(folder, None) == kept[-1]

    import iglubuild.runrecord as runrecord

    monkeypatch.setattr(runrecord, "MAX_LOAD_SAMPLES", 8)
    recorder = RunRecorder(folder, command="world", jobs=1, executor="host", edges={},
                           sample_seconds=3600)
    for _ in range(40):
        recorder._sample()
    record = recorder.record(outcome="ok")
    recorder.close()
    assert len(record.load) <= 8 and recorder._sample_every > 3600


def test_the_page_renders_its_lanes_in_headless_chromium(
        sleep_run: tuple[RunRecord, str], tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium-headless-shell is not installed (make setup installs it)")
    record, _ = sleep_run
    page = tmp_path / "page.html"
    page.write_text(html_page(record))
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1000,800", "--user-data-dir=" + str(tmp_path / "profile")]

    def chromium(*args: str) -> str:
        proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    # plotly ran: its SVG holds the bar traces, and the page names every package.
    assert 'class="main-svg"' in dom and "trace bars" in dom
    assert dom.count('class="point"') >= len(record.packages)
    for pkg in record.packages:
        assert f'data-package="{pkg.name}"' in dom
    assert "critical path" in dom and "slot 1" in dom and "slot 2" in dom

    shot = tmp_path / "page.png"
    chromium("--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri())
    blank_shot = tmp_path / "blank.png"
    chromium(f"--screenshot={blank_shot}", blank.as_uri())
    seen = colours(shot)
    blank_seen = colours(blank_shot)
    assert len(blank_seen) <= 2  # a blank canvas: white
    drawn = sum(n for rgb, n in seen.items() if rgb != (255, 255, 255))
    assert drawn > 0.05 * sum(seen.values()), "the page is nearly blank"
    build_blue = tuple(int(STEP_COLOURS["build"][i:i + 2], 16) for i in (1, 3, 5))
    assert seen.get(build_blue, 0) > 2000, "no build bars drawn"  # type: ignore[call-overload]
    keep = os.environ.get("IGLUBUILD_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_run_build_records_even_when_the_builder_breaks(recipes: Path, tmp_path: Path) -> None:
    """An error of our own mid-run still leaves a record (outcome interrupted)."""
    tree_dir = make_tree(recipes)
    run = Run(tree_dir, tmp_path / "build")

    def broken(ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("builder broke")

    tree, graph = load(tree_dir)
    with pytest.raises(RuntimeError):
        run_build(run.settings, tree, graph, "tc-1", broken, out=io.StringIO(),
                  err=io.StringIO())
    assert _record(tmp_path / "build").outcome == "interrupted"
