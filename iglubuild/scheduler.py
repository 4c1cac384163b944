"""Run the outdated packages of a plan, in parallel, in dependency order.

The scheduler knows nothing about how or where a package is built: it is
handed `build_one(name)`, which builds one package (through whatever executor
the caller chose) and raises BuildError on failure. It may return the paths
of the artifacts it wrote; they go into the state record so a deleted
artifact makes the package outdated again.

- Up to `jobs` builds run at once, each in a worker thread (the work itself
  is done by subprocesses, so threads are enough). A package is started as
  soon as its last dependency finishes; among ready packages the one heading
  the longest remaining chain (by last known build time) goes first.
- A failure blocks its dependents. Without `keep_going` nothing new is
  started after a failure (running builds finish and are recorded); with it,
  everything not depending on the failure is still built.
- With a `Jobserver`, a build holds one token for as long as it runs (see
  iglubuild.jobserver), so packages and their makes share one budget.
- Ctrl-C (KeyboardInterrupt in the main thread): nothing new starts, every
  `terminators` callback is called (each executor's `terminate()`), the
  workers are waited for, and KeyboardInterrupt is raised again for the CLI
  (exit 130). Interrupted packages get no record, so the next run builds
  them again and skips everything finished.
- After each package the state record is written (temporary file + rename)
  from the main thread only, so records are never half-written or racing.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iglubuild.errors import EXIT_BUILD_FAILED, EXIT_OK, BuildError, IglubuildError
from iglubuild.jobserver import Jobserver
from iglubuild.plan import Plan, Result, StateStore, longest_path
from iglubuild.progress import NullProgress, Progress

BuildOne = Callable[[str], "Iterable[str | Path] | None"]
POLL = 0.2  # seconds between progress refreshes while waiting for builds
# Lines of a failed package's log shown in the run's summary (the log has all).
SUMMARY_TAIL_LINES = 10


@dataclass
class Failure:
    """Why one package failed: the error's message, hint, and its log and work folder."""

    name: str
    message: str
    hint: str | None = None
    log: Path | None = None
    work_dir: Path | None = None
    tail: list[str] = field(default_factory=list)  # the log's last lines
    error: BaseException | None = field(default=None, repr=False)


@dataclass
class Summary:
    """What a run did. `exit_code` is 1 if anything failed, else 0."""

    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # up to date
    failed: dict[str, Failure] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # name -> failed dep blocking it
    not_started: list[str] = field(default_factory=list)  # left out after a failure
    durations: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    critical_path: list[str] = field(default_factory=list)
    critical_path_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_BUILD_FAILED

    def lines(self) -> list[str]:
        """A human summary for the end of `iglubuild world`."""
        out = [f"built {len(self.built)}, up to date {len(self.skipped)}, "
               f"failed {len(self.failed)}, blocked {len(self.blocked)}"
               + (f", not started {len(self.not_started)}" if self.not_started else "")
               + f" in {self.elapsed:.1f} s"]
        if self.critical_path:
            out.append(f"critical path {self.critical_path_seconds:.1f} s: "
                       + " -> ".join(self.critical_path))
        for f in self.failed.values():
            where = f" (log {f.log})" if f.log else ""
            out.append(f"failed: {f.name}: {f.message}{where}")
            out.extend(f"  | {line}" for line in f.tail)
        for name, cause in self.blocked.items():
            out.append(f"blocked: {name} (needs {cause})")
        return out


def failure_from(name: str, exc: BaseException) -> Failure:
    """What the summary keeps of an error: message, hint, and a BuildError's log and tail."""
    if isinstance(exc, IglubuildError):
        message, hint = exc.message, exc.hint
    else:
        message, hint = f"{type(exc).__name__}: {exc}", None
    if isinstance(exc, BuildError):
        return Failure(name=name, message=message, hint=hint, log=exc.log,
                       work_dir=exc.work_dir, tail=exc.tail[-SUMMARY_TAIL_LINES:], error=exc)
    return Failure(name=name, message=message, hint=hint, error=exc)


