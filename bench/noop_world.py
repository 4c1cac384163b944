"""No-op planning: 1,000 packages, every one up to date; how long until "nothing to do"?

Target: planning (input signatures of every package, including patch and
file bytes, plus a state record read and an artifact stat per package) takes
at most 1 s. Loading the recipe tree is timed separately (cold: parse and
validate; warm: with the parsed-recipe cache), since that belongs to the
recipe stage.

    python3 bench/noop_world.py [--packages 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iglubuild.graph import DepGraph  # noqa: E402
from iglubuild.plan import StateStore, make_plan  # noqa: E402
from iglubuild.recipe import load_tree  # noqa: E402


def write_tree(root: Path, count: int, rng: random.Random) -> None:
    names = [f"pkg{i:04d}" for i in range(count)]
    for i, name in enumerate(names):
        folder = root / "base" / name
        folder.mkdir(parents=True)
        tarball = f"{name} tarball".encode()
        window = names[max(0, i - 50):i]
        deps = sorted(rng.sample(window, min(len(window), rng.randint(0, 4))))
        patches = []
        for p in range(rng.randint(0, 3)):
            patch = folder / f"fix-{p}.patch"
            patch.write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n" * 40)
            patches.append(patch.name)
        (folder / "recipe.yaml").write_text(
            f"name: {name}\nversion: '1.{i}'\nrelease: 1\n"
            f"description: synthetic package {i}\nlicense: MIT\n"
            f"deps: [{', '.join(deps)}]\nmakedeps: []\n"
            f"sources:\n  - url: https://example.org/{name}-{{version}}.tar.gz\n"
            f"    sha256: {hashlib.sha256(tarball).hexdigest()}\n"
            f"patches: [{', '.join(patches)}]\n"
            "build: |\n  ./configure --prefix=/usr\n  make\n"
            "package: |\n  make DESTDIR=\"$pkgdir\" install\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, build = Path(tmp) / "recipes", Path(tmp) / "build"
        write_tree(root, args.packages, random.Random(7))
        cache = build / "cache" / "recipes.pickle"

        t0 = time.perf_counter()
        tree = load_tree(root, cache_file=cache)
        graph = DepGraph(tree)
        cold_load = time.perf_counter() - t0

        state = StateStore(build)
        artifacts = build / "packages"
        artifacts.mkdir(parents=True)
        for name, pkg in make_plan(tree, graph, "bench", state).packages.items():
            artifact = artifacts / f"{name}.tar.zst"
            artifact.write_bytes(b"x")
            state.write(pkg.new_record("built", duration=1.0, artifacts=[str(artifact)]))

        t0 = time.perf_counter()
        tree = load_tree(root, cache_file=cache)
        graph = DepGraph(tree)
        warm_load = time.perf_counter() - t0

        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            plan = make_plan(tree, graph, "bench", state)
            best = min(best, time.perf_counter() - t0)
            assert plan.to_build() == [], plan.to_build()[:3]
        print(f"{args.packages} up-to-date packages: planning {best * 1000:.0f} ms "
              f"(target <= 1000 ms); tree load + graph: cold {cold_load * 1000:.0f} ms, "
              f"warm cache {warm_load * 1000:.0f} ms; total warm no-op "
              f"{(warm_load + best) * 1000:.0f} ms")
    return 0 if best <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
