"""`iglubuild status [NAME...]`: which packages are built, outdated (and why), failed.

Read-only: it computes the plan exactly as a build would (input signatures
against the records in <build-dir>/state/) and prints it, so "outdated
(dependency zlib changed)" here means a build would rebuild it for that reason.
It takes no lock: records are only ever replaced by rename, never half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from iglubuild.commands._common import load
from iglubuild.settings import Settings

if TYPE_CHECKING:
    from iglubuild.plan import Plan

NAME = "status"
HELP = "show which packages are built, outdated (and why), failed or never built"

# By plan.Status value (a StrEnum, so its members find these keys); plain strings
# keep iglubuild.plan out of every command's start-up.
LABELS = {
    "up-to-date": "built",
    "outdated": "outdated",
    "never-built": "never built",
    "failed": "failed",
    "forced": "forced",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="packages to show (default: every recipe)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def current_toolchain_id(settings: Settings) -> str:
    """The toolchain id a build would use now (`Executor.toolchain_id()`)."""
    from iglubuild.executors import make_executor

    return make_executor(settings).toolchain_id()


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.plan import StateStore, make_plan

    tree, graph = load(settings)
    state = StateStore(settings.build_dir)
    toolchain = current_toolchain_id(settings)
    names = args.names or None
    plan = make_plan(tree, graph, toolchain, state, names=names)
    shown = [graph.providers[n][0] for n in args.names] if args.names else plan.order
    repo = _repository(settings)
    if args.json:
        from iglubuild.distcc import last_tally

        doc = status_json(plan, shown)
        farm = last_tally(settings.build_dir) or {}
        farmed = farm.get("packages")
        farmed = farmed if isinstance(farmed, dict) else {}
        for item in doc:
            entry = repo.get(str(item["name"]))
            item["repository"] = entry.get("pkgver") if entry else None
            # Where its compiles ran in the last --farm run, if it was built there.
            share = farmed.get(str(item["name"]))
            item["farm"] = ({"run_finished": farm.get("finished"), **share}
                            if isinstance(share, dict) else None)
        print(json.dumps(doc, indent=2))
    else:
        for line in status_lines(plan, shown):
            print(line)
        counts: dict[str, int] = {}
        for name in shown:
            label = LABELS[plan.packages[name].status]
            counts[label] = counts.get(label, 0) + 1
        print(f"{len(shown)} package(s): "
              + ", ".join(f"{n} {label}" for label, n in counts.items()), file=sys.stderr)
        if repo:
            print(f"xbps repository: {len(repo)} package(s) in {settings.packages_dir()}",
                  file=sys.stderr)
    return 0


def _repository(settings: Settings) -> dict[str, dict[str, object]]:
    """The xbps repository index of the packages folder ({} before the first build)."""
    from iglubuild.xbps import XbpsError, read_repodata

    try:
        return read_repodata(settings.packages_dir())
    except XbpsError:
        return {}  # a broken index is rewritten by the next build; status stays read-only


def status_lines(plan: Plan, names: list[str]) -> list[str]:
    """`curl  7.88.1-r1  outdated (dependency zlib changed)`, aligned."""
    width = max((len(n) for n in names), default=0)
    vwidth = max((len(plan.packages[n].version) for n in names), default=0)
    lines = []
    for name in names:
        pkg = plan.packages[name]
        text = LABELS[pkg.status]
        if pkg.reasons:
            text += f" ({', '.join(pkg.reasons)})"
        lines.append(f"{name:<{width}}  {pkg.version:<{vwidth}}  {text}")
    return lines


def status_json(plan: Plan, names: list[str]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for name in names:
        pkg = plan.packages[name]
        record = pkg.record
        out.append({
            "name": name,
            "version": pkg.version,
            "status": LABELS[pkg.status],
            "reasons": pkg.reasons,
            "signature": pkg.signature,
            "last_result": record.result if record else None,
            "last_finished": record.finished if record else None,
            "last_duration": record.duration if record else None,
            "log": record.log if record else None,
            "artifacts": record.artifacts if record else [],
        })
    return out