class _Run:
    """The state of one scheduler run (kept off the public surface)."""

    def __init__(self, plan: Plan, build_one: BuildOne, jobs: int, keep_going: bool,
                 state: StateStore | None, jobserver: Jobserver | None, progress: Progress,
                 terminators: Sequence[Callable[[], None]]) -> None:
        self.plan = plan
        self.build_one = build_one
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.state = state
        self.jobserver = jobserver
        self.progress = progress
        self.terminators = terminators
        self.stop = threading.Event()
        self.summary = Summary(skipped=plan.up_to_date())
        todo = plan.to_build()
        self.index = {n: i for i, n in enumerate(todo)}
        self.waiting = {n: set(d) for n, d in plan.build_edges().items()}
        self.dependents: dict[str, list[str]] = {n: [] for n in todo}
        for name, deps in self.waiting.items():
            for dep in deps:
                self.dependents[dep].append(name)
        self.priority = plan.remaining_paths()
        self.ready: list[tuple[float, int, str]] = []
        self.running: dict[Future[Any], str] = {}
        self.finished_at: dict[str, float] = {}
        for name in todo:
            if not self.waiting[name]:
                self._push(name)

    def _push(self, name: str) -> None:
        heapq.heappush(self.ready, (-self.priority[name], self.index[name], name))

    def _work(self, name: str) -> tuple[float, Iterable[str | Path] | None]:
        """Runs in a worker thread: hold a jobserver token, build, give the token back."""
        if self.jobserver is not None and not self.jobserver.acquire(self.stop):
            raise _Cancelled()
        try:
            if self.stop.is_set():
                raise _Cancelled()
            self.progress.start(name)
            start = time.monotonic()
            artifacts = self.build_one(name)
            return time.monotonic() - start, artifacts
        finally:
            if self.jobserver is not None:
                self.jobserver.release()

    def run(self) -> Summary:
        start = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="build")
        try:
            self._loop(pool)
        except BaseException:
            # Ctrl-C, or a failure of our own (say, the disk is full while
            # writing a record): either way stop the builds before leaving.
            self._interrupt()
            raise
        finally:
            pool.shutdown(wait=True)
            self.progress.close()
        self.summary.elapsed = time.monotonic() - start
        durations = self.summary.durations
        edges = {n: [d for d in deps if d in durations]
                 for n, deps in self.plan.build_edges().items() if n in durations}
        path, seconds = longest_path(edges, self.summary.durations)
        self.summary.critical_path, self.summary.critical_path_seconds = path, seconds
        return self.summary

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        while True:
            while self.ready and len(self.running) < self.jobs and not self.stop.is_set():
                _, _, name = heapq.heappop(self.ready)
                self.running[pool.submit(self._work, name)] = name
            if not self.running:
                break
            done, _ = wait(list(self.running), timeout=POLL, return_when=FIRST_COMPLETED)
            self.progress.tick()
            for fut in done:
                self._finish(self.running.pop(fut), fut)
            if not self.running and self.jobserver is not None:
                # Nothing holds a token now: undo any loss from a killed make.
                self.jobserver.reset()
        done_or_out = set(self.summary.built) | set(self.summary.failed) | set(self.summary.blocked)
        self.summary.not_started = [n for n in self.plan.to_build() if n not in done_or_out]

    def _finish(self, name: str, fut: Future[Any]) -> None:
        exc = fut.exception()
        pkg = self.plan.packages[name]
        if exc is None:
            seconds, artifacts = fut.result()
            self.summary.built.append(name)
            self.summary.durations[name] = seconds
            if self.state is not None:
                self.state.write(pkg.new_record(Result.BUILT, duration=seconds,
                                                artifacts=[str(a) for a in artifacts or ()]))
            self.progress.finish(name, "built", seconds)
            for dep in self.dependents[name]:
                self.waiting[dep].discard(name)
                if not self.waiting[dep] and dep not in self.summary.blocked:
                    self._push(dep)
            return
        if isinstance(exc, _Cancelled):
            return
        failure = failure_from(name, exc)
        self.summary.failed[name] = failure
        if self.state is not None:
            self.state.write(pkg.new_record(Result.FAILED, duration=0.0,
                                            log=str(failure.log) if failure.log else None))
        self.progress.finish(name, "FAILED" + (f", log {failure.log}" if failure.log else ""),
                             0.0)
        self._block_dependents(name)
        if not self.keep_going:
            self.stop.set()

    def _block_dependents(self, failed: str) -> None:
        stack = list(self.dependents[failed])
        while stack:
            name = stack.pop()
            if name in self.summary.blocked:
                continue
            self.summary.blocked[name] = failed
            stack.extend(self.dependents[name])

    def _interrupt(self) -> None:
        """Stop everything, wait for the workers, record what did finish."""
        self.stop.set()
        while self.running:
            # Terminate again on every round: a builder may have been between
            # two phases at the first call and started the next one since.
            self._terminate()
            try:
                done, _ = wait(list(self.running), timeout=POLL, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                continue  # a second Ctrl-C: we are already stopping; still wait
            for fut in done:
                name = self.running.pop(fut)
                # A build that completed before the terminate is a real,
                # complete artifact: record it. Failures now are our kills.
                if fut.exception() is None:
                    self._finish(name, fut)

    def _terminate(self) -> None:
        for terminate in self.terminators:
            try:
                terminate()
            except Exception:  # noqa: BLE001 - one broken executor must not stop the others
                pass


class _Cancelled(Exception):
    """A worker that never started its build because the run was stopping."""


def run_plan(
    plan: Plan,
    build_one: BuildOne,
    *,
    jobs: int,
    keep_going: bool = False,
    state: StateStore | None = None,
    jobserver: Jobserver | None = None,
    progress: Progress | None = None,
    terminators: Sequence[Callable[[], None]] = (),
) -> Summary:
    """Build every package of `plan` that needs it; return what happened.

    `state` receives a record per finished package (pass the same StateStore
    the plan was made from). Raises KeyboardInterrupt after a clean stop on
    Ctrl-C; build failures are in the Summary, never raised.
    """
    return _Run(plan, build_one, jobs, keep_going, state, jobserver,
                progress or NullProgress(), terminators).run()
