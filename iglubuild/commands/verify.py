"""`iglubuild verify NAME... | --world`: rebuild under perturbations, compare byte for byte.

See iglubuild.verify for what is perturbed and how the results are compared.
The build dir's own build is the reference (built first when missing or
outdated); the rebuild goes to `<build-dir>/verify/<run>/perturbed-build-path`,
whose work folders and sysroots are removed afterwards (its packages and
logs stay for inspection; only the newest KEEP_RUNS verify runs are kept).
Exit 0 only when every package matched (or differs for a reason its recipe
states); `--json` prints the verdicts for CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from iglubuild.commands._common import load, say
from iglubuild.errors import EXIT_BUILD_FAILED, EXIT_OK, UsageError
from iglubuild.settings import Settings

NAME = "verify"
HELP = "rebuild packages under perturbations and prove they come out byte for byte the same"
KEEP_RUNS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="packages (recipes) to verify")
    parser.add_argument("--world", action="store_true",
                        help="verify everything that builds here (dependencies rebuilt too)")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="when the first build fails, verify what did build")


def _build_args(args: argparse.Namespace, force: list[str]) -> argparse.Namespace:
    # --world means what builds here: sources nobody verified are left out as
    # with `world --keep-going`; the rebuild (force) goes on past a failure.
    return argparse.Namespace(dry_run=False,
                              keep_going=args.keep_going or args.world or bool(force),
                              force=force, from_phase=None, keep_work=False)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.commands._pkg_world import build
    from iglubuild.lock import BuildDirLock
    from iglubuild.plan import Result, StateStore
    from iglubuild.target import load_target
    from iglubuild.verify import (
        NOT_VARIED,
        PERTURBATIONS,
        Verdict,
        compare,
        outputs,
        perturbed_jobs,
        perturbed_process,
        run_diffoscope,
        run_id,
        seed_state,
        verdicts_json,
        write_verdicts,
    )

    if bool(args.names) == args.world:
        raise UsageError("name the packages to verify, or pass --world (not both)",
                         hint="iglubuild verify curl mksh, or iglubuild verify --world")
    tree, _ = load(settings)
    for name in args.names:
        if name not in tree.recipes:
            raise UsageError(f"{name}: no such recipe", hint="iglubuild graph lists them")
    names = list(args.names) or None
    say("verify: the reference build (this build dir; builds what is missing or outdated)")
    code = build(settings, _build_args(args, []), names)
    if code != EXIT_OK and not (args.keep_going or args.world):
        say("verify: the reference build failed; nothing verified "
            "(--keep-going verifies what did build)")
        return code
    state = StateStore(settings.build_dir)
    candidates = names or sorted(tree.recipes)
    built = [n for n in candidates
             if (r := state.load(n)) is not None and r.result == Result.BUILT]
    if not built:
        raise UsageError("nothing built to verify", hint="see the build's summary above")

    folder = settings.build_dir / "verify"
    rid = run_id()
    fresh = folder / rid / "perturbed-build-path"
    seed_state(settings.build_dir, fresh, built if names is None else names)
    perturbed = replace(settings, build_dir=fresh, distfiles=settings.distfiles_dir,
                        jobs=perturbed_jobs(settings.jobs))
    say(f"verify: rebuilding {len(built)} package(s) in {fresh} under: "
        + ", ".join(PERTURBATIONS) + f" (--jobs {perturbed.jobs})")
    with BuildDirLock(settings.build_dir), perturbed_process():
        build(perturbed, _build_args(args, list(built)), names)
    arch = load_target().arch
    fresh_state = StateStore(fresh)
    verdicts: list[Verdict] = []
    for name in built:
        record = fresh_state.load(name)
        if record is None or record.result != Result.BUILT:
            verdicts.append(Verdict(name, False, error=(
                f"see {fresh / 'logs' / (name + '.log')}" if record else "not rebuilt")))
            continue
        first = outputs(settings.packages_dir(arch), [name], state).get(name, [])
        second = outputs(perturbed.packages_dir(arch), [name], fresh_state).get(name, [])
        verdict = compare(name, first, second)
        verdict.known = tree.recipes[name].recipe.unreproducible
        if not verdict.reproducible:
            by_name = {p.name: p for p in second}
            for a in first:
                b = by_name.get(a.name)
                if b is not None and not next(
                        f.identical for f in verdict.files if f.name == a.name):
                    report = run_diffoscope(a, b, folder / rid / f"{name}.diffoscope.txt")
                    verdict.diffoscope = str(report) if report else None
                    break
        verdicts.append(verdict)
    for sub in ("work", "sysroots", "distfiles"):
        shutil.rmtree(fresh / sub, ignore_errors=True)
    _prune(folder)
    meta = {"run_id": rid, "reference": str(settings.build_dir), "rebuild": str(fresh),
            "jobs": [settings.jobs, perturbed.jobs]}
    write_verdicts(folder / rid / "verdicts.json", verdicts, meta)
    if args.json:
        json.dump(verdicts_json(verdicts, meta), sys.stdout, indent=1)
        print()
    for verdict in verdicts:
        for line in verdict.lines():
            say(line)
    good = sum(v.reproducible for v in verdicts)
    known = sum(1 for v in verdicts if not v.reproducible and v.known)
    say(f"verify: {good} of {len(verdicts)} reproducible"
        + (f", {known} known exception(s)" if known else "")
        + f"; not varied: {'; '.join(NOT_VARIED)}; verdicts in {folder / rid / 'verdicts.json'}")
    return EXIT_OK if all(v.ok for v in verdicts) else EXIT_BUILD_FAILED


def _prune(folder: Path) -> None:
    runs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
