"""One build session, start to end: lock, plan, jobserver, progress, scheduler, summary.

`world` and `pkg` differ only in the names they pass, so both call
`run_build`. It knows nothing of how a package is built: the caller hands in
the toolchain id (from its executor) and a `make_builder` factory that gets
the plan, the shared jobserver and the phase callback and returns the
`build_one` callable plus the `terminate` callbacks to use on Ctrl-C.

    def make_builder(ctx: BuildContext) -> Builder:
        engine = Engine(settings, executor, tree, ctx.plan, jobserver=ctx.jobserver,
                        on_phase=ctx.on_phase)
        executor.usage_sink = ctx.on_usage
        return Builder(engine.build_one, [executor.terminate])

    return run_build(settings, tree, graph, executor.toolchain_id(), make_builder,
                     names=args.names, force=args.force, keep_going=args.keep_going,
                     dry_run=args.dry_run, command="world", executor=executor.name)

Every run that builds something leaves a record of its timeline in
`<build-dir>/reports/` (iglubuild.runrecord); the summary names it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from iglubuild.errors import EXIT_OK
from iglubuild.executor import UsageSink
from iglubuild.graph import DepGraph
from iglubuild.jobserver import Jobserver
from iglubuild.lock import BuildDirLock
from iglubuild.plan import Plan, StateStore, make_plan
from iglubuild.progress import Progress, TeeProgress, make_progress
from iglubuild.recipe import RecipeTree
from iglubuild.runrecord import FarmShare, RunRecorder
from iglubuild.scheduler import BuildOne, Summary, run_plan
from iglubuild.settings import Settings
from iglubuild.stale import clean_stale


@dataclass(frozen=True)
class BuildContext:
    """What a builder gets for one run."""

    plan: Plan  # plan.packages[name].signature goes into artifact metadata
    jobserver: Jobserver  # .env() into the phase environment, .pass_fds to Popen
    on_phase: Callable[[str, str], None]  # on_phase(name, phase) at each phase change
    on_usage: UsageSink | None = None  # the executor's usage_sink: the run's record


@dataclass(frozen=True)
class Builder:
    """How to build one package, how to stop, and what the builder adds to the
    summary (e.g. the farm's share of the compiles), printed after it."""

    build_one: BuildOne
    terminators: Sequence[Callable[[], None]] = ()
    summary: Callable[[], Sequence[str]] | None = None
    # Each package's share of the farm's compiles, for the run's record.
    farm_shares: Callable[[], Mapping[str, FarmShare]] | None = None


def run_build(
    settings: Settings,
    tree: RecipeTree,
    graph: DepGraph,
    toolchain_id: str,
    make_builder: Callable[[BuildContext], Builder],
    *,
    names: Iterable[str] | None = None,
    force: Iterable[str] = (),
    keep_going: bool = False,
    dry_run: bool = False,
    command: str = "build",
    executor: str = "host",
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Build the closure of `names` (everything if None); return the exit code.

    `command` and `executor` are written into the run's record.

    Raises LockError if another iglubuild uses the build dir, and
    KeyboardInterrupt (exit 130 at the CLI) after a clean stop on Ctrl-C or
    SIGTERM.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    with BuildDirLock(settings.build_dir), _pinned_umask():
        clean_stale(settings)  # temporaries of a killed run; we hold the lock now
        state = StateStore(settings.build_dir)
        plan = make_plan(tree, graph, toolchain_id, state, names=names, force=force)
        if dry_run:
            for line in plan.describe_dry_run():
                print(line, file=out)
            return EXIT_OK
        todo = plan.to_build()
        if not todo:
            print(f"nothing to do: {len(plan.packages)} package(s) up to date", file=err)
            return EXIT_OK
        recorder = RunRecorder(settings.build_dir / "reports", command=command,
                               jobs=settings.jobs, executor=executor,
                               edges=plan.build_edges(), up_to_date=plan.up_to_date())
        builder: Builder | None = None
        summary: Summary | None = None
        try:
            with Jobserver(settings.jobs) as jobserver, _sigterm_as_interrupt():
                progress: Progress = TeeProgress(
                    make_progress(len(todo), settings.jobs, err), recorder)
                builder = make_builder(BuildContext(plan, jobserver, progress.phase,
                                                    recorder.usage))
                summary = run_plan(plan, builder.build_one, jobs=settings.jobs, state=state,
                                   jobserver=jobserver, progress=progress,
                                   terminators=builder.terminators, keep_going=keep_going)
        finally:
            saved = _save_record(recorder, summary, builder, err)
        report(summary, err)
        if builder.summary is not None:
            for line in builder.summary():
                print(line, file=err)
        if saved is not None:
            print(f"report: {saved} (iglubuild report for the page)", file=err)
        return summary.exit_code


def _save_record(recorder: RunRecorder, summary: Summary | None, builder: Builder | None,
                 err: IO[str]) -> Path | None:
    """Write the run's record; a record that cannot be written costs a warning, not the run."""
    farm = builder.farm_shares() if builder is not None and builder.farm_shares else None
    if summary is None:
        record = recorder.record(outcome="interrupted", farm=farm)
    else:
        record = recorder.record(
            outcome="ok" if summary.ok else "failed", blocked=summary.blocked,
            not_started=summary.not_started, critical_path=summary.critical_path,
            critical_path_seconds=summary.critical_path_seconds, farm=farm)
    try:
        return recorder.save(record)
    except OSError as exc:
        print(f"warning: the run's record was not written: {exc}", file=err)
        return None


def report(summary: Summary, err: IO[str]) -> None:
    for line in summary.lines():
        print(line, file=err)
    for failure in summary.failed.values():
        if failure.hint:
            print(f"hint: {failure.hint}", file=err)


# What iglubuild creates for a build (unpacked sources, $pkgdir, work folders)
# gets modes from this umask, not the user's (`iglubuild verify` runs its
# rebuild under another umask to prove it does not leak into packages).
BUILD_UMASK = 0o022


@contextmanager
def _pinned_umask() -> Iterator[None]:
    old = os.umask(BUILD_UMASK)
    try:
        yield
    finally:
        os.umask(old)


class _sigterm_as_interrupt:  # noqa: N801 - used as a context manager
    """Treat SIGTERM like Ctrl-C while building.

    Phases run in their own sessions, so if iglubuild simply died on SIGTERM
    they would go on running with nobody to collect them. Raising
    KeyboardInterrupt instead takes the same clean path as Ctrl-C.
    """

    def __enter__(self) -> None:
        self._previous: Any = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None

    @staticmethod
    def _handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
