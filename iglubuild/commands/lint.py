"""`iglubuild lint [PATH...]`: validate recipes, report every problem as file:line:col."""

from __future__ import annotations

import argparse
from pathlib import Path

from iglubuild.commands._common import load, say
from iglubuild.errors import RecipeError
from iglubuild.settings import Settings

NAME = "lint"
HELP = "validate recipes (the whole tree, or the given recipe files or folders)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="recipe.yaml files or recipe folders (default: the whole tree)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.graph import DepGraph, cycle_problems
    from iglubuild.recipe import RECIPE_FILE, collect_tree, load_recipe

    if args.paths:
        problems = []
        for raw in args.paths:
            path = Path(raw)
            if path.is_dir():
                path = path / RECIPE_FILE
            try:
                load_recipe(path)
            except RecipeError as exc:
                problems.extend(exc.problems)
            except FileNotFoundError:
                from iglubuild.errors import UsageError

                raise UsageError(f"{raw}: no such recipe",
                                 hint="give a recipe.yaml or its folder") from None
        if problems:
            raise RecipeError(problems)
        say(f"{len(args.paths)} recipe(s) ok")
        return 0
    # One pass: schema, references and duplicates from the loader, then cycles
    # over the recipes that are valid, all reported together.
    tree, problems = collect_tree(settings.recipes,
                                  cache_file=settings.build_dir / "cache" / "recipes.pickle")
    problems.extend(cycle_problems(tree))
    if problems:
        raise RecipeError(problems)
    tree, graph = load(settings)
    assert isinstance(graph, DepGraph)
    for name, reason in tree.unverified:
        say(f"warning: {name}: source not verified: {reason}")
    left_out = sorted((n, lr.recipe.left_out) for n, lr in tree.recipes.items()
                      if lr.recipe.left_out)
    for name, reason in left_out:
        say(f"note: {name}: left out of builds: {reason}")
    extra = f", {len(tree.unverified)} unverified source(s)" if tree.unverified else ""
    extra += f", {len(left_out)} left out" if left_out else ""
    say(f"{len(tree.recipes)} recipes ok{extra}")
    return 0
