"""Per-package overhead of the build stage (target: <= 0.15 s for an empty recipe).

Builds trivial recipes many times with the host executor and reports the
median and mean wall time of `build_package` -- everything but the package's
own compiling: work folder, sysroot, wrappers, stamps, phases, the glibc
check, packing and cleanup.

    python3 bench/build_overhead.py [--runs N] [--musl-dir DIR]

`--musl-dir` points at a folder holding musl-1.2.3-r1 and musl-dev artifacts
(e.g. from a test run with IGLUBUILD_TEST_CACHE) to also measure a build
whose sysroot holds the C library, as every real package's does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iglubuild.build import BuildJob, build_package  # noqa: E402
from iglubuild.executors.host import HostExecutor  # noqa: E402
from iglubuild.recipe import load_tree  # noqa: E402
from iglubuild.settings import Settings  # noqa: E402

RECIPES = {
    "empty": "name: empty\nversion: '1'\n",
    "onephase": "name: onephase\nversion: '1'\npackage: |\n  mkdir -p \"$pkgdir/etc\"\n"
                "  echo x > \"$pkgdir/etc/x\"\n",
}


def measure(name: str, runs: int, deps: list[Path]) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rname, text in RECIPES.items():
            folder = root / "recipes" / "bench" / rname
            folder.mkdir(parents=True)
            (folder / "recipe.yaml").write_text(text)
        settings = Settings(recipes=root / "recipes", build_dir=root / "build")
        lr = load_tree(settings.recipes).recipes[name]
        executor = HostExecutor()
        executor.toolchain_id()  # computed once per run of iglubuild, not per package
        times = []
        for i in range(runs + 1):
            start = time.perf_counter()
            build_package(BuildJob(lr, settings, executor, deps, f"sig{i}",
                                   epoch=1_700_000_000))
            if i:  # the first run warms caches (imports, page cache)
                times.append(time.perf_counter() - start)
        return times


def report(label: str, times: list[float]) -> None:
    print(f"{label:38s} median {statistics.median(times) * 1000:6.1f} ms   "
          f"mean {statistics.mean(times) * 1000:6.1f} ms   max {max(times) * 1000:6.1f} ms "
          f"({len(times)} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--musl-dir", type=Path)
    args = parser.parse_args()
    report("empty recipe (no phases)", measure("empty", args.runs, []))
    report("one package phase (one sh)", measure("onephase", args.runs, []))
    if args.musl_dir:
        deps = sorted(args.musl_dir.glob("musl*-1.2.3-r1.x86_64.tar.zst"))
        if len(deps) == 2:
            report("one phase, musl+musl-dev in sysroot", measure("onephase", args.runs, deps))
        else:
            print(f"no musl artifacts in {args.musl_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
