"""Unpack a recipe's sources into its work folder and apply its patches.

Archives come from the verified distfiles cache, but a checksum only says the
file is the one the recipe author saw, not that it is harmless. So every
member is checked before anything is written: no absolute paths, no `..`, no
link that points out of the folder or that a later member writes through, no
device files, no link that replaces a directory. One bad member refuses the
whole archive and nothing is left behind. tar extraction then runs with
tarfile's `data` filter as a second line of defence.

Layout (workdir is the package's work folder, e.g. build/work/curl):

    workdir/src/               the unpacked sources ("beside" the source folder)
    workdir/src/curl-7.88.1/   the source folder: the archive's single top folder
    workdir/src/curl.conf      `file:` sources and non-archive downloads
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from iglubuild.errors import BuildError, disk_full, is_disk_full
from iglubuild.fetch import cached_path, source_name
from iglubuild.run import base_env, require_tool, run
from iglubuild.settings import Settings

# Longest suffix first, so ".tar.gz" wins over ".gz".
_ARCHIVE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".tar.gz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".tar.zst", "zst"),
    (".tar.lzma", "tar"), (".tgz", "tar"), (".tbz2", "tar"), (".tbz", "tar"),
    (".txz", "tar"), (".tzst", "zst"), (".tar", "tar"), (".zip", "zip"),
)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"



def follow_links(start: str, target: str, links: Mapping[str, str],
                 is_folder: Callable[[str], bool | None] | None = None) -> str | None:
    """Where `target`, seen from folder `start`, leads in a tree whose symlinks
    are `links` (path -> target, relative to the tree's top): each link on the
    way is followed as the kernel follows it. None if it leaves the tree, meets
    an absolute link (which would name the host's files) or loops (40 links,
    Linux's MAXSYMLINKS).

    With `is_folder` (True: a folder, False: another file, None: missing),
    it fails as realpath() does, too: None at a missing part, or at a file
    with more of the path after it.
    """
    resolved = [p for p in start.split("/") if p]
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        here = "/".join(resolved)
        link = links.get(here)
        if link is not None:
            hops += 1
            if hops > 40 or link.startswith("/"):
                return None
            resolved.pop()
            pending = link.split("/") + pending
        elif is_folder is not None:
            kind = is_folder(here)
            if kind is None or (kind is False and pending):
                return None
    return "/".join(resolved)

class UnpackError(BuildError):
    """An archive is unsafe or unreadable; nothing of it was kept."""


def _size_text(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class UnpackLimits:
    """How big an archive may unpack (Settings.max_unpacked, max_ratio).

    The ratio (unpacked over packed bytes) stops a bomb early, long before the
    size limit: source tarballs unpack to 3-10 times their size, a gzip or
    xz bomb to thousands. Below `ratio_floor` unpacked bytes any ratio is
    fine (a small archive of text can be very compressible).
    """

    max_bytes: int = 16 << 30
    max_ratio: float = 200.0
    ratio_floor: int = 64 << 20

    @classmethod
    def from_settings(cls, settings: Settings) -> UnpackLimits:
        return cls(settings.max_unpacked, settings.max_ratio)

    def check(self, archive: str, unpacked: int, packed: int) -> None:
        """Raise UnpackError once `unpacked` bytes are more than the limits allow."""
        if unpacked > self.max_bytes:
            raise UnpackError(
                f"{archive}: refusing to unpack: it unpacks to more than "
                f"{_size_text(self.max_bytes)} (the unpacked size limit)",
                hint="raise it with --max-unpacked or IGLUBUILD_MAX_UNPACKED if the "
                     "archive is genuine; nothing was unpacked")
        if unpacked > self.ratio_floor and unpacked > self.max_ratio * max(packed, 1):
            raise UnpackError(
                f"{archive}: refusing to unpack: it unpacks to more than "
                f"{self.max_ratio:g} times its size ({_size_text(unpacked)} from "
                f"{_size_text(packed)}; the ratio limit)",
                hint="an archive bomb? raise it with --max-ratio or IGLUBUILD_MAX_RATIO if "
                     "the archive is genuine; nothing was unpacked")


class PatchError(BuildError):
    """A patch does not apply; names the patch, the file and the hunk."""


def archive_kind(filename: str) -> str | None:
    """"tar", "zst" or "zip" for archive names, None for files used as they are."""
    lower = filename.lower()
    for suffix, kind in _ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return kind
    return None


# -- member checks ------------------------------------------------------------


class _Checker:
    """Checks members one by one, in archive order, remembering what came before."""

    def __init__(self, archive: str) -> None:
        self.archive = archive
        self.dirs: set[str] = set()  # explicit and implied directories
        self.links: dict[str, str] = {}  # symlink -> target (nothing may go through or over)
        self.files: set[str] = set()  # regular files (hardlink targets)

    def refuse(self, name: str, why: str) -> UnpackError:
        return UnpackError(f"{self.archive}: refusing to unpack: {name!r} {why}",
                           hint="the archive may be malicious or broken; nothing was unpacked")

    def path(self, name: str) -> str:
        """The normalised relative path of a member, or an error."""
        if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
            raise self.refuse(name, "has an absolute path")
        if "\\" in name:
            raise self.refuse(name, "contains a backslash")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(name, "contains '..'")
        norm = "/".join(parts)
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self.links:
                raise self.refuse(name, f"is written through the symlink {prefix!r}")
        return norm

    def _inside(self, start: str, target: str) -> str | None:
        joined = posixpath.normpath(posixpath.join(start, target))
        if joined == ".." or joined.startswith("../") or joined.startswith("/"):
            return None
        return "" if joined == "." else joined

    def _resolve(self, start: str, target: str) -> str | None:
        """Where `target`, seen from folder `start`, leads once the archive's links
        exist: each link on the way is followed as the file system will, so
        `a -> .` then `x -> a/..` is outside although `a/..` reads as `.`.
        None if it leaves the folder (or loops)."""
        return follow_links(start, target, self.links)

    def finish(self) -> None:
        """Check every link again against all of the archive's links: a link that
        comes later can change where an earlier one leads (`x -> a/..`, then `a -> .`)."""
        for name, target in self.links.items():
            if self._resolve(posixpath.dirname(name), target) is None:
                raise self.refuse(name, f"is a symlink leading outside ({target!r}, through "
                                        "the archive's other links)")

    def _parents(self, norm: str) -> None:
        parts = norm.split("/")
        for i in range(1, len(parts)):
            self.dirs.add("/".join(parts[:i]))

    def _not_over(self, name: str, norm: str, what: str) -> None:
        if norm in self.dirs:
            raise self.refuse(name, f"replaces a directory with a {what}")
        if norm in self.links:
            raise self.refuse(name, f"replaces a symlink with a {what}")

    def directory(self, name: str) -> None:
        norm = self.path(name)
        if norm in self.links or norm in self.files:
            raise self.refuse(name, "replaces a file or link with a directory")
        if norm:
            self._parents(norm)
            self.dirs.add(norm)

    def regular(self, name: str) -> None:
        norm = self.path(name)
        if not norm:
            raise self.refuse(name, "is a file with an empty name")
        self._not_over(name, norm, "file")
        self._parents(norm)
        self.files.add(norm)

    def symlink(self, name: str, target: str) -> None:
        norm = self.path(name)
        if not norm:
            raise self.refuse(name, "is a link with an empty name")
        self._not_over(name, norm, "symlink")
        if target.startswith("/"):
            raise self.refuse(name, f"is a symlink to the absolute path {target!r}")
        if self._inside(posixpath.dirname(norm), target) is None:
            raise self.refuse(name, f"is a symlink pointing outside ({target!r})")
        if self._resolve(posixpath.dirname(norm), target) is None:
            raise self.refuse(name, f"is a symlink leading outside ({target!r}, through "
                                    "the archive's other links)")
        self._parents(norm)
        self.links[norm] = target

    def hardlink(self, name: str, target: str) -> None:
        norm = self.path(name)
        self._not_over(name, norm, "hardlink")
        if target.startswith("/"):
            raise self.refuse(name, f"is a hardlink to the absolute path {target!r}")
        resolved = self._inside("", target)
        if resolved is None:
            raise self.refuse(name, f"is a hardlink pointing outside ({target!r})")
        if resolved not in self.files:
            raise self.refuse(name, f"is a hardlink to {target!r}, which is not an earlier "
                                    "file of the archive")
        self._parents(norm)
        self.files.add(norm)


# -- tar ----------------------------------------------------------------------


def _check_tar(members: Sequence[tarfile.TarInfo], archive: str) -> None:
    checker = _Checker(archive)
    for m in members:
        if m.isdir():
            checker.directory(m.name)
        elif m.issym():
            checker.symlink(m.name, m.linkname)
        elif m.islnk():
            checker.hardlink(m.name, m.linkname)
        elif m.isreg():
            checker.regular(m.name)
        elif m.ischr() or m.isblk():
            raise checker.refuse(m.name, "is a device file")
        elif m.isfifo():
            raise checker.refuse(m.name, "is a FIFO")
        else:
            raise checker.refuse(m.name, f"has an unsupported type {m.type!r}")
    checker.finish()


def _extract_tar(path: Path, kind: str, dest: Path, scratch: Path,
                 limits: UnpackLimits) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    packed = os.path.getsize(path)
    archive = path.name
    if kind == "zst" or magic == _ZSTD_MAGIC:
        # tarfile has no zstd; decompress to a plain tar first, which also
        # lets the check pass and the extraction pass seek freely. Bounded:
        # a zstd bomb stops at the limits, not when the disk is full.
        plain = scratch / (path.name + ".tar")
        try:
            with open(path, "rb") as src, open(plain, "wb") as out, \
                    zstandard.ZstdDecompressor().stream_reader(src) as reader:
                written = 0
                while chunk := reader.read(1 << 20):
                    written += len(chunk)
                    limits.check(archive, written, packed)
                    out.write(chunk)
        except zstandard.ZstdError as exc:
            raise UnpackError(f"{archive}: cannot unpack: {exc}",
                              hint="is the file a valid archive?") from exc
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(scratch) from exc
            raise
        path = plain
    try:
        with tarfile.open(path, "r:*") as tar:
            # Member by member, so a bomb's first huge header stops it before
            # its data is decompressed (getmembers() would read it all).
            members = []
            total = 0
            while (member := tar.next()) is not None:
                members.append(member)
                # A member costs its header too: a million empty files is a bomb.
                total += member.size + tarfile.BLOCKSIZE
                limits.check(archive, total, packed)
            _check_tar(members, path.name)
            # The data filter refuses what the check above refuses and also
            # drops set-uid bits and ownership: a second line of defence.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, zstandard.ZstdError, OSError) as exc:
        if is_disk_full(exc):
            raise disk_full(dest) from exc
        if isinstance(exc, tarfile.FilterError):
            raise UnpackError(f"{path.name}: refusing to unpack: {exc}") from exc
        raise UnpackError(f"{path.name}: cannot unpack: {exc}",
                          hint="is the file a valid archive?") from exc


# -- zip ----------------------------------------------------------------------


def _extract_zip(path: Path, dest: Path, limits: UnpackLimits) -> None:
    checker = _Checker(path.name)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            # zipfile never reads a member past its declared size, so the
            # declared sizes bound what is written.
            limits.check(path.name, sum(i.file_size + tarfile.BLOCKSIZE for i in infos),
                         os.path.getsize(path))
            plan: list[tuple[zipfile.ZipInfo, str, str | None]] = []
            for info in infos:
                mode = info.external_attr >> 16
                ftype = stat.S_IFMT(mode)
                if info.is_dir() or ftype == stat.S_IFDIR:
                    checker.directory(info.filename)
                    plan.append((info, "dir", None))
                elif ftype == stat.S_IFLNK:
                    target = zf.read(info).decode("utf-8", "surrogateescape")
                    checker.symlink(info.filename, target)
                    plan.append((info, "link", target))
                elif ftype in (0, stat.S_IFREG):
                    checker.regular(info.filename)
                    plan.append((info, "file", None))
                else:
                    raise checker.refuse(info.filename, "is a device file or FIFO")
            checker.finish()
            for info, what, link_target in plan:
                out = dest / info.filename
                if what == "dir":
                    out.mkdir(parents=True, exist_ok=True)
                elif what == "link":
                    out.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(link_target or "", out)
                else:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o600)
                    with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    # zipfile restores no permissions; keep the owner's
                    # execute bit (configure scripts) and nothing unusual.
                    mode = (info.external_attr >> 16) & 0o777
                    os.chmod(out, 0o755 if mode & 0o100 else 0o644)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        if is_disk_full(exc):
            raise disk_full(dest) from exc
        raise UnpackError(f"{path.name}: cannot unpack: {exc}",
                          hint="is the file a valid zip archive?") from exc


# -- the stage ----------------------------------------------------------------


def unpack_archive(path: Path, dest: Path, *, name: str | None = None,
                   limits: UnpackLimits | None = None) -> Path | None:
    """Unpack `path` into the empty folder `dest`; refuse unsafe archives.

    Returns the single top-level folder if the archive has one, else None.
    On error `dest` is left empty.
    """
    name = name or path.name
    kind = archive_kind(name)
    if kind is None:
        raise UnpackError(f"{name}: not an archive iglubuild knows",
                          hint="tar (gz, bz2, xz, zst) and zip are supported")
    scratch = dest.parent / f".{dest.name}.scratch"
    scratch.mkdir(exist_ok=True)
    limits = limits or UnpackLimits()
    try:
        if kind == "zip":
            _extract_zip(path, dest, limits)
        else:
            _extract_tar(path, kind, dest, scratch, limits)
    except BaseException:
        _empty(dest)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return None


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _failing_hunks(output: str) -> list[str]:
    """'file: Hunk #2 FAILED at 10' lines from GNU patch's output."""
    current = "?"
    found: list[str] = []
    for line in output.splitlines():
        m = re.match(r"^(?:patching|checking) file (.+)$", line)
        if m:
            current = m.group(1).strip("'\"")
            continue
        if "FAILED" in line and line.startswith("Hunk"):
            found.append(f"{current}: {line.strip().rstrip('.')}")
        elif "can't find file to patch" in line:
            found.append(line.strip())
        elif "Reversed (or previously applied) patch detected" in line:
            found.append(f"{current}: already applied (reversed or previously applied)")
        elif "malformed patch" in line or "Only garbage" in line:
            found.append(line.strip())
    return found


def apply_patches(patches: Iterable[Path], srcdir: Path) -> None:
    """Apply patches in order with `patch -p1`; stop at the first that fails."""
    patches = list(patches)
    if not patches:
        return
    tool = require_tool("patch")
    for patch in patches:
        proc = run([tool, "-p1", "--batch", "--forward", "--no-backup-if-mismatch",
                    "-i", str(patch)], cwd=srcdir, env=base_env(), capture=True, check=False)
        if proc.returncode == 0:
            continue
        hunks = _failing_hunks((proc.stdout or "") + (proc.stderr or ""))
        detail = "; ".join(hunks) if hunks else (proc.stderr or proc.stdout).strip()[-300:]
        raise PatchError(f"patch {patch.name} does not apply: {detail}",
                         hint=f"the patched tree (with .rej files) is left in {srcdir}")


def prepare_source(loaded_recipe: Any, settings: Settings, workdir: Path) -> Path:
    """Unpack every source of a recipe into workdir/src, apply its patches, return srcdir.

    The tree is built under a temporary name and renamed into place, so
    workdir/src is either complete or absent (after a failing patch it is
    kept, with the .rej files, for inspection). Sources must be fetched
    first (`fetch_sources`); this stage never touches the network.
    """
    recipe = loaded_recipe.recipe
    recipe_dir = Path(loaded_recipe.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    final = workdir / "src"
    tmp = workdir / f".src.tmp-{os.getpid()}"
    for old in (final, tmp):
        if old.exists() or old.is_symlink():
            shutil.rmtree(old)
    tmp.mkdir()
    srcdir: Path | None = None
    try:
        for index, source in enumerate(recipe.sources):
            if getattr(source, "file", None):
                _copy_beside(_recipe_side(recipe_dir, source.file, "file"), tmp,
                             Path(source.file).name)
                continue
            name = source_name(source)
            path = cached_path(source, settings)
            if archive_kind(name) is None:
                _copy_beside(path, tmp, name)
                continue
            staging = tmp / f".unpack-{index}"
            staging.mkdir()
            top = unpack_archive(path, staging, name=name,
                                 limits=UnpackLimits.from_settings(settings))
            if top is not None:
                # A git archive's top folder is named for the recipe that first
                # cached its commit (by-commit/ is shared): name it for this one.
                own = (f"{recipe.name}-{recipe.version}" if getattr(source, "git", None)
                       else None)
                placed = _move_in(top, tmp, name, own)
                staging.rmdir()
            else:
                folder = (f"{recipe.name}-{recipe.version}" if srcdir is None
                          else _stem(name))
                placed = _move_in(staging, tmp, name, folder)
            if srcdir is None:
                srcdir = placed
        if srcdir is None:
            # No archive: the folder holding the recipe's files is the source
            # folder, so phases find them in "$srcdir" (and in the cwd).
            srcdir = tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rel = srcdir.relative_to(tmp)
    try:
        patches = [_recipe_side(recipe_dir, p, "patch") for p in getattr(recipe, "patches", [])]
        apply_patches(patches, srcdir)
    except PatchError as exc:
        os.replace(tmp, final)
        exc.hint = f"the patched tree (with .rej files) is left in {final / rel}"
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, final)
    return final / rel


def _recipe_side(recipe_dir: Path, rel: str, what: str) -> Path:
    """A `file:` or `patches:` path, resolved, refused if it leaves the recipe folder.

    Lint refuses these already; this holds even if a link is made after lint.
    """
    from iglubuild.recipe import inside_recipe_dir

    resolved = inside_recipe_dir(recipe_dir, rel)
    if resolved is None:
        raise UnpackError(f"{what} {rel!r} of {recipe_dir} resolves outside the recipe folder "
                          f"({(recipe_dir / rel).resolve()}); refusing to use it",
                          hint="keep the file itself beside the recipe")
    return resolved


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix, _kind in _ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _move_in(folder: Path, into: Path, archive: str, new_name: str | None = None) -> Path:
    target = into / (new_name or folder.name)
    if target.exists() or target.is_symlink():
        raise UnpackError(f"{archive}: {target.name!r} is already there from another source",
                          hint="two sources unpack to the same folder name")
    os.replace(folder, target)
    return target


def _copy_beside(path: Path, into: Path, name: str) -> None:
    target = into / name
    if target.exists() or target.is_symlink():
        raise UnpackError(f"{name}: a source of that name is already there",
                          hint="give the sources different file names")
    with contextlib.suppress(shutil.SameFileError):
        shutil.copy2(path, target)
