"""Benchmark: image creation against plain `mke2fs -d`, and boot time to the marker.

1. A 200 MB root tree (seeded random files of mixed sizes, directories,
   symlinks) is packed by `make_image` (GPT + ESP with loader and kernel +
   ext4 by mke2fs -d at an offset + owner check) and by a bare
   `mke2fs -t ext4 -d TREE` of the same size into a plain file. Target: the
   whole image in at most 1.3x the bare mke2fs time.
2. The hand-built musl/mksh image of the tests is booted to the marker with
   TCG (direct kernel and UEFI), and with KVM when it really works here.

Run: python3 bench/image_create.py  (or make bench). Slow inputs (userland,
Debian kernel) are cached in $IGLUBUILD_TEST_CACHE or .bench-cache/.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iglubuild.boot import boot, kvm_works  # noqa: E402
from iglubuild.image import (  # noqa: E402
    BLOCK,
    MIB,
    RootTree,
    make_image,
    measure_tree,
    populate_root,
    root_fs_size,
    runtime_closure,
)
from tests.imagekit import build_userland, debian_kernel  # noqa: E402

TREE_BYTES = 200 * MIB
RUNS = 3


def make_tree(root: Path, total: int, seed: int = 1) -> int:
    """Mixed sizes like a real root: many small files, some big ones."""
    rng = random.Random(seed)
    written = 0
    n = 0
    blob = rng.randbytes(8 * MIB)
    while written < total:
        d = root / f"usr/lib/pkg{n // 200:03d}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.choices([300, 2_000, 9_000, 40_000, 150_000, 1_500_000],
                           weights=[30, 30, 20, 12, 6, 2])[0]
        size = min(size, total - written)
        start = rng.randrange(0, len(blob) - size)
        (d / f"f{n:05d}").write_bytes(blob[start:start + size])
        if n % 50 == 0:
            os.symlink(f"f{n:05d}", d / f"link{n:05d}")
        written += size
        n += 1
    return n


def _median(fn, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_create(work: Path, kernel: Path) -> None:
    tree_dir = work / "tree"
    tree_dir.mkdir()
    files = make_tree(tree_dir, TREE_BYTES)
    tree = RootTree(tree_dir)
    for dirpath, dirnames, filenames in os.walk(tree_dir):
        for name in dirnames + filenames:
            tree.wanted_ids[os.path.relpath(os.path.join(dirpath, name), tree_dir)] = (0, 0)
    size, inodes = root_fs_size(measure_tree(tree_dir))
    plain = work / "plain.img"

    def bare() -> None:
        plain.unlink(missing_ok=True)
        with open(plain, "wb") as f:
            f.truncate(size)
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-N", str(inodes),
                        "-d", tree_dir, plain, str(size // BLOCK)], check=True)

    out = work / "iglunix.img"

    def ours() -> None:
        make_image(tree, kernel, out, work=work)

    ours()  # warm the page cache for both
    t_bare = _median(bare)
    t_ours = _median(ours)
    print(f"root tree: {files} files, {TREE_BYTES // MIB} MB; root fs {size // MIB} MiB")
    print(f"plain mke2fs -d:         {t_bare:6.2f} s (median of {RUNS})")
    print(f"iglubuild make_image:    {t_ours:6.2f} s (median of {RUNS})")
    print(f"ratio:                   {t_ours / t_bare:6.2f}x  (target <= 1.3x)")


def bench_boot(work: Path, cache: Path, kernel: Path) -> None:
    artifacts = build_userland(cache)
    packages = [runtime_closure(["iglunix-base"], _artifacts_by_name(artifacts))][0]
    root = work / "bootroot"
    root.mkdir()
    tree = populate_root(packages, root)
    image = work / "boot.img"
    make_image(tree, kernel, image, work=work)
    accels = ["tcg"] + (["kvm"] if kvm_works() else [])
    if not kvm_works():
        print("KVM: /dev/kvm missing or not usable here (probe failed); TCG only")
    for accel in accels:
        for firmware in ("direct", "uefi"):
            times = []
            for _ in range(RUNS):
                r = boot(image, work / "boot.log", firmware=firmware, accel=accel, timeout=300,
                         command="true")
                times.append(r.seconds_to_marker)
            print(f"boot to marker, {accel:3s} {firmware:6s}: {statistics.median(times):5.1f} s "
                  f"(median of {RUNS}; runs {', '.join(f'{t:.1f}' for t in times)})")


def _artifacts_by_name(paths: dict[str, Path]):
    from iglubuild.image import Artifact
    return {name: Artifact.from_path(p) for name, p in paths.items()}


def main() -> None:
    cache = Path(os.environ.get("IGLUBUILD_TEST_CACHE", REPO / ".bench-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    kernel = debian_kernel(cache)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="iglubuild-bench."))
    try:
        bench_create(work, kernel)
        bench_boot(work, cache, kernel)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
