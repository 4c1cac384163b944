"""Benchmark: what the chroot executor costs, and what making the build root costs.

1. `toolchain build` from nothing (debootstrap + apt-get) into a fresh build
   directory: wall time and size of the root. Skipped with --root PATH, which
   reuses an existing build root (e.g. $IGLUBUILD_TEST_BUILDROOT).
2. Per-phase overhead of the chroot executor over plain host execution, for an
   empty script: namespaces, overlay, /proc, /dev, /tmp, binds, chroot, and
   tearing it all down. Target: at most 0.5 s per phase.

Run as root: `python3 bench/chroot_overhead.py [--root PATH] [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iglubuild import toolchain_root  # noqa: E402
from iglubuild.executor import PhaseJob  # noqa: E402
from iglubuild.executors.chroot import ChrootExecutor  # noqa: E402
from iglubuild.run import base_env  # noqa: E402

TARGET_OVERHEAD_S = 0.5
MANIFEST = Path(__file__).resolve().parents[1] / "toolchain" / "buildroot.toml"


def build_from_nothing(base: Path) -> tuple[Path, str]:
    build_dir = base / "build"
    start = time.monotonic()
    with open(base / "toolchain.log", "wb") as log:
        root, made = toolchain_root.create(build_dir, toolchain_root.load_manifest(MANIFEST), log)
    elapsed = time.monotonic() - start
    assert made
    size = toolchain_root.size_bytes(root.path) / (1 << 20)
    print(f"toolchain build from nothing: {elapsed:.1f} s; root {size:.0f} MiB, "
          f"{len(root.packages)} packages, id {root.id}")
    start = time.monotonic()
    toolchain_root.create(build_dir, toolchain_root.load_manifest(MANIFEST))
    print(f"toolchain build again (no-op): {time.monotonic() - start:.3f} s")
    return root.path, root.id


def overhead(root: Path, ident: str, runs: int, base: Path) -> float:
    work = base / "work"
    work.mkdir(exist_ok=True)
    env = base_env()
    host: list[float] = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run(["sh", "-e", "-c", ""], cwd=work, env=env, stdin=subprocess.DEVNULL,
                       start_new_session=True, check=True)
        host.append(time.monotonic() - t)
    ex = ChrootExecutor(root, ident, base / "scratch")
    job = PhaseJob("bench", "build", "", work, env, writable=(work,))
    chroot: list[float] = []
    with open(os.devnull, "wb") as log:
        for _ in range(runs):
            t = time.monotonic()
            rc = ex.run_phase(job, log)
            chroot.append(time.monotonic() - t)
            assert rc == 0
    h, c = statistics.median(host), statistics.median(chroot)
    print(f"empty phase, median of {runs}: host {h * 1000:.1f} ms, chroot {c * 1000:.1f} ms "
          f"(min {min(chroot) * 1000:.1f}, max {max(chroot) * 1000:.1f})")
    print(f"chroot executor overhead per phase: {(c - h) * 1000:.1f} ms "
          f"(target <= {TARGET_OVERHEAD_S * 1000:.0f} ms)")
    return c - h


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=os.environ.get("IGLUBUILD_TEST_BUILDROOT"),
                        help="reuse this build root instead of making one from nothing")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("chroot_overhead: needs root (skipped)")
        return 0
    with tempfile.TemporaryDirectory(prefix="iglubuild-bench-") as tmp:
        base = Path(tmp)
        if args.root:
            root, ident = Path(args.root), "given"
        else:
            root, ident = build_from_nothing(base)
        over = overhead(root, ident, args.runs, base)
    return 0 if over <= TARGET_OVERHEAD_S else 1


if __name__ == "__main__":
    sys.exit(main())
