"""`iglubuild graph [NAME...]`: the dependency graph as text, DOT or JSON."""

from __future__ import annotations

import argparse
import json

from iglubuild.commands._common import load
from iglubuild.settings import Settings

NAME = "graph"
HELP = "dependency graph (build order, or the closure of NAME) as text, DOT or JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--format", choices=("text", "dot", "json"), default="text")
    parser.add_argument("--reverse", action="store_true",
                        help="show what depends on NAME instead of what NAME needs")


def run(settings: Settings, args: argparse.Namespace) -> int:
    _, graph = load(settings)
    if args.names and args.reverse:
        nodes = graph.dependents(args.names) | set(graph._known(args.names))
        order = [n for n in graph.order() if n in nodes]
    else:
        order = graph.order(args.names or None)
    members = set(order)
    edges = [(a, b) for a, b in graph.edges() if a in members and b in members]
    if args.format == "json":
        print(json.dumps({
            "order": order,
            "packages": {n: {"needs": [p for p in graph.build_deps(n) if p in members]}
                         for n in order},
        }, indent=2))
    elif args.format == "dot":
        print("digraph iglubuild {")
        print("  rankdir=LR;")
        for n in order:
            print(f'  "{n}";')
        for a, b in edges:
            print(f'  "{b}" -> "{a}";')
        print("}")
    else:
        for n in order:
            needs = [p for p in graph.build_deps(n) if p in members]
            print(f"{n}: {' '.join(needs)}" if needs else n)
    return 0
