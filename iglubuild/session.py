"""One build session, start to end: lock, plan, jobserver, progress, scheduler, summary.

`world` and `pkg` differ only in the names they pass, so both call
`run_build`. It knows nothing of how a package is built: the caller hands in
the toolchain id (from its executor) and a `make_builder` factory that gets
the plan, the shared jobserver and the phase callback and returns the
`build_one` callable plus the `terminate` callbacks to use on Ctrl-C.

    def make_builder(ctx: BuildContext) -> Builder:
        engine = Engine(settings, executor, tree, ctx.plan, jobserver=ctx.jobserver,
                        on_phase=ctx.on_phase)
        return Builder(engine.build_one, [executor.terminate])

    return run_build(settings, tree, graph, executor.toolchain_id(), make_builder,
                     names=args.names, force=args.force, keep_going=args.keep_going,
                     dry_run=args.dry_run)
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

from iglubuild.errors import EXIT_OK
from iglubuild.graph import DepGraph
from iglubuild.jobserver import Jobserver
from iglubuild.lock import BuildDirLock
from iglubuild.plan import Plan, StateStore, make_plan
from iglubuild.progress import Progress, make_progress
from iglubuild.recipe import RecipeTree
from iglubuild.scheduler import BuildOne, Summary, run_plan
from iglubuild.settings import Settings


@dataclass(frozen=True)
class BuildContext:
    """What a builder gets for one run."""

    plan: Plan  # plan.packages[name].signature goes into artifact metadata
    jobserver: Jobserver  # .env() into the phase environment, .pass_fds to Popen
    on_phase: Callable[[str, str], None]  # on_phase(name, phase) at each phase change


@dataclass(frozen=True)
class Builder:
    """How to build one package, how to stop, and what the builder adds to the
    summary (e.g. the farm's share of the compiles), printed after it."""

    build_one: BuildOne
    terminators: Sequence[Callable[[], None]] = ()
    summary: Callable[[], Sequence[str]] | None = None


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
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Build the closure of `names` (everything if None); return the exit code.

    Raises LockError if another iglubuild uses the build dir, and
    KeyboardInterrupt (exit 130 at the CLI) after a clean stop on Ctrl-C or
    SIGTERM.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    with BuildDirLock(settings.build_dir):
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
        with Jobserver(settings.jobs) as jobserver, _sigterm_as_interrupt():
            progress: Progress = make_progress(len(todo), settings.jobs, err)
            builder = make_builder(BuildContext(plan, jobserver, progress.phase))
            summary = run_plan(plan, builder.build_one, jobs=settings.jobs, state=state,
                               jobserver=jobserver, progress=progress,
                               terminators=builder.terminators, keep_going=keep_going)
        report(summary, err)
        if builder.summary is not None:
            for line in builder.summary():
                print(line, file=err)
        return summary.exit_code


def report(summary: Summary, err: IO[str]) -> None:
    for line in summary.lines():
        print(line, file=err)
    for failure in summary.failed.values():
        if failure.hint:
            print(f"hint: {failure.hint}", file=err)


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
