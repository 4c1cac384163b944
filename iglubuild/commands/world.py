"""`iglubuild world`: build every recipe, in order, in parallel where possible."""

from __future__ import annotations

import argparse

from iglubuild.commands._common import load
from iglubuild.commands._plan import print_plan
from iglubuild.settings import Settings

NAME = "world"
HELP = "build every recipe, in dependency order, in parallel where possible"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the build plan only")


def run(settings: Settings, args: argparse.Namespace) -> int:
    _, graph = load(settings)
    print_plan(graph, None)
    return 0
