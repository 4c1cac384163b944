"""Fixtures for the build root and the chroot executor (real debootstrap, real musl).

The build root takes minutes to make, so it is made once per session in a
temporary folder; when IGLUBUILD_TEST_BUILDROOT names an existing root made by
`iglubuild toolchain build` (<build-dir>/toolchain/root-<id>), that one is used
instead (CI makes it once before the tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from iglubuild import toolchain_root
from tests.chroot.helpers import DISTFILES, MANIFEST, MUSL, sha256_file


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts, debootstrap)")


@pytest.fixture(scope="session")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> toolchain_root.BuildRoot:
    """A finished build root for the project's manifest (made once, or taken from CI)."""
    _need_root()
    given = os.environ.get("IGLUBUILD_TEST_BUILDROOT")
    if given and (Path(given) / "bin" / "sh").exists():
        path = Path(given).resolve()
        record = path.with_name(path.name + ".json")
        if record.is_file():
            data = json.loads(record.read_text(encoding="utf-8"))
            return toolchain_root.BuildRoot(path, data["id"], data["manifest_digest"],
                                       data["packages"], data["created"])
        return toolchain_root.BuildRoot(path, "external", "", {}, 0.0)
    build_dir = tmp_path_factory.mktemp("toolchain-build")
    with open(build_dir / "toolchain.log", "wb") as log:
        root, made = toolchain_root.create(build_dir, toolchain_root.load_manifest(MANIFEST), log)
    assert made
    return root


@pytest.fixture(scope="session")
def musl_sysroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """musl 1.2.3 built with the host's clang for x86_64-linux-musl, installed in a sysroot."""
    tarball = DISTFILES / MUSL
    if not tarball.is_file():
        pytest.skip(f"{tarball} not present")
    expected = None
    for line in (DISTFILES / "SOURCES.tsv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if cols[0] == MUSL:
            expected = cols[3]
    assert expected and sha256_file(tarball) == expected, "musl tarball does not match SOURCES.tsv"
    base = tmp_path_factory.mktemp("musl")
    with tarfile.open(tarball) as tar:
        tar.extractall(base, filter="data")
    src = base / "musl-1.2.3"
    sysroot = base / "sysroot"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    subprocess.run(
        ["./configure", "--prefix=/usr", "--syslibdir=/lib", "CC=clang",
         "CFLAGS=--target=x86_64-linux-musl",
         "LDFLAGS=-fuse-ld=lld --rtlib=compiler-rt --unwindlib=none"],
        cwd=src, env=env, check=True, capture_output=True,
    )
    subprocess.run(["make", f"-j{os.cpu_count() or 1}"], cwd=src, env=env, check=True,
                   capture_output=True)
    subprocess.run(["make", f"DESTDIR={sysroot}", "install"], cwd=src, env=env, check=True,
                   capture_output=True)
    shutil.rmtree(src)
    assert (sysroot / "usr/lib/libc.so").is_file()
    return sysroot
