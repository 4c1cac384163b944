"""`iglubuild pkg NAME...`: build NAME and whatever it needs."""

from __future__ import annotations

import argparse

from iglubuild.commands._pkg_world import add_build_arguments, build
from iglubuild.settings import Settings

NAME = "pkg"
HELP = "build the named packages and whatever they need"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME")
    add_build_arguments(parser)


def run(settings: Settings, args: argparse.Namespace) -> int:
    return build(settings, args, args.names)
