"""Artifacts: split pkgdir into sub-packages, describe them, pack them reproducibly.

An artifact is `<name>-<version>-r<release>.<arch>.tar.zst`. It carries its own
metadata twice: `.PKGINFO` (JSON, first member, what iglubuild reads back)
and `usr/share/iglupkg/<name>` in the format Iglunix's iglupkg writes
(`[pkg]`, `[license]`, `[backup]`, `[fs]`), so an installed system knows what
it holds without iglubuild.

Packing is deterministic so that two builds of the same inputs give the same
bytes: members sorted, owner root:root (0:0), mtimes clamped to
SOURCE_DATE_EPOCH, integer times only (no varying pax headers), one fixed
zstd level, single-threaded. Everything is written to a temporary name and
renamed, so a half-written artifact or index is never visible.

The same module reads artifacts back: `read_metadata`, and `install_artifact`,
the one installer, which extracts safely into a root and tracks which package
owns each path (used for sysroots and by the image stage).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import zstandard

from iglubuild import __version__, integrity, xbps
from iglubuild.atomic import write_atomic
from iglubuild.errors import BuildError, disk_full, is_disk_full

PKGINFO = ".PKGINFO"
METADATA_DIR = "usr/share/iglupkg"
FORMAT_VERSION = 1
ZSTD_LEVEL = 12  # fixed: part of what makes two packings byte-identical
DEFAULT_EPOCH = 315532800  # 1980-01-01, when neither caller nor env gives SOURCE_DATE_EPOCH
SUFFIX = ".tar.zst"
SPOOL_IN_MEMORY = 64 << 20  # bigger packages are spooled to disk before compressing


class PackageError(BuildError):
    """A tree cannot be packed, or an artifact cannot be read or installed."""


@dataclass(frozen=True)
class PackageInfo:
    """What goes into an artifact's metadata besides its file list."""

    name: str
    version: str
    release: int
    arch: str
    description: str = ""
    license: str = ""
    homepage: str = ""
    deps: tuple[str, ...] = ()
    backup: tuple[str, ...] = ()
    base: str = ""  # the recipe this (sub-)package came from
    signature: str = ""  # the build plan's input signature

    @property
    def filename(self) -> str:
        return artifact_name(self.name, self.version, self.release, self.arch)


def artifact_name(name: str, version: str, release: int, arch: str) -> str:
    """`<name>-<version>-r<release>.<arch>.tar.zst`."""
    return f"{name}-{version}-r{release}.{arch}{SUFFIX}"


def source_date_epoch(value: int | None = None) -> int:
    """The clamp for mtimes: the caller's value, else $SOURCE_DATE_EPOCH, else 1980-01-01."""
    if value is not None:
        return value
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(env) if env.isdigit() else DEFAULT_EPOCH


# ---------------------------------------------------------------- splitting


def _match(pattern: str, rel: str) -> bool:
    """Does `pattern` name `rel` or one of its parent folders?

    Globs match segment by segment (`*` stays inside one folder, `**` spans
    any number), so `usr/lib/*.a` takes `usr/lib/libz.a` but not
    `usr/lib/x/y.a`, and `usr/include` takes the whole folder.
    """
    pat = [p for p in pattern.strip("/").split("/") if p and p != "."]
    parts = rel.split("/")

    def walk(pi: int, si: int) -> bool:
        if pi == len(pat):
            return True  # the pattern named this path or a parent of it
        if si == len(parts):
            return False
        if pat[pi] == "**":
            return any(walk(pi + 1, k) for k in range(si, len(parts) + 1))
        return fnmatch.fnmatchcase(parts[si], pat[pi]) and walk(pi + 1, si + 1)

    return bool(pat) and walk(0, 0)


def require_real_folder(root: Path, what: str = "$pkgdir") -> None:
    """Refuse a root that is a symlink or not a folder (a phase may have replaced it).

    `rm -rf "$pkgdir"; ln -s /etc "$pkgdir"` in a package phase would otherwise
    pack the host's /etc: the walk below follows a symlinked top.
    """
    try:
        st = os.lstat(root)
    except FileNotFoundError as exc:
        raise PackageError(f"{what} {root} does not exist",
                           hint="the package phase must install into $pkgdir") from exc
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise PackageError(f"{what} {root} is {kind}; refusing to pack it",
                           hint="the package phase must fill $pkgdir, not replace it")


