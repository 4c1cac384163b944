"""The command line: parse arguments, resolve settings, run a verb, report errors.

This is the only place that prints an error and chooses an exit code: library
code raises typed errors (iglubuild.errors) and they are converted here into
one line plus a hint. Tracebacks appear only with --debug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from iglubuild import __version__, commands
from iglubuild.errors import EXIT_INTERRUPTED, EXIT_USAGE, IglubuildError
from iglubuild.settings import add_arguments, resolve


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"iglubuild.commands.{info.name}"))
    return sorted(mods, key=lambda m: m.NAME)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so errors get one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise IglubuildError_Usage(message, self.format_usage().strip())


class IglubuildError_Usage(IglubuildError):  # noqa: N801 - internal, reported like UsageError
    exit_code = EXIT_USAGE

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message, hint=f"{usage}; see --help")


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options on the top parser and on every verb."""
    common = _Parser(add_help=False)
    add_arguments(common)
    parser = _Parser(
        prog="iglubuild",
        description="Build Iglunix from YAML recipes: packages, repository, bootable image.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"iglubuild {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP, parents=[common],
                           argument_default=None)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def _merge_globals(args: argparse.Namespace, argv: Sequence[str]) -> None:
    # Global options may stand before or after the verb; argparse's parents
    # make the sub-parser reset them to None, so take them from a pre-parse.
    pre = argparse.ArgumentParser(add_help=False)
    add_arguments(pre)
    known, _ = pre.parse_known_args(list(argv))
    for key, value in vars(known).items():
        if value is not None and getattr(args, key, None) is None:
            setattr(args, key, value)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line; global options may stand before or after the verb."""
    args = build_parser().parse_args(list(argv))
    _merge_globals(args, argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `iglubuild` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    try:
        args = parse_args(argv)
        if getattr(args, "_module", None) is None:
            build_parser().print_help()
            return EXIT_USAGE
        settings = resolve(args)
        return int(args._module.run(settings, args) or 0)
    except IglubuildError as exc:
        if debug:
            raise
        lines = exc.lines()
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
