"""`iglubuild import PATH...` / `--tree DIR`: convert Iglunix build.sh files into recipes.

All scripts are converted in one process (a start-up per script cost 40x the
conversion itself). A summary table says, per script, where the recipe went,
how many TODOs it holds and what could not be resolved; the exit status is
non-zero only for scripts that could not be read (or whose recipe exists).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iglubuild.errors import IglubuildError, UsageError
from iglubuild.settings import Settings

NAME = "import"
HELP = "convert Iglunix build.sh files into recipe.yaml (untranslated code kept as TODO comments)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build_sh", metavar="PATH", type=Path, nargs="*",
                        help="Iglunix build.sh files (or the folders holding them)")
    parser.add_argument("--tree", metavar="DIR", type=Path,
                        help="an Iglunix checkout: convert every DIR/<repo>/<name>/build.sh")
    parser.add_argument("-o", "--output", metavar="DIR", type=Path,
                        help="recipe folder to write, for a single PATH "
                        "(default: <recipes>/<repo>/<name>)")
    parser.add_argument("--force", action="store_true", help="overwrite existing recipe.yaml files")


_TREE_HINT = "give the root of an Iglunix checkout (it holds base/, extra/...)"


def scripts_of(paths: list[Path], tree: Path | None) -> list[Path]:
    """The build.sh files named on the command line, in order, each once."""
    out: list[Path] = []
    for path in paths:
        out.append(path / "build.sh" if path.is_dir() else path)
    if tree is not None:
        if not tree.is_dir():
            raise UsageError(f"--tree {tree}: not a folder",
                             hint=_TREE_HINT)
        found = sorted(tree.glob("*/*/build.sh"))
        if not found:
            raise UsageError(f"--tree {tree}: no <repo>/<name>/build.sh below it",
                             hint=_TREE_HINT)
        out.extend(found)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.importer import convert, local_places, write_recipe

    scripts = scripts_of(args.build_sh, args.tree)
    if not scripts:
        raise UsageError("nothing to import", hint="give build.sh paths or --tree DIR")
    if args.output and len(scripts) > 1:
        raise UsageError("-o names one recipe folder but several scripts were given",
                         hint="drop -o; recipes go to <recipes>/<repo>/<name>")
    places = local_places(settings.distfiles_dir, settings.mirrors)
    if len(scripts) == 1:
        # One script: errors are the command's error, and every TODO is listed.
        result = convert(scripts[0], places)
        out_dir = args.output or settings.recipes / result.repo / result.name
        target = write_recipe(result, out_dir, force=args.force)
        print(f"wrote {target}")
        for f in result.files:
            print(f"copied {f.name}")
        if result.todos:
            print(f"{len(result.todos)} TODO(s) to review:")
            for todo in result.todos:
                print(f"  - {todo}")
        for item in result.unresolved:
            print(f"  unresolved: {item}")
        return 0

    rows: list[tuple[str, str, str, str]] = []
    failed = 0
    todos = 0
    for script in scripts:
        label = f"{script.parent.parent.name}/{script.parent.name}"
        try:
            result = convert(script, places)
            target = write_recipe(result, settings.recipes / result.repo / result.name,
                                  force=args.force)
        except IglubuildError as err:
            failed += 1
            message = err.message if str(script) in err.message else f"{script}: {err.message}"
            print(f"error: {message}" + (f" (hint: {err.hint})" if err.hint else ""),
                  file=sys.stderr)
            rows.append((label, "FAILED", "-", err.message))
            continue
        todos += len(result.todos)
        rows.append((label, str(target.parent.relative_to(settings.recipes)
                               if target.is_relative_to(settings.recipes) else target.parent),
                     str(len(result.todos)), "; ".join(result.unresolved) or "-"))
    head = ("script", "recipe", "TODOs", "unresolved")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    print(f"{len(scripts) - failed} converted, {failed} failed, {todos} TODOs to review "
          f"(recipes under {settings.recipes})")
    return 2 if failed else 0
