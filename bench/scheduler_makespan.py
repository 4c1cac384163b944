"""Makespan of the scheduler on a synthetic DAG of 200 packages whose builds sleep known times.

Target: at jobs=4 the run finishes within 1.15 x max(critical path, total work / 4),
the lower bound no schedule can beat. Each build is a real `sleep` subprocess.

Two runs: the first knows nothing (priorities by chain length), the second
uses the durations recorded by the first (priorities by chain time), as every
later run of a real build dir does.

    python3 bench/scheduler_makespan.py [--packages 200] [--jobs 4] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iglubuild.graph import DepGraph  # noqa: E402
from iglubuild.plan import StateStore, longest_path, make_plan  # noqa: E402
from iglubuild.recipe import load_tree  # noqa: E402
from iglubuild.scheduler import run_plan  # noqa: E402


def write_dag(root: Path, count: int, rng: random.Random) -> tuple[dict[str, float],
                                                                   dict[str, list[str]]]:
    durations: dict[str, float] = {}
    deps: dict[str, list[str]] = {}
    names = [f"p{i:03d}" for i in range(count)]
    for i, name in enumerate(names):
        # Mostly short builds, a few long ones, as in a real distribution.
        durations[name] = round(rng.choice([0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.4, 0.6]), 2)
        window = names[max(0, i - 30):i]
        deps[name] = sorted(rng.sample(window, min(len(window), rng.randint(0, 3))))
        folder = root / "base" / name
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(
            f"name: {name}\nversion: '1'\ndeps: [{', '.join(deps[name])}]\n"
            f"build: sleep {durations[name]}\n")
    return durations, deps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "recipes"
        durations, deps = write_dag(root, args.packages, rng)
        tree = load_tree(root)
        graph = DepGraph(tree)
        state = StateStore(Path(tmp) / "build")
        work = sum(durations.values())
        _, critical = longest_path({n: deps[n] for n in graph.order()}, durations)
        bound = max(critical, work / args.jobs)
        print(f"{args.packages} packages, total work {work:.2f} s, critical path "
              f"{critical:.2f} s, jobs {args.jobs}: lower bound {bound:.2f} s")

        def build_one(name: str) -> None:
            subprocess.run(["sleep", str(durations[name])], check=True)

        worst = 0.0
        for label, force in (("cold estimates", ()), ("learned estimates", graph.order())):
            plan = make_plan(tree, graph, "bench", state, force=force)
            start = time.monotonic()
            summary = run_plan(plan, build_one, jobs=args.jobs, state=state)
            makespan = time.monotonic() - start
            assert len(summary.built) == args.packages and summary.ok
            ratio = makespan / bound
            worst = max(worst, ratio)
            print(f"  {label:18s} makespan {makespan:6.2f} s = {ratio:.3f} x bound "
                  f"(target <= 1.15)")
        # The scheduler's own cost: the same DAG five times over (1,000
        # packages) with builds that return at once, state records included.
        big = Path(tmp) / "big"
        write_dag(big, args.packages * 5, random.Random(args.seed))
        tree = load_tree(big)
        graph = DepGraph(tree)
        state = StateStore(Path(tmp) / "build-big")
        plan = make_plan(tree, graph, "bench", state)
        start = time.monotonic()
        summary = run_plan(plan, lambda name: None, jobs=args.jobs, state=state)
        overhead = time.monotonic() - start
        assert len(summary.built) == args.packages * 5
        print(f"  scheduler overhead: {len(summary.built)} instant builds in {overhead:.2f} s "
              f"({overhead / len(summary.built) * 1000:.2f} ms per package)")
    return 0 if worst <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
