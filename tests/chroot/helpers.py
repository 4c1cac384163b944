"""Helpers shared by the build root and chroot tests (no fixtures here)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.conftest import DISTFILES as DISTFILES  # re-exported for the chroot tests

PROJECT = Path(__file__).resolve().parents[2]
MANIFEST = PROJECT / "toolchain" / "buildroot.toml"

MUSL = "musl-1.2.3.tar.gz"
MUSL_FLAGS = "--target=x86_64-linux-musl -fuse-ld=lld --rtlib=compiler-rt --unwindlib=none"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_manifest(root: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, size, sha256 or link target) of every entry under root."""
    entries: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                entries[rel] = (st.st_mode, 0, os.readlink(p))
            elif p.is_file():
                entries[rel] = (st.st_mode, st.st_size, sha256_file(p))
            else:
                entries[rel] = (st.st_mode, 0, "")
    return entries


def host_mounts(*paths: Path) -> list[str]:
    """The host's mount table (without mount ids), limited to mounts naming `paths`.

    Other programs on the machine (a Docker engine, say) mount and unmount
    while tests run, so only mounts that mention our folders are compared.
    """
    wanted = [str(p) for p in paths]
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        lines = [" ".join(line.split()[2:]) for line in fh]
    return sorted(line for line in lines if not wanted or any(w in line for w in wanted))
