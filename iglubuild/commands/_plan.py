"""The dry-run build plan shared by `world` and `pkg`."""

from __future__ import annotations

from collections.abc import Iterable

from iglubuild.graph import DepGraph


def print_plan(graph: DepGraph, names: Iterable[str] | None) -> None:
    """Packages in order, grouped in waves that could build in parallel."""
    waves = graph.waves(names)
    critical = graph.critical_path(names)
    total = sum(len(w) for w in waves)
    print(f"build plan: {total} package(s) in {len(waves)} wave(s)")
    for i, wave in enumerate(waves, 1):
        print(f"wave {i}: {' '.join(wave)}")
    print(f"critical path ({len(critical)} packages): {' -> '.join(critical)}")
