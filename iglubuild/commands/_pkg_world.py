"""What `world` and `pkg` share: fetch, then build the plan with the chosen executor.

The data flow of one run: recipe tree and graph -> plan (signatures; what is up
to date) -> fetch the sources of what must be built -> scheduler -> one
`Engine.build_one` per package, through the executor -> repository index.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from iglubuild.commands._common import load, say
from iglubuild.errors import FetchError, UsageError
from iglubuild.executor import PHASES
from iglubuild.settings import Settings

if TYPE_CHECKING:  # world and pkg are imported at every start-up; the engine loads on use
    from iglubuild.distcc import FarmHosts
    from iglubuild.executor import Executor
    from iglubuild.farmnet import FarmNet
    from iglubuild.graph import DepGraph
    from iglubuild.recipe import RecipeTree
    from iglubuild.session import BuildContext, Builder


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every building verb takes."""
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (waves, critical path, what is up to date) only")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="after a failure, build everything that does not depend on it")
    parser.add_argument("--force", action="append", default=[], metavar="NAME",
                        help="rebuild NAME even if it is up to date (repeatable)")
    parser.add_argument("--from", dest="from_phase", choices=PHASES, metavar="PHASE",
                        help="resume kept work folders at PHASE (" + ", ".join(PHASES) + ")")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the work folders of successful builds too")


def _fetch(settings: Settings, tree: RecipeTree, names: Sequence[str],
           keep_going: bool) -> dict[str, str]:
    """Download and verify the sources of the packages about to be built.

    Without keep_going a source that cannot be had stops the run before any
    build starts (exit 3). With it, the problems are returned by package, so
    those packages fail and their dependents are blocked while the rest builds.
    What was downloaded stays in the cache either way.
    """
    from iglubuild.fetch import fetch_sources

    items = [(name, src) for name in names for src in tree[name].recipe.sources
             if src.is_remote]
    if not items:
        return {}
    report = fetch_sources(items, settings, check=not keep_going)
    if report.downloaded:
        say(f"fetched {len(report.downloaded)} source(s), {len(report.reused)} already cached")
    problems: dict[str, str] = {}
    for outcome in report.failed:
        problems.setdefault(outcome.package, f"{outcome.filename}: {outcome.problem}")
    return problems


def _leave_out(tree: RecipeTree, graph: DepGraph, names: Sequence[str] | None,
               keep_going: bool) -> tuple[list[str] | None, list[str]]:
    """Leave out what cannot be built here: recipes marked `left_out: why`, and
    packages whose sources nobody has verified yet.

    Returns the names to build instead of `names` (None: unchanged) and the
    lines that say what was left out and why, for the run's summary. A left-out
    recipe is a decision written in the recipe, so `world` goes on without it;
    naming one (or something that needs one) to `pkg` is an error. An
    unverified source in the closure is an error without --keep-going.
    """
    order = graph.order(names)
    closure = set(order)
    declared = {n: tree[n].recipe.left_out for n in order if tree[n].recipe.left_out}
    unverified = sorted(n for n in closure - set(declared)
                        if any(s.unverified is not None for s in tree[n].recipe.sources))
    if not declared and not unverified:
        return None, []
    if names is not None and declared:
        first = sorted(declared)[0]
        needs = sorted(n for n in names if n in graph.dependents(declared) or n in declared)
        if needs and not keep_going:
            raise UsageError(
                f"{', '.join(needs)}: cannot be built here: {first} is left out "
                f"({declared[first]})",
                hint=f"its recipe says `left_out:`; remove that line from {first}'s recipe "
                     "to try, or add --keep-going to build the rest")
    if unverified and not keep_going:
        raise FetchError(
            f"source not verified: {', '.join(unverified)}",
            hint=f"run `iglubuild checksum {' '.join(unverified)}` where the files are "
                 "reachable, or add --keep-going to build everything else")
    out = set(declared) | set(unverified)
    blocked = sorted((graph.dependents(out) & closure) - out)
    lines = [f"left out: {n} ({why})" for n, why in sorted(declared.items())]
    if unverified:
        lines.append(f"not verified (left out): {' '.join(unverified)}")
    if blocked:
        lines.append(f"blocked by them: {' '.join(blocked)}")
    for line in lines:
        say(line)
    keep = closure - out - set(blocked)
    return [n for n in order if n in keep], lines


def _left_out_reasons(hosts: FarmHosts) -> str:
    """Why `discover` left volunteers out, counted: "2 down, 1 different compiler"."""
    counts: dict[str, int] = {}
    for v in hosts.excluded:
        reason = ("down" if v.state == "down"
                  else "different compiler" if v.identity is not None else "probe failed")
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def _farm(settings: Settings) -> tuple[Settings, FarmHosts | None]:
    """With --farm: the live farm's usable volunteers, and a job budget sized to
    the farm; without a farm running, a local build as asked."""
    if not settings.farm:
        return settings, None
    from iglubuild.farm import discover

    hosts = discover(settings)
    if hosts is None:
        say("no distcc farm is running: building locally (start one with `iglubuild farm up`)")
        return settings, None
    say(f"distcc farm: {len(hosts.volunteers)} volunteer(s), {hosts.jobs} compile jobs"
        + (f", {len(hosts.excluded)} left out ({_left_out_reasons(hosts)})"
           if hosts.excluded else ""))
    return replace(settings, jobs=max(settings.jobs, hosts.jobs)), hosts


