"""Benchmark: lint + build order of a synthetic recipe tree, cold and with the parse cache.

Generates trees with a realistic dependency shape (~15 levels, 1-8 deps each)
and times `iglubuild lint` plus `graph` (order) as a user runs them, in a
fresh process each time (so imports count), and in-process.
Targets (issue 3): 2,000 recipes cold < 1.5 s; second run (cache) < 0.3 s.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHA = "0123456789abcdef" * 4
ROOT = Path(__file__).resolve().parent.parent


def generate(root: Path, count: int, depth: int = 15, seed: int = 1) -> None:
    rng = random.Random(seed)
    levels: list[list[str]] = [[] for _ in range(depth)]
    for i in range(count):
        levels[min(depth - 1, int(depth * i / count))].append(f"pkg{i:05d}")
    for lvl, names in enumerate(levels):
        below = [n for lv in levels[:lvl] for n in lv]
        for name in names:
            deps = rng.sample(below, min(len(below), rng.randint(1, 8))) if below else []
            folder = root / f"repo{lvl % 4}" / name
            folder.mkdir(parents=True)
            (folder / "recipe.yaml").write_text(
                f"name: {name}\nversion: 1.{lvl}.0\nrelease: 1\n"
                f"description: synthetic package {name}\nlicense: MIT\n"
                f"deps: [{', '.join(deps)}]\nmakedeps: []\n"
                f"sources:\n  - url: https://example.org/{name}-{{version}}.tar.gz\n"
                f"    sha256: {SHA}\n"
                "build: |\n  ./configure --prefix=/usr\n  make\n"
                "package: |\n  make DESTDIR=\"$pkgdir\" install\n"
                "subpackages:\n  dev: [usr/include]\n")


def timed_cli(recipes: Path, build: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "iglubuild", "--recipes", str(recipes),
                    "--build-dir", str(build), *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def in_process(recipes: Path, build: Path) -> float:
    sys.path.insert(0, str(ROOT))
    from iglubuild.graph import DepGraph
    from iglubuild.recipe import load_tree

    start = time.perf_counter()
    DepGraph(load_tree(recipes, cache_file=build / "cache" / "recipes.pickle")).order()
    return time.perf_counter() - start


def main() -> None:
    startup = None
    print(f"{'recipes':>8} {'cold CLI':>9} {'cached CLI':>11} {'cold lib':>9} {'cached lib':>11}")
    for count in (500, 1000, 2000, 5000):
        tmp = Path(tempfile.mkdtemp(prefix="iglubench-"))
        try:
            generate(tmp / "recipes", count)
            cold = timed_cli(tmp / "recipes", tmp / "b1", "graph")
            warm = min(timed_cli(tmp / "recipes", tmp / "b1", "graph") for _ in range(3))
            cold_lib = in_process(tmp / "recipes", tmp / "b2")
            warm_lib = min(in_process(tmp / "recipes", tmp / "b2") for _ in range(3))
            print(f"{count:>8} {cold:>8.2f}s {warm:>10.2f}s {cold_lib:>8.2f}s {warm_lib:>10.2f}s")
        finally:
            shutil.rmtree(tmp)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "iglubuild", "--version"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    startup = time.perf_counter() - start
    print(f"interpreter + import start-up (iglubuild --version): {startup:.2f}s")


if __name__ == "__main__":
    main()
