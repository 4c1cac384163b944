#!/usr/bin/env python3
"""Benchmark: what one phase costs under the docker executor, against host and chroot.

For an empty script and for a small real compile (clang -O2 of one C file),
the median wall time of a phase run by each executor:
  host     `sh -e -c` in its own session and network namespace (HostExecutor);
  chroot   namespaces + overlay over the build root (ChrootExecutor; only when
           the build root is a folder);
  docker   one container of the toolchain image per phase: create, start,
           stream the log, wait, remove (DockerExecutor).
Overhead = executor median - host median. Target for docker: at most 1 s a phase
(a package has 3-4 phases; a build of minutes does not notice).

Needs root, dockerd and a build root: IGLUBUILD_TEST_BUILDROOT (a root folder
or tarball) or --root. Starts its own dockerd (IGLUBUILD_BENCH_DOCKER_DIR,
default /tmp/iglu-docker-bench) and stops it by PID at the end.

Run: `python3 bench/docker_overhead.py [--root PATH] [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from farm_support import buildroot_tarball, start_dockerd  # noqa: E402

from iglubuild.executor import PhaseJob  # noqa: E402
from iglubuild.executors.chroot import ChrootExecutor  # noqa: E402
from iglubuild.executors.docker import DockerExecutor  # noqa: E402
from iglubuild.executors.host import HostExecutor  # noqa: E402
from iglubuild.run import base_env  # noqa: E402
from iglubuild.toolchain_image import create_image  # noqa: E402

TARGET_OVERHEAD_S = 1.0
PROGRAM = """\
#include <stdio.h>
static unsigned long f(unsigned long x) { for (int i = 0; i < 64; i++) x = x * 31 + i; return x; }
int main(void) { printf("%lu\\n", f(7)); return 0; }
"""


def median_ms(run: Callable[[], int], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.monotonic()
        rc = run()
        times.append(time.monotonic() - t)
        assert rc == 0, rc
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=os.environ.get("IGLUBUILD_TEST_BUILDROOT"),
                        help="build root folder or tarball")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        print("docker_overhead: needs root and dockerd (skipped)")
        return 0
    if args.root:
        os.environ["IGLUBUILD_TEST_BUILDROOT"] = str(args.root)
    daemon = start_dockerd(Path(os.environ.get("IGLUBUILD_BENCH_DOCKER_DIR",
                                               "/tmp/iglu-docker-bench")))
    os.environ["DOCKER_HOST"] = daemon.host
    try:
        with tempfile.TemporaryDirectory(prefix="iglubuild-bench-") as tmp:
            base = Path(tmp)
            image = create_image(buildroot_tarball(base))
            work = base / "work"
            work.mkdir()
            (work / "p.c").write_text(PROGRAM)
            env = base_env()
            executors: dict[str, object] = {"host": HostExecutor()}
            if args.root and Path(args.root).is_dir():
                executors["chroot"] = ChrootExecutor(Path(args.root), "bench", base / "scratch")
            docker_ex = DockerExecutor(image.ref, image.toolchain_id)
            docker_ex.check()
            executors["docker"] = docker_ex
            results: dict[str, dict[str, float]] = {}
            for case, script in (("empty", ""), ("compile", "clang -O2 -o p p.c && ./p")):
                job = PhaseJob("bench", "build", script, work, env, writable=(work,))
                results[case] = {}
                with open(os.devnull, "wb") as log:
                    for name, ex in executors.items():
                        run = lambda ex=ex, job=job: ex.run_phase(job, log)  # noqa: E731
                        run()  # warm caches (image layers, page cache)
                        results[case][name] = median_ms(run, args.runs)
            worst = 0.0
            for case, by in results.items():
                host = by["host"]
                parts = [f"{name} {ms:.0f} ms" for name, ms in by.items()]
                print(f"{case} phase, median of {args.runs}: " + ", ".join(parts))
                for name, ms in by.items():
                    if name != "host":
                        print(f"  {name} overhead per phase: {ms - host:.0f} ms")
                worst = max(worst, (by["docker"] - host) / 1000)
            print(f"docker executor overhead per phase: at most {worst * 1000:.0f} ms "
                  f"(target <= {TARGET_OVERHEAD_S * 1000:.0f} ms)")
    finally:
        daemon.stop()
    return 0 if worst <= TARGET_OVERHEAD_S else 1


if __name__ == "__main__":
    sys.exit(main())
