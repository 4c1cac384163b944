"""Benchmark: download throughput and memory of fetch, against curl, on loopback.

Generates 1 GiB in 4 files (random bytes, in a temporary folder that is
deleted afterwards), serves them from the tests' loopback HTTP server (file
bodies via sendfile(2), so the server is not the bottleneck), and downloads
them alternately with `curl --parallel` and with `fetch_sources` (4 at a time,
sha256 computed while streaming), each in a fresh child process whose peak
RSS is read from wait4(2). A second, 40 MiB run shows that memory does not
grow with the size of the files.
Targets (issue 18): fetch >= 0.9 x curl (medians of 5 rounds); memory flat. On a busy machine the
ratio follows CPU cost (curl neither hashes nor runs Python), so the script
also prints CPU seconds per GiB and a like-for-like "curl, then sha256".

    python3 bench/fetch_throughput.py [--total-mib 1024] [--files 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fault_server import FaultServer  # noqa: E402

CHILD = r"""
import sys, time
from pathlib import Path
from dataclasses import dataclass
sys.path.insert(0, {root!r})
from iglubuild.fetch import FetchOptions, fetch_sources
from iglubuild.settings import Settings

@dataclass(frozen=True)
class Src:
    url: str
    sha256: str
    sha512: None = None
    filename: None = None
    unverified: None = None

items = [(f"p{{i}}", Src(u, s)) for i, (u, s) in enumerate({items!r})]
settings = Settings(build_dir=Path({dist!r}), distfiles=Path({dist!r}))
t = time.perf_counter()
report = fetch_sources(items, settings, FetchOptions(parallel=4, progress=False))
print(time.perf_counter() - t, report.bytes_downloaded)
"""


def make_files(folder: Path, count: int, size: int) -> list[tuple[Path, str]]:
    out = []
    block = 8 << 20
    for i in range(count):
        path = folder / f"blob-{i}.tar.gz"
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(block, left))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        out.append((path, h.hexdigest()))
    return out


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


CPU_SECONDS: list[float] = []  # CPU time (user + sys) of each child, in order


def run_child(argv: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KiB, stdout) of a child process; CPU time to CPU_SECONDS.

    Peak RSS is VmHWM polled from /proc while the child runs: wait4's
    ru_maxrss would include the forked copy of this (bigger) process.
    """
    # Write back what the previous round left dirty, so that neither tool pays
    # for the other's writeback (the files go to a disk, not to memory).
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _hwm_kib(proc.pid))
            time.sleep(0.01)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, peak, out.decode()


def curl_round(srv: FaultServer, names: list[str], dest: Path) -> tuple[float, int, float]:
    """curl --parallel alone, then (like-for-like) the checksum a user would compute after it."""
    dest.mkdir()
    argv = ["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-max", "4"]
    for name in names:
        argv += ["-o", str(dest / name), srv.url(f"/{name}")]
    wall, rss, _ = run_child(argv)
    start = time.perf_counter()
    # openssl uses the CPU's SHA instructions (coreutils' sha256sum does not).
    tool = ["openssl", "dgst", "-sha256"] if shutil.which("openssl") else ["sha256sum"]
    subprocess.run([*tool, *[str(dest / n) for n in names]], check=True,
                   stdout=subprocess.DEVNULL)
    verify = time.perf_counter() - start
    shutil.rmtree(dest)
    return wall, rss, wall + verify


def fetch_round(srv: FaultServer, files: list[tuple[Path, str]],
                dest: Path) -> tuple[float, float, int]:
    items = [(srv.url(f"/{p.name}"), digest) for p, digest in files]
    code = CHILD.format(root=str(ROOT), items=items, dist=str(dest))
    wall, rss, out = run_child([sys.executable, "-c", code])
    inner, nbytes = out.split()
    assert int(nbytes) == sum(p.stat().st_size for p, _ in files), out
    for p, digest in files:
        assert (dest / "by-sha256" / digest).stat().st_size == p.stat().st_size
    shutil.rmtree(dest)
    return wall, float(inner), rss


