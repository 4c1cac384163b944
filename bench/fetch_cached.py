"""Benchmark: `fetch` when all 2,000 sources are already in the distfiles cache.

Generates 2,000 recipes, each with one remote source (small distinct files,
in a temporary folder deleted afterwards), fills the cache once through a
file:// mirror, then times a fully cached fetch three ways: `fetch_sources`
in-process (the stage alone), and `iglubuild fetch` as a user runs it in a
fresh process (imports and recipe loading included), cold and with the
parsed-recipe cache warm. Nothing may touch the network.
Target (issue): a fully cached fetch of 2,000 sources under 1 s.

    python3 bench/fetch_cached.py [--count 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iglubuild.fetch import FetchOptions, fetch_sources  # noqa: E402
from iglubuild.recipe import load_tree  # noqa: E402
from iglubuild.settings import Settings  # noqa: E402


def generate(tmp: Path, count: int) -> tuple[Path, Path]:
    files = tmp / "mirror"
    recipes = tmp / "recipes"
    files.mkdir()
    for i in range(count):
        name = f"pkg{i:05d}"
        data = f"{name} source\n".encode() * 64
        (files / f"{name}-1.0.tar.gz").write_bytes(data)
        folder = recipes / f"repo{i % 4}" / name
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(
            f"name: {name}\nversion: '1.0'\nlicense: MIT\n"
            f"sources:\n  - url: https://example.invalid/{name}-{{version}}.tar.gz\n"
            f"    sha256: {hashlib.sha256(data).hexdigest()}\n"
            "build: |\n  make\n")
    return recipes, files


def cli(recipes: Path, build: Path, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "iglubuild", "--recipes", str(recipes),
                           "--build-dir", str(build), "fetch", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stderr.strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="iglubuild-bench-") as tmpname:
        tmp = Path(tmpname)
        recipes, mirror = generate(tmp, opts.count)
        build = tmp / "build"
        t_fill, out = cli(recipes, build, "--mirror", mirror.as_uri())
        print(f"fill the cache from a file:// mirror: {t_fill:.2f} s ({out})")
        shutil.rmtree(mirror)  # from here on, only the cache can serve

        settings = Settings(recipes=recipes, build_dir=build)
        tree = load_tree(recipes)
        items = [(lr.name, s) for lr in tree for s in lr.recipe.sources]
        times = []
        for _ in range(5):
            start = time.perf_counter()
            report = fetch_sources(items, settings, FetchOptions(progress=False))
            times.append(time.perf_counter() - start)
            assert len(report.reused) == opts.count, report.summary()
        best_stage = min(times)

        cold, out = cli(recipes.parent / "recipes", tmp / "build-cold",
                        "--distfiles", str(build / "distfiles"))
        warm = min(cli(recipes, build)[0] for _ in range(3))
        assert f"reused {opts.count}" in out, out

    print(f"{opts.count} sources, all cached:")
    print(f"  fetch_sources (the stage, in-process): {best_stage * 1000:.0f} ms "
          f"(best of 5; {', '.join(f'{t * 1000:.0f}' for t in times)})")
    print(f"  iglubuild fetch, fresh process, recipe parse cache warm: {warm:.2f} s")
    print(f"  iglubuild fetch, fresh process, recipes parsed cold: {cold:.2f} s")
    print(f"  target: < 1 s ({'met' if best_stage < 1.0 and warm < 1.0 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
