"""Compile budget: 2 packages each running `make -j2` on a 2-core machine.

Each package is a Makefile compiling 6 real C files with clang -O2; the two
packages are independent and run through the real scheduler at jobs=2, with
and without the shared jobserver (iglubuild.jobserver). Measured:

- peak and mean number of compiles running at once (from start/end stamps);
- mean and peak number of the benchmark's own runnable processes (state R,
  sampled every 20 ms), i.e. the load it puts on the machine, against the
  budget (the core count);
- wall time of the whole thing.

Without a jobserver two `make -j2` run 4 compiles on 2 cores; with it, 2.

    python3 bench/oversubscription.py [--budget 2] [--files 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iglubuild.graph import DepGraph  # noqa: E402
from iglubuild.jobserver import Jobserver  # noqa: E402
from iglubuild.plan import StateStore, make_plan  # noqa: E402
from iglubuild.recipe import load_tree  # noqa: E402
from iglubuild.run import require_tool  # noqa: E402
from iglubuild.scheduler import run_plan  # noqa: E402

MAKEFILE = """\
SRCS := $(wildcard *.c)
OBJS := $(SRCS:.c=.o)
all: $(OBJS)
%.o: %.c
\t@echo "S $$(date +%s%N)" >> $(EVENTS)
\t@clang -O2 -c $< -o $@
\t@echo "E $$(date +%s%N)" >> $(EVENTS)
"""


def c_source(seed: int, functions: int = 120) -> str:
    """A C file that takes clang -O2 a noticeable fraction of a second."""
    out = ["#include <stddef.h>"]
    for f in range(functions):
        out.append(
            f"unsigned long f{seed}_{f}(const unsigned char *p, size_t n) {{\n"
            f"  unsigned long h = {seed * 1000 + f}u;\n"
            "  for (size_t i = 0; i < n; i++) {\n"
            "    h = (h << 5) ^ (h >> 3) ^ p[i];\n"
            f"    if (h % {f + 3}u == 1) h += i * {f + 7}u; else h ^= i + {f};\n"
            "    for (int k = 0; k < 4; k++) h = h * 31u + (unsigned long)k;\n"
            "  }\n  return h;\n}\n")
    return "\n".join(out)


def make_package(folder: Path, files: int) -> None:
    folder.mkdir(parents=True)
    (folder / "Makefile").write_text(MAKEFILE)
    for i in range(files):
        (folder / f"u{i}.c").write_text(c_source(i))


def concurrency(events: Path) -> tuple[int, float]:
    stamps = []
    for line in events.read_text().split("\n"):
        if line:
            kind, ns = line.split()
            stamps.append((int(ns), 0 if kind == "E" else 1))
    stamps.sort()
    running = peak = 0
    area = 0.0
    for (t0, is_start), (t1, _) in zip(stamps, stamps[1:] + [stamps[-1]], strict=True):
        running += 1 if is_start else -1
        peak = max(peak, running)
        area += running * (t1 - t0)
    return peak, area / (stamps[-1][0] - stamps[0][0])


def sample_run_queue(base: Path, stop: threading.Event, samples: list[int]) -> None:
    """Our runnable processes (state R, cwd inside `base`), every 20 ms.

    The machine may be shared, so /proc/stat's procs_running would count
    other people's work; this counts only the benchmark's own processes.
    """
    prefix = str(base)
    while not stop.is_set():
        count = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if not os.readlink(f"/proc/{entry.name}/cwd").startswith(prefix):
                    continue
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "R":
                count += 1
        samples.append(count)
        time.sleep(0.02)


def run_case(base: Path, label: str, budget: int, files: int, use_jobserver: bool) -> int:
    """Both packages go through the real scheduler (jobs=2), each running `make`."""
    slug = label.replace(" ", "-")
    events = base / f"{slug}.events"
    recipes = base / slug / "recipes"
    for name in ("p1", "p2"):
        make_package(base / slug / name, files)
        (recipes / "base" / name).mkdir(parents=True)
        (recipes / "base" / name / "recipe.yaml").write_text(f"name: {name}\nversion: '1'\n")
    tree = load_tree(recipes)
    plan = make_plan(tree, DepGraph(tree), "bench", StateStore(base / slug / "build"))
    env = {"PATH": "/usr/bin:/bin", "MAKEFLAGS": f"-j{budget}"}
    js = Jobserver(budget) if use_jobserver else None
    fds: tuple[int, ...] = ()
    if js:
        env.update(js.env())
        fds = js.pass_fds

    def build_one(name: str) -> None:
        subprocess.run(["make", "-s", f"EVENTS={events}"], cwd=base / slug / name, env=env,
                       pass_fds=fds, stdin=subprocess.DEVNULL, check=True)

    samples: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_run_queue, args=(base / slug, stop, samples))
    sampler.start()
    try:
        summary = run_plan(plan, build_one, jobs=2, jobserver=js)
    finally:
        stop.set()
        sampler.join()
    assert summary.ok and len(summary.built) == 2, summary.lines()
    if js:
        left = js.available()
        js.close()
        assert left == budget, f"tokens leaked: {left} of {budget}"
    peak, mean = concurrency(events)
    print(f"  {label:16s} compiles at once: peak {peak}, mean {mean:.2f}; "
          f"runnable: mean {sum(samples) / len(samples):.2f}, peak {max(samples)} "
          f"(budget {budget}); wall {summary.elapsed:.2f} s")
    return peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--files", type=int, default=6)
    args = ap.parse_args()
    require_tool("clang", "clang")
    require_tool("make", "make")
    print(f"2 packages x make -j{args.budget}, {args.files} clang -O2 compiles each, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        run_case(Path(tmp), "no jobserver", args.budget, args.files, use_jobserver=False)
        peak = run_case(Path(tmp), "shared jobserver", args.budget, args.files,
                        use_jobserver=True)
    return 0 if peak <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