def scan_tree(root: Path) -> list[str]:
    """Every path under `root`, relative, POSIX, sorted; symlinks are not followed."""
    require_real_folder(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return sorted(found)


def split_tree(root: Path, subpackages: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Assign each path under `root` to "" (the main package) or a sub-package.

    A path goes to the first sub-package (in recipe order) with a glob naming
    it or a parent folder. Folders a sub-package's files live in are listed
    for it too, so each artifact unpacks on its own; the main package keeps
    an unclaimed folder only if something of its own is inside, or the
    folder was empty to begin with.
    """
    paths = scan_tree(root)
    owner: dict[str, str] = {}
    for rel in paths:
        owner[rel] = next(
            (sub for sub, globs in subpackages.items() if any(_match(g, rel) for g in globs)), ""
        )
    result: dict[str, set[str]] = {"": set(), **{sub: set() for sub in subpackages}}
    is_dir = {rel: (root / rel).is_dir() and not (root / rel).is_symlink() for rel in paths}
    for rel in paths:
        who = owner[rel]
        if is_dir[rel] and who == "":
            continue  # decided below, once we know what is inside
        result[who].add(rel)
        for parent in PurePosixPath(rel).parents:
            if str(parent) != ".":
                result[who].add(str(parent))
    for rel in paths:
        if is_dir[rel] and owner[rel] == "" and not any(os.scandir(root / rel)):
            result[""].add(rel)
            result[""].update(str(p) for p in PurePosixPath(rel).parents if str(p) != ".")
    return {k: sorted(v) for k, v in result.items()}


# ---------------------------------------------------------------- metadata


@dataclass
class _Entry:
    """One tar member: a path in pkgdir, or bytes made here (metadata)."""

    path: str
    kind: str  # "file", "dir", "symlink"
    mode: int
    mtime: int
    size: int = 0
    source: Path | None = None
    data: bytes | None = None
    target: str = ""
    sha256: str = ""


def _open_nofollow(path: Path) -> io.BufferedReader:
    """Open a file of the tree for reading; a symlink put in its place is an error."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def _hash_tree_file(path: Path) -> str:
    with _open_nofollow(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _hash_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _entry_from_disk(root: Path, rel: str, epoch: int) -> _Entry:
    path = root / rel
    st = path.lstat()
    mtime = min(int(st.st_mtime), epoch)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return _Entry(rel, "symlink", 0o777, mtime, target=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return _Entry(rel, "dir", mode, mtime)
    if stat.S_ISREG(st.st_mode):
        return _Entry(rel, "file", mode, mtime, size=st.st_size, source=path,
                      sha256=_hash_tree_file(path))
    raise PackageError(f"{path}: not a file, folder or symlink",
                       hint="packages may not contain device nodes, fifos or sockets")


def _dir_entry(rel: str, epoch: int) -> _Entry:
    return _Entry(rel, "dir", 0o755, epoch)


def iglupkg_metadata(info: PackageInfo, paths: Iterable[str]) -> bytes:
    """Iglunix's own metadata file, as iglupkg's `_genmeta` writes it.

    `[fs]` lists every path of the package like `find *` in pkgdir does,
    the metadata file itself included; deps are colon separated.
    """
    lines = ["[pkg]", f"pkgname={info.name}", f"pkgver={info.version}",
             f"deps={':'.join(info.deps)}", "", "[license]"]
    if info.license:
        lines.append(info.license)
    lines += ["", "[backup]", *info.backup, "", "[fs]", *sorted(paths)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _pkginfo(info: PackageInfo, entries: Sequence[_Entry], epoch: int) -> bytes:
    files = []
    for e in entries:
        item: dict[str, Any] = {"path": e.path, "type": e.kind}
        if e.kind == "file":
            item.update(mode=f"{e.mode:04o}", size=e.size, sha256=e.sha256)
        elif e.kind == "dir":
            item["mode"] = f"{e.mode:04o}"
        else:
            item["target"] = e.target
        files.append(item)
    doc = {
        "format": FORMAT_VERSION,
        "name": info.name,
        "base": info.base or info.name,
        "version": info.version,
        "release": info.release,
        "arch": info.arch,
        "description": info.description,
        "license": info.license,
        "homepage": info.homepage,
        "deps": list(info.deps),
        "backup": list(info.backup),
        "signature": info.signature,
        # SOURCE_DATE_EPOCH, not the wall clock: the same inputs give the same bytes.
        "build_date": epoch,
        "installed_size": sum(e.size for e in entries),
        "files": files,
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


# ---------------------------------------------------------------- packing


def pack(root: Path, paths: Sequence[str], info: PackageInfo, out_dir: Path,
         epoch: int | None = None) -> Path:
    """Pack `paths` (relative to `root`) plus metadata into `out_dir/<artifact name>`."""
    epoch = source_date_epoch(epoch)
    require_real_folder(root)
    entries = {rel: _entry_from_disk(root, rel, epoch) for rel in paths}
    meta_rel = f"{METADATA_DIR}/{info.name}"
    for parent in PurePosixPath(meta_rel).parents:
        if str(parent) != "." and str(parent) not in entries:
            entries[str(parent)] = _dir_entry(str(parent), epoch)
    all_paths = [*entries, meta_rel]
    meta = iglupkg_metadata(info, all_paths)
    entries[meta_rel] = _Entry(meta_rel, "file", 0o644, epoch, size=len(meta), data=meta,
                               sha256=hashlib.sha256(meta).hexdigest())
    ordered = [entries[k] for k in sorted(entries)]
    pkginfo = _pkginfo(info, ordered, epoch)
    head = _Entry(PKGINFO, "file", 0o644, epoch, size=len(pkginfo), data=pkginfo)

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / info.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{info.filename}.", suffix=".tmp", dir=out_dir)
    tmp = Path(tmp_name)
    try:
        # The tar is spooled first so zstd knows its size: it then sizes its
        # tables to the input (a level-12 context for an unknown size costs
        # ~80 ms to set up, more than the rest of a small package's build).
        with os.fdopen(fd, "wb") as raw, tempfile.SpooledTemporaryFile(
            max_size=SPOOL_IN_MEMORY, dir=str(out_dir)
        ) as spool:
            with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for e in [head, *ordered]:
                    _add(tar, e)
            size = spool.tell()
            spool.seek(0)
            cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0)
            cctx.copy_stream(spool, raw, size=size)
            raw.flush()
            os.fsync(raw.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(out_dir) from exc
        raise
    integrity.seal_artifact(final)  # checked before every use (status, sysroot, image)
    # The same package for xbps, Iglunix's package manager (iglubuild/xbps.py).
    xbps.write_package(info, ordered, out_dir, epoch, packaged_with=f"iglubuild {__version__}")
    return final


def _add(tar: tarfile.TarFile, e: _Entry) -> None:
    ti = tarfile.TarInfo(e.path if e.kind != "dir" else e.path + "/")
    ti.mode = e.mode
    ti.mtime = e.mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    if e.kind == "dir":
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
    elif e.kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.target
        tar.addfile(ti)
    else:
        ti.type = tarfile.REGTYPE
        ti.size = e.size
        if e.data is not None:
            tar.addfile(ti, io.BytesIO(e.data))
        else:
            assert e.source is not None
            with _open_nofollow(e.source) as f:
                tar.addfile(ti, f)


def pack_all(pkgdir: Path, main: PackageInfo, subpackages: Mapping[str, Sequence[str]],
             out_dir: Path, epoch: int | None = None) -> list[Path]:
    """Split `pkgdir` by the recipe's globs and pack every (sub-)package.

    Sub-package `dev` of `curl` is `curl-dev`; it depends on `curl` and gets
    the backup entries that fall into it. Returns artifact paths, main first.
    """
    epoch = source_date_epoch(epoch)
    parts = split_tree(pkgdir, subpackages)
    made = []
    for sub in ["", *subpackages]:
        paths = parts[sub]
        owned = set(paths)
        backup = tuple(b.strip("/") for b in main.backup if b.strip("/") in owned)
        if sub == "":
            info = replace(main, backup=backup, base=main.name)
        else:
            info = replace(
                main, name=f"{main.name}-{sub}", deps=(main.name,), backup=backup,
                base=main.name,
                description=f"{main.description} ({sub} files)" if main.description else "",
            )
        made.append(pack(pkgdir, paths, info, out_dir, epoch))
    return made


# ---------------------------------------------------------------- reading

# `<name>-<version>-r<release>.<arch>.tar.zst`, as `artifact_name` writes it.
ARTIFACT_RE = re.compile(
    r"^(?P<name>.+)-(?P<version>[^-]+)-r(?P<release>\d+)\.(?P<arch>[A-Za-z0-9_]+)\.tar\.zst$"
)


@contextlib.contextmanager
def open_artifact(artifact: Path) -> Iterator[tarfile.TarFile]:
    """A streaming tar reader over an artifact; a broken one is a one-line PackageError."""
    try:
        raw = artifact.open("rb")
    except FileNotFoundError as exc:
        raise PackageError(f"{artifact}: no such package file") from exc
    try:
        # read_across_frames: artifacts made by other zstd writers may hold several frames.
        with raw, zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True
        ) as zr, tarfile.open(fileobj=zr, mode="r|") as tar:
            yield tar
    except (tarfile.TarError, zstandard.ZstdError, EOFError, UnicodeDecodeError,
            json.JSONDecodeError) as exc:
        raise PackageError(f"{artifact}: not a valid package ({exc})",
                           hint="delete it and build the package again") from exc


def read_metadata(artifact: Path) -> dict[str, Any]:
    """The `.PKGINFO` of an artifact (its first member, so this reads only the head)."""
    with open_artifact(artifact) as tar:
        first = tar.next()
        if first is None or first.name != PKGINFO:
            raise PackageError(f"{artifact}: {PKGINFO} is not the first member",
                               hint="was this artifact made by iglubuild?")
        f = tar.extractfile(first)
        assert f is not None
        try:
            data: dict[str, Any] = json.loads(f.read())
            return data
        except json.JSONDecodeError as exc:
            raise PackageError(f"{artifact}: broken {PKGINFO}: {exc}") from exc


# ---------------------------------------------------------------- installing


class FileConflictError(PackageError):
    """Two packages installed into one root ship the same path."""


@dataclass
class RootTree:
    """A root being filled from artifacts, and who owns what in it.

    Sysroots and the image root are both filled through one of these, so a
    conflict names the package that already owns the path, the image stage
    knows each package's files for its database, and `wanted_ids` keeps the
    owner each member asked for (the image rewrites it when not run as root).
    """

    path: Path
    owners: dict[str, str] = field(default_factory=dict)  # path -> package (non-dirs)
    dir_owners: dict[str, str] = field(default_factory=dict)
    wanted_ids: dict[str, tuple[int, int]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # package -> its paths


def member_path(name: str, artifact: Path) -> str:
    """A tar member's path relative to the root; refuses anything that could escape."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise PackageError(f"{artifact}: unsafe member name {name!r}",
                           hint="members must be relative paths without '..'")
    return "/".join(parts)


def resolve_in_root(root: Path, rel: str) -> Path:
    """The host path of `rel` with symlinks resolved as if `root` were `/`.

    Artifacts carry absolute symlinks (/lib/ld-musl-x86_64.so.1 -> /usr/lib/libc.so)
    that mean paths inside the root; following them on the host while extracting
    could write outside it, so every link is resolved against the root, and `..`
    stops at the root as it does at `/`.
    """
    parts = [p for p in rel.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if part == ".":
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise PackageError(f"too many symlinks resolving /{rel} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def package_name(artifact: Path) -> str:
    """The package an artifact file holds, from its name (the file name if it is odd)."""
    m = ARTIFACT_RE.match(artifact.name)
    return m["name"] if m else artifact.name


def xbps_twin(artifact: Path) -> Path | None:
    """The .xbps file packed beside an artifact by the same build (None if its name is odd)."""
    m = ARTIFACT_RE.match(artifact.name)
    if m is None:
        return None
    return artifact.parent / xbps.xbps_filename(m["name"], m["version"], int(m["release"]),
                                                m["arch"])


def install_artifact(artifact: Path, root: Path | RootTree, *,
                     overwrite: bool = False) -> list[str]:
    """Unpack an artifact into a root safely; return the paths it installed.

    The one place that turns an artifact into files, for sysroots and for the
    image root. Nothing lands outside the root: absolute names and `..` are
    refused, and symlinks already in the root are followed as the finished
    root will see them (absolute ones from the root, not from the host's `/`).
    Only files, folders and symlinks are accepted -- what `pack` writes.

    `root` is a `RootTree` when several packages go into one root: a path that
    another package already installed is a FileConflictError naming both
    packages, unless `overwrite`. As root, members get the owner they ask for.
    """
    if artifact.is_file() and not integrity.artifact_intact(artifact):
        raise PackageError(f"{artifact}: changed since it was packed (its sha256 differs "
                           "from the one recorded then)",
                           hint=f"build {package_name(artifact)} again (pkg --force)")
    tree = root if isinstance(root, RootTree) else RootTree(root)
    base = tree.path
    base.mkdir(parents=True, exist_ok=True)
    name = package_name(artifact)
    as_root = os.geteuid() == 0
    installed: list[str] = []
    # Folder modes and times are set last: a read-only folder must stay
    # writable while its contents are unpacked, and writing changes its mtime.
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    with open_artifact(artifact) as tar:
        for m in tar:
            if m.name == PKGINFO:
                continue
            rel = member_path(m.name, artifact)
            if not rel:
                continue
            if not (m.isfile() or m.isdir() or m.issym()):
                raise PackageError(f"{artifact}: {rel} is not a file, folder or symlink",
                                   hint="iglubuild artifacts hold only those")
            parent = resolve_in_root(base, str(PurePosixPath(rel).parent))
            dest = parent / PurePosixPath(rel).name
            if m.isdir() and dest.is_symlink():
                # A folder over another package's link (lib -> usr/lib, merged-/usr
                # style): its contents go through the link, resolved inside the root.
                target = resolve_in_root(base, rel)
                if target.exists() and not target.is_dir():
                    raise FileConflictError(
                        f"package {name} installs folder /{rel} over a link "
                        f"of {tree.owners.get(rel, '?')} to a file",
                        hint="move the folder in one recipe")
                target.mkdir(parents=True, exist_ok=True)
                tree.dir_owners.setdefault(rel, name)
                continue
            if m.isdir():
                other = tree.owners.get(rel)
                if other or dest.exists() and not dest.is_dir():
                    raise FileConflictError(
                        f"packages {other or '?'} and {name} both install /{rel}"
                        " (a file in one, a folder in the other)",
                        hint="move the file in one recipe, or split it into a sub-package")
                dest.mkdir(parents=True, exist_ok=True)
                dirs.append((dest, m))
                tree.dir_owners.setdefault(rel, name)
            else:
                _make_room(tree, rel, dest, name, overwrite)
                parent.mkdir(parents=True, exist_ok=True)
                if m.issym():
                    os.symlink(m.linkname, dest)
                else:
                    _write_file(tar, m, dest)
                tree.owners[rel] = name
                if as_root:
                    os.lchown(dest, m.uid, m.gid)
                if m.isfile():
                    # After writing (and after chown, which clears them): setuid bits stay.
                    os.chmod(dest, stat.S_IMODE(m.mode))
                os.utime(dest, (m.mtime, m.mtime), follow_symlinks=False)
            tree.wanted_ids[rel] = (m.uid, m.gid)
            installed.append(rel)
    for dest, m in reversed(dirs):
        if as_root:
            os.lchown(dest, m.uid, m.gid)
        os.chmod(dest, stat.S_IMODE(m.mode))
        os.utime(dest, (m.mtime, m.mtime))
    tree.files.setdefault(name, []).extend(installed)
    return installed


def _make_room(tree: RootTree, rel: str, dest: Path, name: str, overwrite: bool) -> None:
    """Refuse (or, with `overwrite`, clear) a path that is already taken in the root."""
    other = tree.owners.get(rel) or tree.dir_owners.get(rel)
    if not (other or os.path.lexists(dest)):
        return
    if dest.is_dir() and not dest.is_symlink():
        raise FileConflictError(
            f"packages {other or '?'} and {name} both install /{rel}"
            " (a folder in one, a file in the other)",
            hint="move the file in one recipe, or split it into a sub-package")
    if overwrite:
        dest.unlink(missing_ok=True)
        return
    if other:
        raise FileConflictError(f"packages {other} and {name} both install /{rel}",
                                hint="remove the file from one recipe (or put it in a "
                                     "sub-package)")
    raise FileConflictError(f"package {name} installs /{rel}, which already exists in "
                            f"{tree.path}", hint="two packages ship the same file")


def _write_file(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path) -> None:
    src = tar.extractfile(m)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        if src is not None:
            shutil.copyfileobj(src, out, 1 << 20)


# ---------------------------------------------------------------- index


def write_index(packages_dir: Path) -> Path:
    """Write `packages_dir/index.json` describing every artifact there (atomically)."""
    packages: dict[str, Any] = {}
    newest: dict[str, int] = {}
    for artifact in sorted(packages_dir.glob(f"*{SUFFIX}")):
        meta = read_metadata(artifact)
        st = artifact.stat()
        name = meta["name"]
        # Several versions may sit side by side; the index names the newest file.
        if name in newest and newest[name] > st.st_mtime_ns:
            continue
        newest[name] = st.st_mtime_ns
        entry = {k: meta.get(k) for k in ("version", "release", "arch", "base", "description",
                                          "license", "deps", "signature", "build_date",
                                          "installed_size")}
        entry.update(file=artifact.name, size=st.st_size, sha256=_hash_file(artifact))
        packages[name] = entry
    doc = {"format": FORMAT_VERSION, "packages": dict(sorted(packages.items()))}
    return write_atomic(packages_dir / "index.json",
                        json.dumps(doc, indent=1, sort_keys=True) + "\n")