def _farm_phases(settings: Settings, hosts: FarmHosts | None,
                 net: FarmNet | None) -> tuple[tuple[str, ...], dict[str, str], dict[str, str]]:
    """(launcher, extra_env, aliases) for the phases of a --farm run.

    With the farm's network (iglubuild.farmnet) DISTCC_HOSTS names its relays,
    and `aliases` maps them back to the volunteers for the compile tally.
    """
    if hosts is None:
        return (), {}, {}
    from iglubuild.distcc import phase_additions, queued

    launcher, env = phase_additions(hosts, distcc_dir=settings.build_dir / "distcc")
    # Each volunteer is offered one compile more than it runs: the next one
    # waits there ready (iglubuild.distcc.queued).
    if net is None:
        env["DISTCC_HOSTS"] = queued(env["DISTCC_HOSTS"])
        return launcher, env, {}
    env["DISTCC_HOSTS"] = queued(net.distcc_hosts)
    return launcher, env, dict(net.aliases)


def build(settings: Settings, args: argparse.Namespace, names: Sequence[str] | None) -> int:
    """Build the closure of `names` (everything if None); return the exit code."""
    from iglubuild.executors import make_executor
    from iglubuild.farmnet import farm_network

    if settings.signing_key is not None and not args.dry_run:
        from iglubuild.xbps import public_key

        public_key(settings.signing_key)  # a bad key fails now, not after the builds
    command = "world" if names is None else "pkg"
    tree, graph = load(settings)
    selected, left_out = _leave_out(tree, graph, names, args.keep_going)
    if selected is not None:
        names = selected
        if not names:
            say("nothing can be built here until what is left out can be built")
            return 0
    hosts = None
    if not args.dry_run:
        settings, hosts = _farm(settings)
    executor = make_executor(settings)
    if not args.dry_run:
        executor.check()
    with ExitStack() as stack:
        # Phases that compile on the farm reach its volunteers through the
        # farm's own network namespace and nothing else; it lasts the run.
        net = (stack.enter_context(farm_network(executor, hosts.volunteers))
               if hosts is not None else None)
        return _build(settings, args, names, command, tree, graph, left_out, executor,
                      hosts, net)


def _build(settings: Settings, args: argparse.Namespace, names: Sequence[str] | None,
           command: str, tree: RecipeTree, graph: DepGraph, left_out: list[str],
           executor: Executor, hosts: FarmHosts | None, net: FarmNet | None) -> int:
    """The run itself, while the farm's network `net` (if any) is open."""
    from iglubuild.distcc import CompileRecorder
    from iglubuild.package import write_index
    from iglubuild.session import Builder, run_build
    from iglubuild.target import load_target

    launcher, extra_env, aliases = _farm_phases(settings, hosts, net)
    target = load_target()
    # With the farm, where each package's compiles ran, noted after its phases.
    compiles = (CompileRecorder(aliases, [f"{v.address}:{v.port}" for v in hosts.volunteers])
                if hosts is not None and "DISTCC_HOSTS" in extra_env else None)

    def make_builder(ctx: BuildContext) -> Builder:
        from iglubuild.build import Engine

        unfetched = _fetch(settings, tree, ctx.plan.to_build(), args.keep_going)
        engine = Engine(settings, executor, tree, ctx.plan, jobserver=ctx.jobserver,
                        on_phase=ctx.on_phase, target=target, keep_work=args.keep_work,
                        from_phase=args.from_phase, launcher=launcher, extra_env=extra_env,
                        steps=[compiles] if compiles is not None else [],
                        netns=net.namespace if net is not None else None)
        executor.usage_sink = ctx.on_usage

        def build_one(name: str) -> list[Path]:
            if name in unfetched:
                raise FetchError(f"{name}: source not available: {unfetched[name]}")
            return engine.build_one(name)

        return Builder(build_one, [executor.terminate],
                       summary=compiles.summary_lines if compiles is not None else None,
                       farm_shares=compiles.shares if compiles is not None else None)

    try:
        code = run_build(settings, tree, graph, executor.toolchain_id(), make_builder,
                         names=names, force=args.force, keep_going=args.keep_going,
                         dry_run=args.dry_run, command=command,
                         executor=executor.name)
    finally:
        if compiles is not None:  # for `status --json`, also after a failed run
            try:
                compiles.save(settings.build_dir)
            except OSError as exc:
                say(f"warning: the farm's compile tally was not written: {exc}")
    if not args.dry_run:
        for line in left_out:  # again at the end, beside built/failed/blocked
            say(line)
    packages = settings.packages_dir(target.arch)
    if not args.dry_run and packages.is_dir():
        write_index(packages)
        from iglubuild.xbps import write_repository

        write_repository(packages, target.arch, signing_key=settings.signing_key)
    return code
