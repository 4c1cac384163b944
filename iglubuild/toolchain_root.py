"""The build root: a Debian system made from one manifest, identified by a hash.

`toolchain/buildroot.toml` says what goes in (a debootstrap base and a list
of packages). `create` makes it under <build-dir>/toolchain/root-<id> with
debootstrap, then apt-get inside it (in a sandbox with /proc, /dev and the
network), into a temporary folder renamed only when complete.

The toolchain id is a hash of the manifest's content and of the package
versions resolved inside the root (dpkg-query), so it changes when the
manifest does or when Debian ships a new version; it enters every package's
input signature. A record `root-<id>.json` beside the root says which
manifest made it, so a second `create` with the same manifest does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from iglubuild.atomic import write_atomic
from iglubuild.errors import BuildError, UsageError
from iglubuild.executors.sandbox import (
    base_mounts,
    remove_scratch,
    require_root,
    sandbox_argv,
    write_spec,
)
from iglubuild.run import CommandError, base_env, require_tool, run
from iglubuild.settings import Settings

log = logging.getLogger("iglubuild.toolchain_root")

MANIFEST = Path("toolchain") / "buildroot.toml"
ID_LENGTH = 16
_BASE_KEYS = {"suite", "variant", "mirror"}
_PACKAGE_KEYS = {"install"}


@dataclass(frozen=True)
class Manifest:
    """What the build root contains, as declared in buildroot.toml."""

    path: Path
    suite: str
    variant: str
    mirror: str | None
    packages: tuple[str, ...]

    def canonical(self) -> str:
        """The manifest's content without comments or formatting (what the id hashes)."""
        return json.dumps(
            {"suite": self.suite, "variant": self.variant, "mirror": self.mirror,
             "packages": sorted(set(self.packages))},
            sort_keys=True,
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


@dataclass(frozen=True)
class BuildRoot:
    """One finished build root and the record of how it was made."""

    path: Path
    id: str
    manifest_digest: str
    packages: dict[str, str]  # name -> version, as dpkg-query reports inside the root
    created: float

    @property
    def record(self) -> Path:
        return self.path.with_name(self.path.name + ".json")


def _unknown(path: Path, table: str, data: dict[str, Any], known: set[str]) -> None:
    for key in data:
        if key not in known:
            raise UsageError(f"{path}: unknown key {key!r} in [{table}]",
                             hint="known keys: " + ", ".join(sorted(known)))


def load_manifest(path: Path) -> Manifest:
    """Read and check buildroot.toml; every problem is a one-line UsageError."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no build root manifest",
                         hint="create toolchain/buildroot.toml or pass --manifest") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}", hint="the manifest must be valid TOML") from exc
    for key in data:
        if key not in ("base", "packages"):
            raise UsageError(f"{path}: unknown table [{key}]", hint="known: [base], [packages]")
    base = data.get("base", {})
    pkgs = data.get("packages", {})
    _unknown(path, "base", base, _BASE_KEYS)
    _unknown(path, "packages", pkgs, _PACKAGE_KEYS)
    install = pkgs.get("install", [])
    if not isinstance(install, list) or not all(isinstance(p, str) and p for p in install):
        raise UsageError(f"{path}: [packages] install must be a list of package names",
                         hint='e.g. install = ["clang", "lld"]')
    bad = [p for p in install if not _valid_package(p)]
    if bad:
        raise UsageError(f"{path}: invalid Debian package name {bad[0]!r}",
                         hint="names are lower case letters, digits and + - .")
    for key in ("suite", "variant"):
        if not isinstance(base.get(key, ""), str):
            raise UsageError(f"{path}: [base] {key} must be a string")
    return Manifest(
        path=path,
        suite=base.get("suite", "bookworm"),
        variant=base.get("variant", "minbase"),
        mirror=base.get("mirror"),
        packages=tuple(install),
    )


def _valid_package(name: str) -> bool:
    return (len(name) >= 2 and name[0].isalnum() and name == name.lower()
            and all(c.isalnum() or c in "+-." for c in name))


def toolchain_id(manifest: Manifest, packages: dict[str, str]) -> str:
    """Hash of the manifest's content and of the resolved package versions."""
    h = hashlib.sha256()
    h.update(manifest.canonical().encode())
    for name in sorted(packages):
        h.update(f"\n{name}={packages[name]}".encode())
    return h.hexdigest()[:ID_LENGTH]


def toolchain_dir(build_dir: Path) -> Path:
    return build_dir / "toolchain"


def manifest_path(settings: Settings, override: Path | None = None) -> Path:
    """The manifest to use: --manifest, else toolchain/buildroot.toml in the project."""
    if override is not None:
        return override
    return settings.project_root / MANIFEST


def list_roots(build_dir: Path) -> list[BuildRoot]:
    """Every finished build root under <build-dir>/toolchain, newest first."""
    found = []
    tdir = toolchain_dir(build_dir)
    for record in sorted(tdir.glob("root-*.json")) if tdir.is_dir() else []:
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            root = BuildRoot(
                path=record.with_suffix(""), id=data["id"],
                manifest_digest=data["manifest_digest"], packages=data["packages"],
                created=float(data["created"]),
            )
        except (OSError, ValueError, KeyError):
            continue  # a damaged record is not a finished root
        if root.path.is_dir():
            found.append(root)
    return sorted(found, key=lambda r: r.created, reverse=True)


def find_root(build_dir: Path, manifest: Manifest) -> BuildRoot | None:
    """The finished build root made from this manifest's content, if any."""
    for root in list_roots(build_dir):
        if root.manifest_digest == manifest.digest:
            return root
    return None


def current_root(settings: Settings, manifest: Path | None = None) -> BuildRoot:
    """The build root matching the project's manifest, or a one-line error saying how to make it."""
    m = load_manifest(manifest_path(settings, manifest))
    root = find_root(settings.build_dir, m)
    if root is None:
        raise BuildError(f"no build root for {m.path} in {toolchain_dir(settings.build_dir)}",
                         hint="run: iglubuild toolchain build")
    return root


def installed_packages(root: Path) -> dict[str, str]:
    """Package versions installed in `root`, read with dpkg-query against its database."""
    proc = run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W",
                "-f", "${db:Status-Status} ${Package} ${Version}\n"], capture=True)
    packages = {}
    for line in proc.stdout.splitlines():
        status, name, version = line.split(" ", 2)
        if status == "installed":
            packages[name] = version
    return packages


