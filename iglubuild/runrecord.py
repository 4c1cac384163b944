"""What a build run did, as it happened: the record behind `iglubuild report`.

Every `world`/`pkg` run that builds something keeps one `RunRecorder`. It
listens where the progress display listens (a package starts, a step begins,
a package finishes), hears from the executor what each phase's processes
used (CPU seconds and peak memory, from wait4), samples the machine's load
once a second, and at the end writes `<build-dir>/reports/<run id>.json`
(temporary file, then rename) — also after a failure or Ctrl-C, when a
record matters most. The run's summary names the file.

- Lanes are job slots: a package takes the lowest free lane when it starts,
  so the lanes show how the scheduler filled its slots, and gaps are idle.
- `ready` is when a package's last dependency of this run finished (or the
  first package started, if it has none); `start - ready` is what it waited
  for a slot (or a jobserver token).
- Times are seconds since the run began (one monotonic clock); the wall
  clock of the start is kept once, as UTC.
- Everything that grows has a limit: load samples are thinned (every other
  one dropped, the interval doubled) past MAX_LOAD_SAMPLES, only the newest
  KEEP_REPORTS reports are kept, and reading one refuses more than
  MAX_REPORT_BYTES.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iglubuild.atomic import write_atomic
from iglubuild.errors import UsageError
from iglubuild.run import Usage

RECORD_VERSION: Literal[1] = 1
MAX_LOAD_SAMPLES = 4096
KEEP_REPORTS = 50
MAX_REPORT_BYTES = 32 * 1024 * 1024
SAMPLE_SECONDS = 1.0
SETUP_STEP = "setup"  # a package's time before its first announced step


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhaseRecord(_Model):
    """One step of one package: setup, sysroot, unpack, the script phases, pack."""

    name: str
    start: float
    end: float
    outcome: Literal["ok", "failed", "interrupted"] = "ok"
    cpu_seconds: float | None = None  # None: not measured (not a process, or docker)
    peak_rss_kib: int | None = None


class FarmShare(_Model):
    """Where a package's compiles ran (iglubuild.distcc.CompileTally)."""

    remote: int = 0
    local: int = 0
    hosts: dict[str, int] = Field(default_factory=dict)
    fallbacks: dict[str, int] = Field(default_factory=dict)  # reason -> local compiles
    not_distributable: int = 0  # distcc runs that were never candidates (links, -E)
    retried: dict[str, int] = Field(default_factory=dict)  # volunteer -> sent elsewhere


class PackageRecord(_Model):
    name: str
    lane: int
    ready: float
    start: float
    end: float
    outcome: Literal["built", "failed", "interrupted"]
    waited_for: str | None = None  # the dependency that finished last
    phases: list[PhaseRecord] = Field(default_factory=list)
    farm: FarmShare | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def cpu_seconds(self) -> float | None:
        measured = [p.cpu_seconds for p in self.phases if p.cpu_seconds is not None]
        return sum(measured) if measured else None

    @property
    def peak_rss_kib(self) -> int | None:
        measured = [p.peak_rss_kib for p in self.phases if p.peak_rss_kib is not None]
        return max(measured) if measured else None


class LoadSample(_Model):
    t: float
    load1: float
    busy: float | None = None  # fraction of all CPUs busy since the previous sample


class RunRecord(_Model):
    """One run, as stored in `<build-dir>/reports/<run_id>.json`."""

    version: Literal[1] = RECORD_VERSION
    run_id: str
    command: str
    started_at: str  # ISO 8601, UTC
    elapsed: float
    outcome: Literal["ok", "failed", "interrupted"]
    jobs: int
    cpus: int
    executor: str
    farm: bool = False
    packages: list[PackageRecord] = Field(default_factory=list)
    up_to_date: list[str] = Field(default_factory=list)
    blocked: dict[str, str] = Field(default_factory=dict)
    not_started: list[str] = Field(default_factory=list)
    critical_path: list[str] = Field(default_factory=list)
    critical_path_seconds: float = 0.0
    load: list[LoadSample] = Field(default_factory=list)


