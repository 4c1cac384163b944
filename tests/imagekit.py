"""Real inputs for the image and boot tests: artifacts, a musl userland, a kernel.

Until the build engine produces artifacts, the tests make their own the same
way it will: a zstd-compressed tar of a package folder with the package's
metadata in usr/share/iglupkg/<name>. The userland is built for real: musl
1.2.3 and mksh R59c from the shared distfiles, compiled with clang for
x86_64-linux-musl, and iglunix-base built by running its recipe's own build
and package phases with sh. The kernel is Debian's cloud kernel, fetched with
apt-get (ext4, NVMe and the 8250 console are built in, so no initramfs).
Builds are cached by a key over their inputs so only the first run pays.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import zstandard
from ruamel.yaml import YAML

from iglubuild.image import ARTIFACT_RE
from tests.conftest import DISTFILES

REPO = Path(__file__).resolve().parent.parent
BASE_RECIPE = REPO / "tests" / "fixtures" / "boot-base"  # iglunix-base with a C init
MUSL = "musl-1.2.3.tar.gz"
MKSH = "mksh-R59c.tgz"
TRIPLE = "x86_64-linux-musl"


def pack_artifact(out_dir: Path, pkgdir: Path, name: str, version: str = "1.0",
                  release: int = 1, deps: Sequence[str] = (), metadata: bytes | None = None,
                  pkginfo: bool = True) -> Path:
    """A `<name>-<version>-r<release>.x86_64.tar.zst` of `pkgdir` laid out as the engine's.

    Members are owned 0:0; `.PKGINFO` (JSON) comes first, and the iglupkg file
    usr/share/iglupkg/<name> (`[pkg]` keys, colon-separated deps) is inside,
    unless `metadata` replaces it; `pkginfo=False` leaves .PKGINFO out.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"format": 1, "name": name, "version": version, "release": release,
            "arch": "x86_64", "deps": list(deps)}
    path = out_dir / f"{name}-{version}-r{release}.x86_64.tar.zst"
    rels = [e.relative_to(pkgdir).as_posix() for e in sorted(pkgdir.rglob("*"))]
    if metadata is None:
        fs = sorted({*rels, "usr", "usr/share", "usr/share/iglupkg", f"usr/share/iglupkg/{name}"})
        metadata = "\n".join(["[pkg]", f"pkgname={name}", f"pkgver={version}",
                              f"deps={':'.join(deps)}", "", "[license]", "", "[fs]", *fs, ""]
                             ).encode()
    now = int(time.time())

    def as_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def add_bytes(tar: tarfile.TarFile, rel: str, data: bytes) -> None:
        ti = tarfile.TarInfo(rel)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, now
        tar.addfile(ti, io.BytesIO(data))

    with open(path, "wb") as raw, \
            zstandard.ZstdCompressor(level=3).stream_writer(raw) as zw, \
            tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if pkginfo:
            add_bytes(tar, ".PKGINFO", json.dumps(info, indent=1).encode())
        for rel in rels:
            if rel != f"usr/share/iglupkg/{name}":
                tar.add(pkgdir / rel, arcname=rel, recursive=False, filter=as_root)
        for d in ("usr", "usr/share", "usr/share/iglupkg"):
            if d not in rels:
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, now
                tar.addfile(ti)
        add_bytes(tar, f"usr/share/iglupkg/{name}", metadata)
    return path