def measure(total_mib: int, count: int, rounds: int, tmp: Path) -> dict[str, list[float]]:
    size = total_mib * (1 << 20) // count
    src = tmp / f"src-{total_mib}"
    src.mkdir()
    files = make_files(src, count, size)
    total = size * count
    res: dict[str, list[float]] = {"curl": [], "fetch": [], "fetch_wall": [], "curl_rss": [],
                                   "fetch_rss": []}
    with FaultServer() as srv:
        for p, _ in files:
            srv.add(f"/{p.name}", p)
        names = [p.name for p, _ in files]
        for r in range(rounds):
            wall, rss, with_sum = curl_round(srv, names, tmp / f"curl-{r}")
            res["curl"].append(total / wall / 1e6)
            res.setdefault("curl_sum", []).append(total / with_sum / 1e6)
            res.setdefault("curl_cpu", []).append(CPU_SECONDS[-1] / (total / 2**30))
            res["curl_rss"].append(rss)
            wall, inner, rss = fetch_round(srv, files, tmp / f"fetch-{r}")
            res["fetch"].append(total / inner / 1e6)
            res["fetch_wall"].append(total / wall / 1e6)
            res.setdefault("fetch_cpu", []).append(CPU_SECONDS[-1] / (total / 2**30))
            res["fetch_rss"].append(rss)
    shutil.rmtree(src)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--total-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    opts = ap.parse_args()
    if shutil.which("curl") is None:
        print("curl is missing: apt-get install curl", file=sys.stderr)
        return 1
    load_before = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory(prefix="iglubuild-bench-") as tmpname:
        tmp = Path(tmpname)
        big = measure(opts.total_mib, opts.files, opts.rounds, tmp)
        small = measure(40, opts.files, 1, tmp)
    med = statistics.median(big["fetch"])
    med_curl = statistics.median(big["curl"])
    # Each fetch round runs right after a curl round: the median of the paired
    # ratios is steadier than a ratio of medians when the machine's load moves.
    ratio = statistics.median(f / c for f, c in zip(big["fetch"], big["curl"], strict=True))
    print(f"{opts.total_mib} MiB in {opts.files} files, {opts.rounds} rounds, loopback HTTP/1.1")
    print(f"  curl --parallel : {', '.join(f'{x:.0f}' for x in big['curl'])} MB/s "
          f"(median {med_curl:.0f}), peak RSS {max(big['curl_rss']) / 1024:.1f} MiB")
    print(f"  iglubuild fetch : {', '.join(f'{x:.0f}' for x in big['fetch'])} MB/s "
          f"(median {med:.0f}; timed inside the child), "
          f"peak RSS {max(big['fetch_rss']) / 1024:.1f} MiB")
    med_sum = sorted(big["curl_sum"])[len(big["curl_sum"]) // 2]
    print(f"  curl then openssl dgst -sha256 (verified, like fetch): "
          f"{', '.join(f'{x:.0f}' for x in big['curl_sum'])} MB/s (median {med_sum:.0f}); "
          f"fetch/that {med / med_sum:.2f}")
    print(f"  fetch incl. Python start-up: {', '.join(f'{x:.0f}' for x in big['fetch_wall'])}"
          " MB/s")
    print(f"  CPU seconds per GiB: curl {min(big['curl_cpu']):.2f}, "
          f"fetch {min(big['fetch_cpu']):.2f} (sha256 included)")
    print(f"  load average during the run: {load_before} -> {os.getloadavg()[0]:.1f} "
          "(other work on the machine slows the process that needs more CPU)")
    print(f"  ratio fetch/curl (median of the rounds' ratios): {ratio:.2f} (target >= 0.90: "
          f"{'met' if ratio >= 0.9 else 'NOT met'})")
    print(f"  memory: peak RSS {max(small['fetch_rss']) / 1024:.1f} MiB for 40 MiB, "
          f"{max(big['fetch_rss']) / 1024:.1f} MiB for {opts.total_mib} MiB")
    return 0  # a report, not a gate: figures swing with the machine's load


if __name__ == "__main__":
    sys.exit(main())
