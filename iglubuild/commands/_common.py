"""Helpers shared by verbs: loading the tree and graph the same way everywhere."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from iglubuild.settings import Settings

if TYPE_CHECKING:  # verbs are all imported at start-up; these load only when a verb runs
    from iglubuild.graph import DepGraph
    from iglubuild.recipe import RecipeTree


def load(settings: Settings) -> tuple[RecipeTree, DepGraph]:
    """The validated recipe tree and its graph (parsed-recipe cache in the build dir)."""
    from iglubuild.graph import DepGraph
    from iglubuild.recipe import load_tree
    from iglubuild.target import load_target

    cache = settings.build_dir / "cache"
    tree = load_tree(settings.recipes, cache_file=cache / "recipes.pickle")
    return tree, DepGraph(tree, implicit=load_target().implicit_build_deps,
                          memo_file=cache / "graph.json")


def say(message: str) -> None:
    """A progress or summary line for the user (stderr, so stdout stays parseable)."""
    print(message, file=sys.stderr, flush=True)