def sh(script: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run a build step; on failure show its output in the test report."""
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    full.update(env or {})
    proc = subprocess.run(["sh", "-ec", script], cwd=cwd, env=full, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        raise RuntimeError(f"build step failed in {cwd}:\n{script}\n{proc.stdout[-4000:]}")


def _key(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _cc(sysroot: Path) -> str:
    return (f"clang --target={TRIPLE} --sysroot={sysroot} -fuse-ld=lld "
            "--rtlib=compiler-rt --unwindlib=none")


def build_musl(work: Path, dest: Path) -> None:
    """musl 1.2.3 with clang; installs headers and libs into `dest` (also the sysroot)."""
    shutil.unpack_archive(DISTFILES / MUSL, work)
    libcc = subprocess.run(["clang", "--rtlib=compiler-rt", "-print-libgcc-file-name"],
                           capture_output=True, text=True, check=True).stdout.strip()
    sh(f'CC="clang --target={TRIPLE}" AR=llvm-ar RANLIB=llvm-ranlib LDFLAGS=-fuse-ld=lld '
       f'LIBCC="{libcc}" ./configure --prefix=/usr --syslibdir=/lib --target={TRIPLE}\n'
       f'make -j{os.cpu_count() or 2}\n'
       f'make DESTDIR="{dest}" install', cwd=work / "musl-1.2.3")


def build_mksh(work: Path, sysroot: Path, pkgdir: Path) -> None:
    """mksh R59c, dynamically linked against our musl; /bin/sh points at it."""
    shutil.unpack_archive(DISTFILES / MKSH, work)
    src = work / "mksh"
    sh("sh Build.sh -r", cwd=src, env={"CC": _cc(sysroot), "CFLAGS": "-Os"})
    (pkgdir / "bin").mkdir(parents=True)
    shutil.copy2(src / "mksh", pkgdir / "bin" / "mksh")
    os.symlink("mksh", pkgdir / "bin" / "sh")


def build_recipe_phases(recipe_dir: Path, work: Path, sysroot: Path, pkgdir: Path) -> dict:
    """Run a file-sources-only recipe's build and package phases with sh, as the engine will."""
    recipe = YAML(typ="safe").load((recipe_dir / "recipe.yaml").read_text())
    srcdir = work / "src"
    srcdir.mkdir(parents=True)
    for source in recipe["sources"]:
        shutil.copy2(recipe_dir / source["file"], srcdir / source["file"])
    env = {"CC": _cc(sysroot), "CFLAGS": "-Os -Wall", "LDFLAGS": "", "srcdir": str(srcdir),
           "pkgdir": str(pkgdir), "pkgname": recipe["name"], "pkgver": str(recipe["version"])}
    pkgdir.mkdir(parents=True)
    for phase in ("prepare", "build", "package"):
        if recipe.get(phase):
            sh(recipe[phase], cwd=srcdir, env=env)
    return recipe


def build_userland(cache: Path) -> dict[str, Path]:
    """Artifacts musl, mksh and iglunix-base, each rebuilt only when its inputs change.

    iglunix-base lists busybox among its deps; busybox needs kernel headers that
    nothing here builds yet, so its hand-made artifact depends on musl and mksh
    only. The lead swaps these artifacts for the build engine's.
    """
    core_key = _key(MUSL.encode(), MKSH.encode(), inspect.getsource(build_musl).encode(),
                    inspect.getsource(build_mksh).encode(),
                    inspect.getsource(pack_artifact).encode())
    core = cache / f"core-{core_key}"
    for needed in (MUSL, MKSH):
        if not (DISTFILES / needed).is_file():
            raise RuntimeError(f"{needed} not in {DISTFILES}; set IGLUBUILD_TEST_DISTFILES "
                               "to the folder of the shared distfiles")
    if not (core / "done").exists():
        if core.exists():
            shutil.rmtree(core)
        work = core / "work"
        (work / "musl").mkdir(parents=True)
        build_musl(work / "musl", core / "sysroot")
        musl_pkg = work / "musl-pkg"
        # The run-time part of musl: the dynamic loader link and libc.so.
        (musl_pkg / "lib").mkdir(parents=True)
        (musl_pkg / "usr" / "lib").mkdir(parents=True)
        shutil.copy2(core / "sysroot/usr/lib/libc.so", musl_pkg / "usr/lib/libc.so")
        os.symlink("/usr/lib/libc.so", musl_pkg / "lib/ld-musl-x86_64.so.1")
        pack_artifact(core, musl_pkg, "musl", "1.2.3")
        (work / "mksh").mkdir()
        build_mksh(work / "mksh", core / "sysroot", work / "mksh-pkg")
        pack_artifact(core, work / "mksh-pkg", "mksh", "R59c", deps=["musl"])
        shutil.rmtree(work)
        (core / "done").write_text("ok\n")
    base_key = _key(core_key.encode(), inspect.getsource(build_recipe_phases).encode(),
                    *[p.read_bytes() for p in sorted(BASE_RECIPE.iterdir()) if p.is_file()])
    base = cache / f"base-{base_key}"
    if not (base / "done").exists():
        if base.exists():
            shutil.rmtree(base)
        work = base / "work"
        recipe = build_recipe_phases(BASE_RECIPE, work, core / "sysroot", work / "pkg")
        pack_artifact(base, work / "pkg", "iglunix-base", str(recipe["version"]),
                      deps=[d for d in recipe["deps"] if d != "busybox"])
        shutil.rmtree(work)
        (base / "done").write_text("ok\n")
    found = [*core.glob("*.tar.zst"), *base.glob("*.tar.zst")]
    return {ARTIFACT_RE.match(p.name)["name"]: p for p in found}


def debian_kernel(cache: Path) -> Path:
    """vmlinuz of Debian's linux-image-cloud-amd64 (or $IGLUBUILD_TEST_KERNEL)."""
    given = os.environ.get("IGLUBUILD_TEST_KERNEL")
    if given:
        return Path(given)
    got = subprocess.run(["sh", str(REPO / "toolchain" / "debian-kernel.sh"),
                          str(cache / "kernel")], capture_output=True, text=True)
    if got.returncode:
        raise RuntimeError(f"toolchain/debian-kernel.sh failed (run apt-get update?): "
                           f"{got.stderr.strip()[-500:]}; or set IGLUBUILD_TEST_KERNEL")
    return Path(got.stdout.strip().splitlines()[-1])
