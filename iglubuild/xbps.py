"""xbps packages and repositories, as Iglunix's package manager reads them.

Iglunix installs software with xbps 0.59: `iglupkg` makes packages with
`xbps-create` and indexes them with `xbps-rindex -a`. This module writes the
same files in Python, so the build host (Debian) needs no xbps:

- `NAME-VERSION_RELEASE.ARCH-musl.xbps`: a zstd-compressed pax tar whose
  first members are `./props.plist` (the package's properties) and
  `./files.plist` (every file, conf file, link and folder), then the files
  and links under `./`, last walked first as xbps-create adds them. Folders
  are listed in files.plist but are not tar members: xbps's unpacker skips
  folder members, so xbps-create writes none.
- `ARCH-musl-repodata`: a zstd tar of `index.plist` (each package's
  properties plus `filename-sha256` / `filename-size`) and
  `index-meta.plist` (the signing public key, or the bytes `DEADBEEF` when
  the repository is not signed), exactly the two members xbps-rindex writes.
- Signing as `xbps-rindex --sign` / `--sign-pkg` do: an RSA PKCS#1 v1.5
  signature of the SHA-256 of each package in `PKG.sig2`, made by the
  `openssl` command; the repository's index-meta carries the PEM public key.

Every file is written to a temporary name and renamed, and the same inputs
give the same bytes (members in a fixed order, owner root, mtimes clamped to
SOURCE_DATE_EPOCH, plists with sorted keys, one zstd level).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import plistlib
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import zstandard

from iglubuild import integrity
from iglubuild.atomic import write_atomic
from iglubuild.elf import read_elf
from iglubuild.errors import BuildError
from iglubuild.run import base_env, require_tool, run
from iglubuild.unpack import follow_links

XBPS_SUFFIX = ".xbps"
SIG_SUFFIX = ".sig2"
ZSTD_LEVEL = 9  # what xbps-create and xbps-rindex use (compression-level=9)
LIBC = "musl"
LIBC_SHLIB = "libc.so"  # what every musl program NEEDs, provided by the musl package
UNSIGNED_META = b"DEADBEEF"  # xbps-rindex's index-meta.plist of an unsigned repository
SIGNED_BY = "iglubuild"
ET_DYN = 3


class XbpsError(BuildError):
    """A package or repository cannot be written, read or signed."""


class Entry(Protocol):
    """One path of a package, as iglubuild.package describes it."""

    path: str
    kind: str  # "file", "dir", "symlink"
    mode: int
    mtime: int
    size: int
    source: Path | None
    data: bytes | None
    target: str
    sha256: str


class Info(Protocol):
    """The package properties xbps needs (iglubuild.package.PackageInfo, read-only)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def release(self) -> int: ...
    @property
    def arch(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def license(self) -> str: ...
    @property
    def homepage(self) -> str: ...
    @property
    def deps(self) -> tuple[str, ...]: ...
    @property
    def backup(self) -> tuple[str, ...]: ...
    @property
    def base(self) -> str: ...


# ---------------------------------------------------------------- names


def xbps_arch(arch: str) -> str:
    """iglubuild's `x86_64` is xbps's `x86_64-musl` (Iglunix is a musl system)."""
    return arch if arch.endswith(f"-{LIBC}") else f"{arch}-{LIBC}"


def xbps_version(version: str) -> str:
    """A version xbps can split from its name: `-` and `_` become `.`.

    xbps reads `NAME-VERSION_REVISION` by its last `-` and last `_`, so the
    version may contain neither; recipes allow `_` (and refuse `-`, which
    an artifact made elsewhere may still carry).
    """
    return version.replace("-", ".").replace("_", ".")


def pkgver(info: Info) -> str:
    """`NAME-VERSION_RELEASE`, xbps's name for one build of a package."""
    return f"{info.name}-{xbps_version(info.version)}_{info.release}"


def xbps_filename(name: str, version: str, release: int, arch: str) -> str:
    """`NAME-VERSION_RELEASE.ARCH-musl.xbps`, as xbps-create names it."""
    return f"{name}-{xbps_version(version)}_{release}.{xbps_arch(arch)}{XBPS_SUFFIX}"


def package_filename(info: Info) -> str:
    return xbps_filename(info.name, info.version, info.release, info.arch)


def repodata_name(arch: str) -> str:
    return f"{xbps_arch(arch)}-repodata"


# ---------------------------------------------------------------- package


def _abs(rel: str) -> str:
    return "/" + rel.strip("/")


def shlibs(entries: Sequence[Entry]) -> tuple[list[str], list[str]]:
    """(shlib-provides, shlib-requires) from the ELF files' SONAME and NEEDED entries.

    As xbps-src does, a library this package provides itself is not
    required, so a program and its private library need nothing else.
    """
    provides: set[str] = set()
    requires: set[str] = set()
    for e in entries:
        if e.kind != "file" or e.source is None or e.size < 52:
            continue
        elf = read_elf(e.source)
        if elf is None:
            continue
        if elf.soname:
            provides.add(elf.soname)
        elif elf.elf_type == ET_DYN and elf.interpreter is None:
            # A shared object without a SONAME is found by its file name.
            name = PurePosixPath(e.path).name
            provides.add(name)
            if name.startswith("ld-musl-"):
                # musl's libc.so is its dynamic loader, and every musl program
                # needs "libc.so" (Void's musl template says shlib_provides=libc.so).
                provides.add(LIBC_SHLIB)
        requires.update(elf.needed)
    return sorted(provides), sorted(requires - provides)


def run_depends(info: Info, requires: Sequence[str] = ()) -> list[str]:
    """Dependency patterns: a sub-package needs its own build of the base, others any version.

    Recipes leave the C library out of `deps` (it is implied for every
    package), but xbps installs only what is asked for, and refuses a
    package whose `libc.so` nobody in the transaction provides; so a package
    linked against musl depends on musl, as xbps-src derives run_depends from
    shlib-requires.
    """
    out = []
    for dep in info.deps:
        if dep == info.base and info.name != info.base:
            out.append(f"{dep}>={xbps_version(info.version)}_{info.release}")
        else:
            out.append(f"{dep}>=0")
    if LIBC_SHLIB in requires and info.base != LIBC and LIBC not in info.deps:
        out.append(f"{LIBC}>=0")
    return out


def props(info: Info, entries: Sequence[Entry], packaged_with: str = "") -> dict[str, Any]:
    """props.plist: what xbps-create's options put there, from the recipe."""
    provides, requires = shlibs(entries)
    d: dict[str, Any] = {
        "architecture": xbps_arch(info.arch),
        "pkgname": info.name,
        "version": f"{xbps_version(info.version)}_{info.release}",
        "pkgver": pkgver(info),
        # xbps-create refuses a package without one; the name stands in.
        "short_desc": info.description or info.name,
        "installed_size": sum(e.size for e in entries if e.kind == "file"),
    }
    if info.homepage:
        d["homepage"] = info.homepage
    if info.license:
        d["license"] = info.license
    if packaged_with:
        d["packaged-with"] = packaged_with
    depends = run_depends(info, requires)
    if depends:
        d["run_depends"] = depends
    if info.backup:
        d["conf_files"] = [_abs(b) for b in info.backup]
    if provides:
        d["shlib-provides"] = provides
    if requires:
        d["shlib-requires"] = requires
    return d


def files_plist(info: Info, entries: Sequence[Entry]) -> dict[str, Any]:
    """files.plist: `files`, `conf_files`, `links`, `dirs`, as xbps-create groups them."""
    conf = {b.strip("/") for b in info.backup}
    groups: dict[str, list[dict[str, Any]]] = {"files": [], "conf_files": [], "links": [],
                                               "dirs": []}
    realpath = _realpath_in_package({e.path: e for e in entries})
    for e in entries:
        item: dict[str, Any] = {"file": _abs(e.path)}
        if e.kind == "file":
            item["sha256"] = e.sha256
            if e.mtime:
                item["mtime"] = e.mtime
            if e.size:
                item["size"] = e.size
            groups["conf_files" if e.path in conf else "files"].append(item)
        elif e.kind == "symlink":
            item["target"] = link_target(e.path, e.target, realpath)
            if e.mtime:
                item["mtime"] = e.mtime
            groups["links"].append(item)
        else:
            groups["dirs"].append(item)
    return {k: sorted(v, key=lambda item: _walk_key(item["file"]))
            for k, v in groups.items() if v}


def _walk_key(path: str) -> list[str]:
    """Where `path` comes in xbps-create's walk of the package's folder.

    It walks with scandir(alphasort): each folder's entries in order, a folder
    before what it holds, so `lzma/base.h` comes before `lzma.h` ('/' sorts
    after '.' in a plain string sort, not here).
    """
    return path.split("/")


def link_target(path: str, target: str, realpath: Callable[[str], str | None]) -> str:
    """A symlink's `target` in files.plist, spelled as xbps-create spells it.

    A plain relative link (`libz.so -> libz.so.1`) becomes the absolute path
    it names; an absolute one stays. One with `./` or `../` in it is what
    realpath() finds inside the package folder (`/sbin/acpid -> ../bin/busybox`
    is `/bin/busybox`), and stays as written where realpath() would fail (a
    target another package provides). Where xbps-create's realpath() would
    leave the package (an absolute link on the way, or `..` above the root),
    its answer depends on the build host; the target stays as written then,
    which xbps-pkgdb also accepts (it compares a relative target with readlink()).
    """
    if target.startswith("/"):
        return _squeeze_slashes(target)
    if "./" in target:
        real = realpath(path)
        return real if real is not None else _squeeze_slashes(target)
    return _squeeze_slashes(posixpath.join(posixpath.dirname(_abs(path)), target))


def _squeeze_slashes(path: str) -> str:
    """xbps_sanitize_path(): repeated slashes become one, nothing else changes."""
    return re.sub("/{2,}", "/", path)


def _realpath_in_package(tree: Mapping[str, Entry]) -> Callable[[str], str | None]:
    """realpath() with the package's folder as the root: a path's answer, or None.

    None where realpath() would fail (a missing part, a file used as a folder,
    a loop) or would leave the package (see link_target). The package's links
    and folders are gathered once, for all of its links.
    """
    links = {p: e.target for p, e in tree.items() if e.kind == "symlink"}
    parents = {posixpath.dirname(p) for p in tree}

    def is_folder(rel: str) -> bool | None:
        entry = tree.get(rel)
        if entry is None:
            return True if rel in parents else None
        return entry.kind == "dir"

    def realpath(path: str) -> str | None:
        real = follow_links("", path, links, is_folder)
        return None if real is None else "/" + real

    return realpath


def _plist(doc: Mapping[str, Any]) -> bytes:
    return plistlib.dumps(dict(doc), fmt=plistlib.FMT_XML, sort_keys=True)


def _tarinfo(name: str, mode: int, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    ti.mtime = mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    ti = _tarinfo(name, 0o644, mtime)
    ti.size = len(data)
    tar.addfile(ti, io.BytesIO(data))


def _write_zstd_tar(final: Path, fill: Callable[[tarfile.TarFile], None]) -> Path:
    """Write `final` as a zstd pax tar that `fill(tar)` fills, temp-then-rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        # Spooled first so zstd knows the size and sizes its tables to it.
        with os.fdopen(fd, "wb") as raw, tempfile.SpooledTemporaryFile(
            max_size=64 << 20, dir=str(final.parent)
        ) as spool:
            with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
            size = spool.tell()
            spool.seek(0)
            zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0).copy_stream(
                spool, raw, size=size)
            raw.flush()
            os.fsync(raw.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def write_package(info: Info, entries: Sequence[Entry], out_dir: Path, epoch: int,
                  packaged_with: str = "") -> Path:
    """Write `out_dir/NAME-VERSION_RELEASE.ARCH-musl.xbps` from a package's entries.

    `entries` are sorted paths (files, links, folders) with their hashes,
    as iglubuild.package computes them for its own artifact.
    """
    props_xml = _plist(props(info, entries, packaged_with))
    files_xml = _plist(files_plist(info, entries))

    def fill(tar: tarfile.TarFile) -> None:
        _add_bytes(tar, "./props.plist", props_xml, epoch)
        _add_bytes(tar, "./files.plist", files_xml, epoch)
        # xbps-create lists files.plist from the end of its walk's list and
        # writes the members from its head: the last walked comes first.
        for e in sorted(entries, key=lambda e: _walk_key(e.path), reverse=True):
            if e.kind == "dir":
                continue  # listed in files.plist; xbps skips folder members
            ti = _tarinfo(f"./{e.path}", e.mode, e.mtime)
            if e.kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.target
                ti.mode = 0o777
                tar.addfile(ti)
            elif e.data is not None:
                ti.size = len(e.data)
                tar.addfile(ti, io.BytesIO(e.data))
            else:
                assert e.source is not None
                ti.size = e.size
                with e.source.open("rb") as f:
                    tar.addfile(ti, f)

    out_dir.mkdir(parents=True, exist_ok=True)
    final = _write_zstd_tar(out_dir / package_filename(info), fill)
    integrity.seal_artifact(final)  # checked when indexed and when put on an image
    return final


# ---------------------------------------------------------------- reading


def read_plist_member(archive: Path, member: str) -> Any:
    """One plist member of an .xbps or repodata file (an XbpsError if it is broken)."""
    try:
        with archive.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True
        ) as zr, tarfile.open(fileobj=zr, mode="r|") as tar:
            for m in tar:
                if m.name.lstrip("./") == member.lstrip("./"):
                    f = tar.extractfile(m)
                    assert f is not None
                    data = f.read()
                    if data == UNSIGNED_META:
                        return {}
                    return plistlib.loads(data)
    except FileNotFoundError as exc:
        raise XbpsError(f"{archive}: no such file") from exc
    except (tarfile.TarError, zstandard.ZstdError, EOFError, plistlib.InvalidFileException,
            ValueError) as exc:
        raise XbpsError(f"{archive}: not a valid xbps file ({exc})",
                        hint="delete it and build again") from exc
    raise XbpsError(f"{archive}: no {member} in it", hint="was it made by xbps or iglubuild?")


def read_repodata(packages_dir: Path, arch: str = "x86_64") -> dict[str, dict[str, Any]]:
    """The repository index: package name -> its index entry ({} if there is none yet)."""
    path = packages_dir / repodata_name(arch)
    if not path.is_file():
        return {}
    index = read_plist_member(path, "index.plist")
    return dict(index) if isinstance(index, dict) else {}


# ---------------------------------------------------------------- keys and signing


@dataclass(frozen=True)
class PublicKey:
    """An RSA public key as xbps keeps it: PEM text, size in bits, fingerprint."""

    pem: bytes
    bits: int
    fingerprint: str  # OpenSSH-style MD5, aa:bb:..., the name of its keys/ file

    def keys_plist(self, signed_by: str = SIGNED_BY) -> bytes:
        """The `var/db/xbps/keys/<fingerprint>.plist` that makes a root trust this key."""
        return _plist({"public-key": self.pem, "public-key-size": self.bits,
                       "signature-by": signed_by})


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at `pos`."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return tag, pos, pos + length


def parse_public_key(pem: bytes) -> PublicKey:
    """Read an RSA `BEGIN PUBLIC KEY` PEM (SubjectPublicKeyInfo): size and fingerprint.

    The fingerprint is xbps's (lib/pubkey2fp.c): MD5 of the OpenSSH wire
    form `ssh-rsa`, e, n, written as colon-separated hex.
    """
    lines = [ln for ln in pem.decode("ascii", "replace").splitlines()
             if ln and not ln.startswith("-----")]
    try:
        der = base64.b64decode("".join(lines), validate=True)
        _, body, _ = _der_item(der, 0)  # SubjectPublicKeyInfo
        _, alg_start, alg_end = _der_item(der, body)  # AlgorithmIdentifier
        tag, bits_start, _ = _der_item(der, alg_end)
        if tag != 0x03:
            raise ValueError("no BIT STRING")
        _, rsa_body, _ = _der_item(der, bits_start + 1)  # RSAPublicKey, after unused-bits byte
        _, n_start, n_end = _der_item(der, rsa_body)
        _, e_start, e_end = _der_item(der, n_end)
    except (ValueError, IndexError) as exc:
        raise XbpsError(f"not an RSA public key ({exc})",
                        hint="make one with `iglubuild keygen`") from exc
    n = der[n_start:n_end].lstrip(b"\0")
    e = der[e_start:e_end].lstrip(b"\0")

    def ssh(b: bytes) -> bytes:
        b = b"\0" + b if b and b[0] & 0x80 else b
        return len(b).to_bytes(4, "big") + b

    wire = ssh(b"ssh-rsa") + ssh(e) + ssh(n)
    digest = hashlib.md5(wire, usedforsecurity=False).hexdigest()
    fp = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
    return PublicKey(pem=pem, bits=len(n) * 8, fingerprint=fp)


def public_key(private_key: Path) -> PublicKey:
    """The public half of a private key file, as xbps-rindex puts it in index-meta."""
    if not private_key.is_file():
        raise XbpsError(f"signing key {private_key} does not exist",
                        hint="make one with `iglubuild keygen`, or unset the signing key")
    openssl = require_tool("openssl")
    proc = run([openssl, "pkey", "-in", private_key, "-pubout"], capture=True, check=False,
               env=base_env())
    if proc.returncode != 0:
        # openssl's own message may quote the key file; say only what failed.
        raise XbpsError(f"{private_key}: not a readable private key",
                        hint="make one with `iglubuild keygen`")
    return parse_public_key(proc.stdout.encode("ascii"))


def sign_file(private_key: Path, path: Path) -> Path:
    """Write `path.sig2`: RSA PKCS#1 v1.5 over SHA-256 of `path`, as `--sign-pkg` does."""
    openssl = require_tool("openssl")
    sig = path.with_name(path.name + SIG_SUFFIX)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{sig.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = run([openssl, "dgst", "-sha256", "-sign", private_key, "-out", tmp, path],
                   capture=True, check=False, env=base_env())
        if proc.returncode != 0:
            raise XbpsError(f"cannot sign {path.name} with {private_key}",
                            hint="is it an RSA private key without a passphrase?")
        tmp.chmod(0o644)
        os.replace(tmp, sig)
    finally:
        tmp.unlink(missing_ok=True)
    return sig


# ---------------------------------------------------------------- repository


def index_entry(package: Path) -> dict[str, Any]:
    """A package's index.plist entry, as `xbps-rindex -a` makes it from props.plist.

    Its checksum comes from the package's seal (iglubuild.integrity): a package
    changed since it was packed is refused rather than indexed, since the index
    is what every client trusts it by.
    """
    digest = integrity.intact_sum(package)
    if digest is None:
        raise XbpsError(f"{package}: changed since it was packed (its sha256 differs from "
                        "the one recorded then); not indexed",
                        hint=f"build {_props_name(package)} again (pkg --force)")
    d = dict(read_plist_member(package, "props.plist"))
    for key in ("pkgname", "version", "packaged-with"):
        d.pop(key, None)
    d["filename-sha256"] = digest
    d["filename-size"] = package.stat().st_size
    return d


def _props_name(package: Path) -> str:
    stem = package.name.rsplit(".", 2)[0]  # NAME-VERSION_RELEASE
    return stem.rsplit("-", 1)[0]


def _published_key(packages_dir: Path, arch: str) -> bytes | None:
    """The public key in the current repodata's index-meta, if it is signed."""
    try:
        meta = read_plist_member(packages_dir / repodata_name(arch), "index-meta.plist")
    except XbpsError:
        return None
    key = meta.get("public-key") if isinstance(meta, dict) else None
    return key if isinstance(key, bytes) else None


def twin_from_artifact(artifact: Path) -> Path:
    """Write the .xbps twin of an iglubuild `.tar.zst` artifact (one packed before
    iglubuild wrote .xbps files); it gets the artifact's mtime, so the newest
    build of a package stays the newest."""
    from iglubuild.package import PKGINFO, PackageInfo, _Entry, open_artifact

    entries: list[_Entry] = []
    info: PackageInfo | None = None
    epoch = 0
    with tempfile.TemporaryDirectory(prefix=".xbps-twin.", dir=artifact.parent) as tmp, \
            open_artifact(artifact) as tar:
        for n, m in enumerate(tar):
            f = tar.extractfile(m) if m.isfile() else None
            if m.name == PKGINFO:
                assert f is not None
                meta = json.loads(f.read())
                info = PackageInfo(
                    name=str(meta["name"]), version=str(meta["version"]),
                    release=int(meta["release"]), arch=str(meta["arch"]),
                    description=str(meta.get("description", "")),
                    license=str(meta.get("license", "")),
                    homepage=str(meta.get("homepage", "")),
                    deps=tuple(meta.get("deps", ())), backup=tuple(meta.get("backup", ())),
                    base=str(meta.get("base", "")), signature=str(meta.get("signature", "")))
                epoch = int(meta.get("build_date") or 0)
                continue
            rel = m.name.rstrip("/")
            if m.isdir():
                entries.append(_Entry(rel, "dir", m.mode & 0o7777, int(m.mtime)))
            elif m.issym():
                entries.append(_Entry(rel, "symlink", 0o777, int(m.mtime), target=m.linkname))
            elif f is not None:
                # Spilled to disk: the ELF reader takes a path, and files may be large.
                spill = Path(tmp) / str(n)
                h = hashlib.sha256()
                with spill.open("wb") as out:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
                entries.append(_Entry(rel, "file", m.mode & 0o7777, int(m.mtime), size=m.size,
                                      source=spill, sha256=h.hexdigest()))
        if info is None:
            raise XbpsError(f"{artifact}: no {PKGINFO}", hint="was it made by iglubuild?")
        from iglubuild import __version__

        entries.sort(key=lambda e: e.path)
        epoch = epoch or max((e.mtime for e in entries), default=0)
        twin = write_package(info, entries, artifact.parent, epoch,
                             packaged_with=f"iglubuild {__version__}")
    digest = integrity.intact_sum(twin)  # from the seal write_package made: no re-hash
    st = artifact.stat()
    os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))
    if digest is not None:
        integrity.seal(twin, "sha256", digest)  # again: the new mtime is part of the seal
    return twin


def add_missing_twins(packages_dir: Path) -> list[Path]:
    """Make the .xbps twin of every artifact in `packages_dir` that has none."""
    from iglubuild.package import SUFFIX, read_metadata

    made = []
    for artifact in sorted(packages_dir.glob(f"*{SUFFIX}")):
        # From .PKGINFO (the artifact's head), not the file name: a version
        # with '-' makes the name ambiguous.
        meta = read_metadata(artifact)
        twin = packages_dir / xbps_filename(str(meta["name"]), str(meta["version"]),
                                            int(meta["release"]), str(meta["arch"]))
        if not twin.exists():
            made.append(twin_from_artifact(artifact))
    return made


def write_repository(packages_dir: Path, arch: str = "x86_64", *,
                     signing_key: Path | None = None, signed_by: str = SIGNED_BY,
                     epoch: int | None = None) -> Path:
    """(Re)write `ARCH-musl-repodata` for the .xbps files in `packages_dir`.

    Artifacts packed before iglubuild wrote .xbps files get their twin first
    (`add_missing_twins`). The index is made afresh from the packages present, so a package whose
    file is gone leaves the index; where several builds of one package sit
    side by side, the newest file is the one listed. With a signing key,
    every package gets a `.sig2` and index-meta carries the public key; a
    `.sig2` whose package is gone is deleted.
    """
    from iglubuild.package import source_date_epoch

    epoch = source_date_epoch(epoch)
    add_missing_twins(packages_dir)
    suffix = f".{xbps_arch(arch)}{XBPS_SUFFIX}"
    chosen: dict[str, Path] = {}
    for pkg in sorted(packages_dir.glob(f"*{suffix}")):
        name = _props_name(pkg)
        if name not in chosen or pkg.stat().st_mtime_ns > chosen[name].stat().st_mtime_ns:
            chosen[name] = pkg
    index = {name: index_entry(pkg) for name, pkg in sorted(chosen.items())}
    meta = UNSIGNED_META
    if signing_key is not None:
        key = public_key(signing_key)
        meta = _plist({"public-key": key.pem, "public-key-size": key.bits,
                       "signature-by": signed_by, "signature-type": "rsa"})
        # Signing costs one openssl run per package: a signature made by this
        # same key after the package was last written is kept.
        same_key = _published_key(packages_dir, arch) == key.pem
        for pkg in chosen.values():
            sig = pkg.with_name(pkg.name + SIG_SUFFIX)
            if (same_key and sig.is_file() and sig.stat().st_size == key.bits // 8
                    and sig.stat().st_mtime_ns >= pkg.stat().st_mtime_ns):
                continue
            sign_file(signing_key, pkg)
    for sig in packages_dir.glob(f"*{suffix}{SIG_SUFFIX}"):
        if not sig.with_name(sig.name[:-len(SIG_SUFFIX)]).exists():
            sig.unlink()
    index_xml = _plist(index)

    def fill(tar: tarfile.TarFile) -> None:
        _add_bytes(tar, "index.plist", index_xml, epoch)
        _add_bytes(tar, "index-meta.plist", meta, epoch)

    return _write_zstd_tar(packages_dir / repodata_name(arch), fill)


def keys_dir(root: Path) -> Path:
    """Where xbps looks for trusted repository keys in a root."""
    return root / "var" / "db" / "xbps" / "keys"


def trust_key(root: Path, key: PublicKey, signed_by: str = SIGNED_BY) -> Path:
    """Install `key` as trusted in `root` (what answering yes to xbps-install's prompt does)."""
    folder = keys_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomic(folder / f"{key.fingerprint}.plist", key.keys_plist(signed_by))


# ---------------------------------------------------------------- installed-package database

PKGDB = "pkgdb-0.38.plist"  # the name xbps 0.59 reads (XBPS_PKGDB)
METADIR = "var/db/xbps"


def read_member_bytes(archive: Path, member: str) -> bytes:
    """The raw bytes of one member of an .xbps file."""
    with archive.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(
        raw, read_across_frames=True
    ) as zr, tarfile.open(fileobj=zr, mode="r|") as tar:
        for m in tar:
            if m.name == f"./{member}":
                f = tar.extractfile(m)
                assert f is not None
                return f.read()
    raise XbpsError(f"{archive}: no {member} in it", hint="was it made by xbps or iglubuild?")


def write_pkgdb(metadir: Path, packages: Sequence[Path], epoch: int,
                repository: str = "") -> Path:
    """Record `packages` (.xbps files already unpacked in the root) as installed.

    What xbps-install leaves in `var/db/xbps`: `pkgdb-0.38.plist` with each
    package's repository entry plus `state`, `install-date` and the SHA-256 of
    `.NAME-files.plist`, its files.plist, which `xbps-pkgdb -a` checks the
    files against. The date is SOURCE_DATE_EPOCH, so an image is reproducible.
    """
    import time

    metadir.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))
    db: dict[str, Any] = {"_XBPS_ALTERNATIVES_": {}}
    for pkg in packages:
        entry = index_entry(pkg)
        name = _props_name(pkg)
        files = read_member_bytes(pkg, "files.plist")
        write_atomic(metadir / f".{name}-files.plist", files)
        entry.update({"pkgname": name, "state": "installed", "install-date": date,
                      "metafile-sha256": hashlib.sha256(files).hexdigest()})
        if repository:
            entry["repository"] = repository
        db[name] = entry
    return write_atomic(metadir / PKGDB, _plist(db))
