"""`iglubuild fetch [NAME...]`: download and verify the sources of NAME's closure (or all)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from iglubuild.commands._common import load, say
from iglubuild.settings import Settings

NAME = "fetch"
HELP = "download and verify the sources of NAME and what it needs (or of every recipe)"


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--parallel", type=_at_least(1), default=4, metavar="N",
                        help="downloads at once (default 4)")
    parser.add_argument("--retries", type=_at_least(0), default=3, metavar="N",
                        help="further attempts per URL after a network error or 5xx (default 3)")
    parser.add_argument("--list", action="store_true",
                        help="name every file downloaded, reused or failed")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.fetch import FetchOptions, fetch_sources

    tree, graph = load(settings)
    order = graph.order(args.names or None)
    items = [(name, src) for name in order for src in tree[name].recipe.sources
             if src.is_remote]
    options = FetchOptions(parallel=args.parallel, retries=args.retries)
    report = fetch_sources(items, settings, options, check=False)
    if args.list:
        for status in ("downloaded", "reused", "failed"):
            for o in getattr(report, status):
                print(f"{status}\t{o.package}\t{o.filename}")
    say(f"{report.summary()} in {report.seconds:.1f}s")
    report.raise_if_failed()
    return 0
