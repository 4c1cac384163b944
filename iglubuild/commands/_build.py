"""What `world` and `pkg` share: fetch, then build the plan with the chosen executor.

The data flow of one run: recipe tree and graph -> plan (signatures; what is up
to date) -> fetch the sources of what must be built -> scheduler -> one
`Engine.build_one` per package, through the executor -> repository index.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from iglubuild.build import PHASES
from iglubuild.buildrun import BuildContext, Builder, run_build
from iglubuild.commands._common import load, say
from iglubuild.settings import Settings


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


def _fetch(settings: Settings, tree, names: Sequence[str]) -> None:  # type: ignore[no-untyped-def]
    """Download and verify the sources of the packages about to be built."""
    try:
        from iglubuild.fetch import fetch_sources
    except ImportError:  # pragma: no cover - until the fetch stage is merged
        return
    items = [tree[name] for name in names]
    report = fetch_sources(items, settings)
    if getattr(report, "downloaded", None):
        say(f"fetched {len(report.downloaded)} source(s)")


def _farm_launcher(settings: Settings) -> tuple[tuple[str, ...], dict[str, str]]:
    """distcc launcher and environment from the live farm, or nothing."""
    if not settings.farm:
        return (), {}
    from iglubuild.farm import build_env

    return build_env(settings)


def build(settings: Settings, args: argparse.Namespace, names: Sequence[str] | None) -> int:
    """Build the closure of `names` (everything if None); return the exit code."""
    from iglubuild.executors import make_executor
    from iglubuild.package import write_index
    from iglubuild.target import load_target

    tree, graph = load(settings)
    executor = make_executor(settings)
    if not args.dry_run:
        executor.check()
    target = load_target()

    def make_builder(ctx: BuildContext) -> Builder:
        from iglubuild.build import Engine

        _fetch(settings, tree, ctx.plan.to_build())
        launcher, extra_env = _farm_launcher(settings)
        engine = Engine(settings, executor, tree, ctx.plan, jobserver=ctx.jobserver,
                        on_phase=ctx.on_phase, target=target, keep_work=args.keep_work,
                        from_phase=args.from_phase, launcher=launcher, extra_env=extra_env)
        return Builder(engine.build_one, [executor.terminate])

    code = run_build(settings, tree, graph, executor.toolchain_id(), make_builder,
                     names=names, force=args.force, keep_going=args.keep_going,
                     dry_run=args.dry_run)
    packages = settings.packages_dir(target.arch)
    if not args.dry_run and packages.is_dir():
        write_index(packages)
    return code
