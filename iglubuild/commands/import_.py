"""`iglubuild import PATH/build.sh`: convert an Iglunix build.sh into a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from iglubuild.settings import Settings

NAME = "import"
HELP = "convert an Iglunix build.sh into recipe.yaml (untranslated code kept as TODO comments)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build_sh", metavar="PATH", type=Path,
                        help="an Iglunix build.sh (or the folder holding it)")
    parser.add_argument("-o", "--output", metavar="DIR", type=Path,
                        help="recipe folder to write (default: <recipes>/<repo>/<name>)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing recipe.yaml")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.importer import convert, local_places, write_recipe

    path: Path = args.build_sh
    if path.is_dir():
        path = path / "build.sh"
    result = convert(path, local_places(settings.distfiles_dir, settings.mirrors))
    out_dir = args.output or settings.recipes / result.repo / result.name
    target = write_recipe(result, out_dir, force=args.force)
    print(f"wrote {target}")
    for f in result.files:
        print(f"copied {f.name}")
    if result.todos:
        print(f"{len(result.todos)} TODO(s) to review:")
        for todo in result.todos:
            print(f"  - {todo}")
    return 0
