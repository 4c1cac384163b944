"""`iglubuild why A B`: the dependency path that makes A need B."""

from __future__ import annotations

import argparse

from iglubuild.commands._common import load
from iglubuild.settings import Settings

NAME = "why"
HELP = "show the dependency path from package A to package B"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A")
    parser.add_argument("b", metavar="B")


def run(settings: Settings, args: argparse.Namespace) -> int:
    _, graph = load(settings)
    path = graph.path(args.a, args.b)
    if path is None:
        print(f"{args.a} does not need {args.b}")
        return 1
    print(" -> ".join(path))
    return 0
