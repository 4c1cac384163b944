"""`iglubuild pkg NAME...`: build NAME and whatever it needs."""

from __future__ import annotations

import argparse

from iglubuild.commands._common import load
from iglubuild.commands._plan import print_plan
from iglubuild.settings import Settings

NAME = "pkg"
HELP = "build the named packages and whatever they need"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME")
    parser.add_argument("--dry-run", action="store_true", help="print the build plan only")


def run(settings: Settings, args: argparse.Namespace) -> int:
    _, graph = load(settings)
    print_plan(graph, args.names)
    return 0