class _Open:
    """A package still running: its lane and steps so far."""

    def __init__(self, name: str, lane: int, ready: float, start: float,
                 waited_for: str | None) -> None:
        self.name = name
        self.lane = lane
        self.ready = ready
        self.start = start
        self.waited_for = waited_for
        self.phases: list[PhaseRecord] = [PhaseRecord(name=SETUP_STEP, start=start, end=start)]


class RunRecorder:
    """Collects one run's timeline; thread-safe (builds report from worker threads).

    `edges` maps each package to build to its dependencies built in the same
    run (Plan.build_edges). Use it as a Progress (start, phase, finish, tick,
    close) beside the display, give `usage` to the executor as its
    usage_sink, and call `save` once at the end.
    """

    def __init__(self, reports_dir: Path, *, command: str, jobs: int, executor: str,
                 edges: Mapping[str, Sequence[str]], up_to_date: Sequence[str] = (),
                 farm: bool = False, sample_seconds: float = SAMPLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reports_dir = reports_dir
        self._clock = clock
        self._t0 = clock()
        self._started = datetime.now(UTC)
        self.run_id = f"{self._started:%Y%m%dT%H%M%SZ}-{os.getpid()}"
        self._lock = threading.Lock()
        self._edges = {n: list(d) for n, d in edges.items()}
        self._open: dict[str, _Open] = {}
        self._done: dict[str, PackageRecord] = {}
        self._first_start: float | None = None
        self._free = list(range(1, max(1, jobs) + 1))
        self._meta = dict(command=command, jobs=jobs, executor=executor, farm=farm,
                          cpus=os.cpu_count() or 1)
        self._up_to_date = list(up_to_date)
        self._load: list[LoadSample] = []
        self._sample_every = sample_seconds
        self._cpu_before = _cpu_times()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_loop, name="load-sampler",
                                         daemon=True)
        self._sample()
        self._sampler.start()

    def _now(self) -> float:
        return round(self._clock() - self._t0, 3)

    # -- the Progress side ----------------------------------------------------

    def start(self, name: str) -> None:
        now = self._now()
        with self._lock:
            lane = self._free.pop(0) if self._free else len(self._open) + 1
            self._free.sort()
            if self._first_start is None:
                self._first_start = now  # the scheduler began: nothing waits before this
            ready, waited_for = self._first_start, None
            for dep in self._edges.get(name, ()):
                done = self._done.get(dep)
                if done is not None and done.end >= ready:
                    ready, waited_for = done.end, dep
            self._open[name] = _Open(name, lane, min(ready, now), now, waited_for)

    def phase(self, name: str, phase: str) -> None:
        now = self._now()
        with self._lock:
            run = self._open.get(name)
            if run is None:
                return
            run.phases[-1].end = now
            run.phases.append(PhaseRecord(name=phase, start=now, end=now))

    def finish(self, name: str, outcome: str, seconds: float) -> None:
        now = self._now()
        with self._lock:
            run = self._open.pop(name, None)
            if run is None:
                return
            failed = outcome != "built"
            self._close(run, now, "failed" if failed else "built")

    def _close(self, run: _Open, now: float,
               outcome: Literal["built", "failed", "interrupted"]) -> None:
        last = run.phases[-1]
        last.end = now
        if outcome != "built":
            last.outcome = "failed" if outcome == "failed" else "interrupted"
        self._done[run.name] = PackageRecord(
            name=run.name, lane=run.lane, ready=run.ready, start=run.start, end=now,
            outcome=outcome, waited_for=run.waited_for, phases=run.phases)
        self._free.append(run.lane)
        self._free.sort()

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self._stop.set()

    # -- the executor side ----------------------------------------------------

    def usage(self, package: str, phase: str, usage: Usage) -> None:
        """What one phase's processes used (the executor's usage_sink)."""
        with self._lock:
            run = self._open.get(package)
            if run is None:
                return
            for step in reversed(run.phases):
                if step.name == phase:
                    step.cpu_seconds = round(usage.cpu_seconds, 3)
                    step.peak_rss_kib = usage.peak_rss_kib
                    return

    # -- load -----------------------------------------------------------------

    def _sample_loop(self) -> None:
        while not self._stop.wait(self._sample_every):
            self._sample()

    def _sample(self) -> None:
        try:
            load1 = os.getloadavg()[0]
        except OSError:
            return
        now_cpu = _cpu_times()
        busy = None
        if self._cpu_before is not None and now_cpu is not None:
            total = now_cpu[0] - self._cpu_before[0]
            idle = now_cpu[1] - self._cpu_before[1]
            busy = round(max(0.0, min(1.0, 1 - idle / total)), 3) if total > 0 else None
        self._cpu_before = now_cpu
        with self._lock:
            self._load.append(LoadSample(t=self._now(), load1=round(load1, 2), busy=busy))
            if len(self._load) > MAX_LOAD_SAMPLES:
                self._load = self._load[::2]
                self._sample_every *= 2

    # -- the end --------------------------------------------------------------

    def record(self, *, outcome: Literal["ok", "failed", "interrupted"],
               blocked: Mapping[str, str] | None = None, not_started: Sequence[str] = (),
               critical_path: Sequence[str] = (), critical_path_seconds: float = 0.0,
               farm: Mapping[str, FarmShare] | None = None) -> RunRecord:
        """The run so far; packages still running count as interrupted now."""
        self._sample()
        now = self._now()
        with self._lock:
            for run in list(self._open.values()):
                self._close(run, now, "interrupted")
            self._open.clear()
            packages = sorted(self._done.values(), key=lambda p: (p.start, p.name))
            for pkg in packages:
                if farm and pkg.name in farm:
                    pkg.farm = farm[pkg.name]
            return RunRecord(
                run_id=self.run_id, started_at=self._started.isoformat(timespec="seconds"),
                elapsed=now, outcome=outcome, packages=packages, up_to_date=self._up_to_date,
                blocked=dict(blocked or {}), not_started=list(not_started),
                critical_path=list(critical_path),
                critical_path_seconds=round(critical_path_seconds, 3),
                load=list(self._load), **self._meta)  # type: ignore[arg-type]

    def save(self, record: RunRecord) -> Path:
        """Write the record (temp then rename), keep only the newest KEEP_REPORTS."""
        self.close()
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        path = write_atomic(self.reports_dir / f"{record.run_id}.json",
                            record.model_dump_json(indent=1) + "\n")
        prune(self.reports_dir)
        return path


