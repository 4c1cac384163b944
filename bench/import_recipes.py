"""Benchmark: `iglubuild import` of every real Iglunix build.sh in the fixtures.

Times the conversion alone (in-process, best of 5) and the whole CLI run per
file in a fresh process (imports included), with the shared distfiles as the
checksum source so sha256 of local tarballs is part of the cost.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iglubuild.importer import convert  # noqa: E402

FIXTURES = sorted((ROOT / "tests" / "fixtures" / "iglunix").glob("*/*/build.sh"))
DISTFILES = [p for p in (ROOT.parent / "shared" / "distfiles",
                         Path("/work/shared/distfiles")) if p.is_dir()][:1]


def main() -> None:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for path in FIXTURES:
            convert(path, DISTFILES)
        best = min(best, time.perf_counter() - start)
    print(f"convert {len(FIXTURES)} build.sh in-process: {best * 1000:.0f} ms "
          f"({best * 1000 / len(FIXTURES):.1f} ms each, distfiles: {bool(DISTFILES)})")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for path in FIXTURES:
            out = Path(tmp) / path.parent.parent.name / path.parent.name
            args = [sys.executable, "-m", "iglubuild", "import", str(path), "-o", str(out)]
            if DISTFILES:
                args[3:3] = ["--distfiles", str(DISTFILES[0])]
            subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
        took = time.perf_counter() - start
    print(f"CLI import, fresh process per file: {took / len(FIXTURES) * 1000:.0f} ms per file")


if __name__ == "__main__":
    main()
