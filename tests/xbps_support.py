"""The real xbps tools, built once per machine from the shared bundle (tests/xbps_tools.sh).

A session fixture (`tools_or_skip`) hands tests an `XbpsTools`; they run `xbps-rindex`,
`xbps-install`, ... through `XbpsTools.run`, which sets XBPS_ARCH so a
glibc build host takes `x86_64-musl` packages as its own architecture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from iglubuild.run import base_env, run
from tests.conftest import DISTFILES

SCRIPT = Path(__file__).resolve().parent / "xbps_tools.sh"
ARCH = "x86_64-musl"


@dataclass(frozen=True)
class XbpsTools:
    prefix: Path

    def bin(self, name: str) -> Path:
        return self.prefix / "bin" / name

    def run(self, tool: str, *args: str | os.PathLike[str], check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """Run one xbps tool, output captured (text); `check` raises on failure."""
        env = base_env({"XBPS_ARCH": ARCH, "XBPS_TARGET_ARCH": ARCH})
        return run([self.bin(tool), *args], env=env, capture=True, check=check)


def missing_build_deps() -> str | None:
    """Why the tools cannot be built here, or None."""
    if not (DISTFILES / "GIT.tsv").is_file():
        return f"no {DISTFILES}/GIT.tsv (the xbps bundle)"
    for tool in ("git", "make", "cc", "pkg-config"):
        if shutil.which(tool) is None:
            return f"{tool} missing (make setup)"
    for pc in ("libarchive", "libssl", "zlib"):
        if subprocess.run(["pkg-config", "--exists", pc], check=False).returncode != 0:
            return (f"{pc} development files missing "
                    "(apt-get install libarchive-dev libssl-dev zlib1g-dev pkg-config)")
    return None


def build_tools(distfiles: Path = DISTFILES) -> XbpsTools:
    """Build (or reuse) the tools; returns their prefix."""
    proc = run(["sh", SCRIPT, distfiles], capture=True, env=base_env(
        {k: v for k, v in os.environ.items() if k == "IGLUBUILD_XBPS_CACHE"}))
    return XbpsTools(Path(proc.stdout.strip().splitlines()[-1]))


def tools_or_skip() -> XbpsTools:
    """The tools for a session fixture; skips (with the reason) where they cannot be built."""
    why = missing_build_deps()
    if why:
        pytest.skip(f"cannot build the xbps tools: {why}")
    return build_tools()


def rel_files(root: Path, ignore: Sequence[str] = ()) -> list[str]:
    """Every non-folder path under `root`, relative, except under `ignore` prefixes."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() and not p.is_symlink():
            continue
        if any(rel == i or rel.startswith(i + "/") for i in ignore):
            continue
        out.append(rel)
    return out