def _cpu_times() -> tuple[float, float] | None:
    """(all jiffies, idle + iowait jiffies) from /proc/stat's first line."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu":
        return None
    values = [float(v) for v in fields[1:9]]
    return sum(values), values[3] + values[4]


def reports(reports_dir: Path) -> list[Path]:
    """The stored run records, oldest first (run ids start with their UTC time)."""
    if not reports_dir.is_dir():
        return []
    return sorted((p for p in reports_dir.glob("*.json") if not p.name.startswith(".")),
                  key=lambda p: p.name)


def prune(reports_dir: Path, keep: int = KEEP_REPORTS) -> None:
    """Remove all but the newest `keep` records and their pages."""
    for old in reports(reports_dir)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".html").unlink(missing_ok=True)


def find_report(reports_dir: Path, run: str | None) -> Path:
    """The record of `run` (a run id, a prefix of one, or a path); the newest if None."""
    if run is not None and (run.endswith(".json") or "/" in run):
        path = Path(run)
        if not path.is_file():
            raise UsageError(f"{run}: no such report", hint="iglubuild report --list shows them")
        return path
    stored = reports(reports_dir)
    if run is None:
        if not stored:
            raise UsageError(f"no run recorded in {reports_dir}",
                             hint="`iglubuild world` or `iglubuild pkg NAME` records one")
        return stored[-1]
    matches = [p for p in stored if p.stem.startswith(run)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise UsageError(f"{what} matching {run!r} in {reports_dir}",
                         hint="iglubuild report --list shows them")
    return matches[0]


def load_report(path: Path) -> RunRecord:
    """Read and validate a record; a bad or oversized file is a one-line error."""
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise UsageError(f"{path}: {size} bytes, more than a run record may have "
                             f"({MAX_REPORT_BYTES})", hint="is this a run record?")
        return RunRecord.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "top level"
        raise UsageError(f"{path}: not a run record ({where}: {first['msg']})",
                         hint="records are written by world/pkg; remove this one") from exc
