"""`iglubuild world`: build every recipe, in order, in parallel where possible."""

from __future__ import annotations

import argparse

from iglubuild.commands._build import add_build_arguments, build
from iglubuild.settings import Settings

NAME = "world"
HELP = "build every recipe, in dependency order, in parallel where possible"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_build_arguments(parser)


def run(settings: Settings, args: argparse.Namespace) -> int:
    return build(settings, args, None)