def _in_root(root: Path, argv: list[str], log_file: IO[bytes] | None, scratch: Path) -> None:
    """Run a command chrooted in `root` (writable, with network) with /proc, /dev and /tmp."""
    spec = scratch / "spec"
    env = base_env({"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"})
    write_spec(spec, root, base_mounts(), argv, Path("/"), env, network=True)
    cmd = sandbox_argv(spec, network=True)
    run(cmd, env=base_env(), stdout=log_file, stderr=subprocess.STDOUT if log_file else None)


def create(build_dir: Path, manifest: Manifest, log_file: IO[bytes] | None = None,
           force: bool = False) -> tuple[BuildRoot, bool]:
    """Make the build root for `manifest` unless it exists; returns (root, made_now).

    Everything happens in <build-dir>/toolchain/.tmp-*; the folder is renamed to
    root-<id> and its record written only when complete, so an interrupted build
    leaves no root that looks finished.
    """
    require_root("toolchain build")
    if not force:
        existing = find_root(build_dir, manifest)
        if existing is not None:
            return existing, False
    debootstrap = require_tool("debootstrap")
    require_tool("dpkg-query", "dpkg")
    tdir = toolchain_dir(build_dir)
    tdir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(tdir)
    tmp = tdir / f".tmp-{os.getpid()}-{int(time.time())}"
    scratch = tdir / f".scratch-{os.getpid()}"
    tmp.mkdir()
    scratch.mkdir(exist_ok=True)
    try:
        # debootstrap mounts /proc and /sys in the target while it works; in a
        # private mount namespace those mounts cannot outlive it, even on Ctrl-C.
        unshare = require_tool("unshare", "util-linux")
        argv = [unshare, "--mount", "--propagation", "private", "--fork", "--kill-child",
                debootstrap, f"--variant={manifest.variant}", manifest.suite, str(tmp / "root")]
        if manifest.mirror:
            argv.append(manifest.mirror)
        _step("debootstrap", argv, log_file)
        root = tmp / "root"
        # Never start services inside the build root (distcc's package has a daemon).
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
        policy.chmod(0o755)
        if manifest.packages:
            _in_root(root, ["/usr/bin/apt-get", "update"], log_file, scratch)
            _in_root(root, ["/usr/bin/apt-get", "install", "-y", "--no-install-recommends",
                            *manifest.packages], log_file, scratch)
            _in_root(root, ["/usr/bin/apt-get", "clean"], log_file, scratch)
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        packages = installed_packages(root)
        missing = [p for p in manifest.packages if p not in packages
                   and not any(n.split(":")[0] == p for n in packages)]
        if missing:
            raise BuildError(f"build root: packages not installed: {', '.join(missing)}",
                             hint="check the package names in the manifest")
        ident = toolchain_id(manifest, packages)
        created = time.time()
        final = tdir / f"root-{ident}"
        record = {"id": ident, "manifest": str(manifest.path),
                  "manifest_digest": manifest.digest, "packages": packages,
                  "created": created}
        (root / "etc/iglubuild-toolchain.json").write_text(
            json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        root.rename(final)
        write_atomic(final.with_name(final.name + ".json"),
                     json.dumps(record, indent=1, sort_keys=True) + "\n")
        return BuildRoot(final, ident, manifest.digest, packages, created), True
    finally:
        remove_scratch(scratch)
        remove_scratch(tmp)


def _step(what: str, argv: list[str], log_file: IO[bytes] | None) -> None:
    try:
        run(argv, env=base_env(), stdout=log_file,
            stderr=subprocess.STDOUT if log_file else None)
    except CommandError as exc:
        raise BuildError(f"build root: {what} failed: {exc.message}",
                         hint="see the toolchain log") from exc


def _remove_stale_temps(tdir: Path) -> None:
    # A temp folder of a process that no longer runs is a leftover of a crash.
    for p in tdir.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            remove_scratch(p)


def size_bytes(path: Path) -> int:
    """Disk use of a tree (apparent sizes of regular files, hard links once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def export(root: BuildRoot, dest: Path) -> Path:
    """Write the build root as a tarball (compression from the suffix), via a temp name."""
    require_tool("tar")
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    suffixes = "".join(dest.suffixes[-2:])
    compress = {".tar.zst": "--zstd", ".tar.gz": "--gzip", ".tgz": "--gzip",
                ".tar.xz": "--xz"}.get(suffixes)
    argv = ["tar", "-C", str(root.path), "--numeric-owner", "--xattrs", "-cf", str(tmp)]
    if compress:
        argv.insert(1, compress)
    try:
        _step("tar", [*argv, "."], None)
        tmp.rename(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
