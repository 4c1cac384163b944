"""Unpacking real upstream tarballs, refusing malicious archives, applying patches.

Real archives come from ../shared/distfiles; malicious ones are built here with
tarfile/zipfile, one per attack, and each must be refused with nothing
written inside or outside the destination.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from iglubuild.fetch import FetchOptions, fetch_sources
from iglubuild.recipe import LoadedRecipe, load_recipe
from iglubuild.settings import Settings
from iglubuild.unpack import (
    PatchError,
    UnpackError,
    archive_kind,
    prepare_source,
    unpack_archive,
)
from tests.test_fetch import DISTFILES

FAST = FetchOptions(backoff=0.01, progress=False)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(build_dir=tmp_path / "build", distfiles=tmp_path / "distfiles")


def recipe_with(tmp_path: Path, settings: Settings, name: str, version: str,
                archives: list[Path], files: dict[str, str] | None = None,
                patches: dict[str, str] | None = None) -> LoadedRecipe:
    """A real recipe.yaml whose url sources are the given archives, fetched into the cache."""
    rdir = tmp_path / "recipes" / "base" / name
    rdir.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", f"version: '{version}'", "sources:"]
    for a in archives:
        lines += [f"  - url: {a.as_uri()}", f"    sha256: {sha256_file(a)}"]
    for fname, text in (files or {}).items():
        (rdir / fname).write_text(text)
        lines.append(f"  - file: {fname}")
    for pname, text in (patches or {}).items():
        (rdir / pname).write_text(text)
    lines.append(f"patches: [{', '.join(patches or {})}]")
    (rdir / "recipe.yaml").write_text("\n".join(lines) + "\n")
    lr = load_recipe(rdir / "recipe.yaml")
    fetch_sources([(name, s) for s in lr.recipe.sources], settings, FAST)
    return lr


def make_patch(old: str, new: str, rel: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        fromfile=f"a/{rel}", tofile=f"b/{rel}"))


# -- real archives ---------------------------------------------------------------


@pytest.mark.parametrize("filename, top", [
    ("opendoas-6.8.2.tar.xz", "opendoas-6.8.2"),
    ("musl-1.2.3.tar.gz", "musl-1.2.3"),
    ("lua-5.4.4.tar.gz", "lua-5.4.4"),
])
def test_real_tarballs_unpack_to_their_top_folder(tmp_path, filename, top):
    dest = tmp_path / "dest"
    dest.mkdir()
    got = unpack_archive(DISTFILES / filename, dest)
    assert got == dest / top
    with tarfile.open(DISTFILES / filename) as tar:
        regular = [m for m in tar.getmembers() if m.isreg()]
    assert regular and all((dest / m.name).is_file() for m in regular)
    sample = regular[len(regular) // 2]
    with tarfile.open(DISTFILES / filename) as tar:
        assert (dest / sample.name).read_bytes() == tar.extractfile(sample).read()


@pytest.mark.slow
def test_real_bz2_tarball(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    assert unpack_archive(DISTFILES / "busybox-1.35.0.tar.bz2", dest) == dest / "busybox-1.35.0"
    assert (dest / "busybox-1.35.0" / "Makefile").is_file()


def test_zstd_tarball(tmp_path):
    """A .tar.zst made from a real tarball (zstd via the zstandard library)."""
    raw = tmp_path / "opendoas-6.8.2.tar"
    import lzma
    raw.write_bytes(lzma.decompress((DISTFILES / "opendoas-6.8.2.tar.xz").read_bytes()))
    zst = tmp_path / "opendoas-6.8.2.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw.read_bytes()))
    dest = tmp_path / "dest"
    dest.mkdir()
    top = unpack_archive(zst, dest)
    assert top == dest / "opendoas-6.8.2"
    assert (top / "doas.c").is_file()
    assert archive_kind("x.tar.zst") == "zst" and archive_kind("x.tzst") == "zst"
    # configure keeps its execute bit through the data filter.
    assert (top / "configure").stat().st_mode & stat.S_IXUSR


def test_zip_keeps_execute_bits(tmp_path):
    archive = tmp_path / "tool-1.0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("tool-1.0/configure")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(info, "#!/bin/sh\necho ok\n")
        zf.writestr("tool-1.0/README", "hello\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    top = unpack_archive(archive, dest)
    assert top == dest / "tool-1.0"
    assert (top / "configure").stat().st_mode & stat.S_IXUSR
    assert not (top / "README").stat().st_mode & stat.S_IXUSR
    assert (top / "README").read_text() == "hello\n"


# -- malicious archives -------------------------------------------------------------


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


MALICIOUS_TARS = {
    "absolute-path": lambda out: [(_info(str(out / "abs-evil")), b"pwned")],
    "dot-dot-slip": lambda out: [(_info("pkg/../../outside-evil"), b"pwned")],
    "symlink-out-absolute": lambda out: [(_info("pkg/link", tarfile.SYMTYPE, str(out)), None)],
    "symlink-out-relative": lambda out: [(_info("pkg/link", tarfile.SYMTYPE, "../../.."), None)],
    "symlink-then-write-through": lambda out: [
        (_info("pkg/sub", tarfile.DIRTYPE), None),
        (_info("pkg/link", tarfile.SYMTYPE, "sub"), None),
        (_info("pkg/link/evil"), b"through the link"),
    ],
    "symlink-out-then-write-through": lambda out: [
        (_info("link", tarfile.SYMTYPE, str(out)), None),
        (_info("link/through-evil"), b"pwned"),
    ],
    "hardlink-out": lambda out: [(_info("pkg/hl", tarfile.LNKTYPE, str(out / "target")), None)],
    "hardlink-dot-dot": lambda out: [(_info("pkg/hl", tarfile.LNKTYPE, "../../target"), None)],
    "device-file": lambda out: [(_info("pkg/null", tarfile.CHRTYPE), None)],
    "fifo": lambda out: [(_info("pkg/fifo", tarfile.FIFOTYPE), None)],
    "directory-replaced-by-link": lambda out: [
        (_info("pkg/dir", tarfile.DIRTYPE), None),
        (_info("pkg/dir/file"), b"x"),
        (_info("pkg/dir", tarfile.SYMTYPE, "."), None),
    ],
    "file-over-symlink": lambda out: [
        (_info("pkg/a"), b"a"),
        (_info("pkg/l", tarfile.SYMTYPE, "a"), None),
        (_info("pkg/l"), b"written through"),
    ],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_TARS))
def test_malicious_tar_is_refused(tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("secret")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    archive = _tar(tmp_path / f"{case}.tar.gz", MALICIOUS_TARS[case](outside))
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnpackError, match="refusing to unpack"):
        unpack_archive(archive, dest)
    assert list(dest.iterdir()) == []
    after = sorted(p.name for p in tmp_path.rglob("*"))
    assert sorted(set(after) - set(before)) == sorted([f"{case}.tar.gz", "work", "dest"])
    assert (outside / "target").read_text() == "secret"


def _zip(path: Path, entries: list[tuple[str, int, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, mode, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


MALICIOUS_ZIPS = {
    "zip-slip": [("pkg/../../outside-evil", stat.S_IFREG | 0o644, b"pwned")],
    "zip-absolute": [("/tmp/zip-abs-evil", stat.S_IFREG | 0o644, b"pwned")],
    "zip-symlink-out": [("pkg/link", stat.S_IFLNK | 0o777, b"../../outside")],
    "zip-symlink-then-write": [("pkg/link", stat.S_IFLNK | 0o777, b"."),
                               ("pkg/link/evil", stat.S_IFREG | 0o644, b"x")],
    "zip-backslash": [("pkg\\..\\..\\evil", stat.S_IFREG | 0o644, b"x")],
    "zip-device": [("pkg/dev", stat.S_IFCHR | 0o644, b"")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_ZIPS))
def test_malicious_zip_is_refused(tmp_path, case):
    archive = _zip(tmp_path / f"{case}.zip", MALICIOUS_ZIPS[case])
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnpackError, match="refusing to unpack"):
        unpack_archive(archive, dest)
    assert list(dest.iterdir()) == []
    assert {p.name for p in tmp_path.rglob("*")} == {f"{case}.zip", "work", "dest"}
    assert not Path("/tmp/zip-abs-evil").exists()


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken-1.0.tar.gz"
    bad.write_bytes((DISTFILES / "musl-1.2.3.tar.gz").read_bytes()[:50_000])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnpackError, match="cannot unpack"):
        unpack_archive(bad, dest)
    assert list(dest.iterdir()) == []


# -- prepare_source ---------------------------------------------------------------


def test_prepare_source_real_tarball_files_and_patch(tmp_path, settings):
    import lzma
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(
            (DISTFILES / "opendoas-6.8.2.tar.xz").read_bytes()))) as tar:
        old = tar.extractfile("opendoas-6.8.2/doas.c").read().decode()
    new = old.replace("#include <sys/types.h>", "#include <sys/types.h>\n/* iglunix */", 1)
    assert new != old
    lr = recipe_with(tmp_path, settings, "opendoas", "6.8.2", [DISTFILES / "opendoas-6.8.2.tar.xz"],
                     files={"doas.conf": "permit :wheel\n"},
                     patches={"01-mark.patch": make_patch(old, new, "doas.c")})
    workdir = tmp_path / "build" / "work" / "opendoas"
    srcdir = prepare_source(lr, settings, workdir)
    assert srcdir == workdir / "src" / "opendoas-6.8.2"
    assert (srcdir / "doas.c").read_text() == new
    assert (workdir / "src" / "doas.conf").read_text() == "permit :wheel\n"
    assert not list(srcdir.rglob("*.orig"))
    assert [p.name for p in workdir.iterdir()] == ["src"]
    # Running it again starts from a fresh tree (the patch applies again).
    assert prepare_source(lr, settings, workdir) == srcdir


def test_prepare_source_failing_patch_names_patch_and_hunk(tmp_path, settings):
    bad = make_patch("no such line\n", "changed\n", "doas.c").replace("@@ -1 +1 @@",
                                                                      "@@ -40,1 +40,1 @@")
    lr = recipe_with(tmp_path, settings, "opendoas", "6.8.2", [DISTFILES / "opendoas-6.8.2.tar.xz"],
                     patches={"02-bad.patch": bad})
    workdir = tmp_path / "w"
    with pytest.raises(PatchError) as info:
        prepare_source(lr, settings, workdir)
    assert "02-bad.patch" in info.value.message
    assert "doas.c: Hunk #1 FAILED at 40" in info.value.message
    assert info.value.exit_code == 1
    assert str(workdir / "src" / "opendoas-6.8.2") in info.value.hint
    assert (workdir / "src" / "opendoas-6.8.2" / "doas.c.rej").is_file()


def test_prepare_source_refuses_malicious_archive_leaving_nothing(tmp_path, settings):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = _tar(tmp_path / "evil-1.0.tar.gz", MALICIOUS_TARS["symlink-out-then-write-through"]
                   (outside))
    lr = recipe_with(tmp_path, settings, "evil", "1.0", [archive])
    workdir = tmp_path / "w"
    with pytest.raises(UnpackError):
        prepare_source(lr, settings, workdir)
    assert list(workdir.iterdir()) == []
    assert list(outside.iterdir()) == []


def test_prepare_source_archive_without_top_folder(tmp_path, settings):
    archive = _tar(tmp_path / "flat-2.0.tar.gz", [(_info("a.c"), b"int a;\n"),
                                                 (_info("b.c"), b"int b;\n")])
    lr = recipe_with(tmp_path, settings, "flat", "2.0", [archive, DISTFILES / "lua-5.4.4.tar.gz"])
    srcdir = prepare_source(lr, settings, tmp_path / "w")
    assert srcdir == tmp_path / "w" / "src" / "flat-2.0"
    assert (srcdir / "a.c").read_text() == "int a;\n"
    assert (srcdir.parent / "lua-5.4.4" / "Makefile").is_file()


def test_prepare_source_with_only_files_uses_their_folder(tmp_path, settings):
    rdir = tmp_path / "r" / "base"
    rdir.mkdir(parents=True)
    (rdir / "init.c").write_text("int main(void) { return 0; }\n")
    (rdir / "fstab").write_text("LABEL=IGLUNIX / ext4 defaults 0 1\n")
    (rdir / "recipe.yaml").write_text(
        "name: base\nversion: '1'\nsources:\n  - file: init.c\n  - file: fstab\n")
    srcdir = prepare_source(load_recipe(rdir / "recipe.yaml"), settings, tmp_path / "w")
    assert srcdir == tmp_path / "w" / "src"
    assert sorted(p.name for p in srcdir.iterdir()) == ["fstab", "init.c"]


def test_prepare_source_needs_fetch_first(tmp_path, settings):
    archive = tmp_path / "x-1.tar.gz"
    shutil.copy(DISTFILES / "lua-5.4.4.tar.gz", archive)
    rdir = tmp_path / "r" / "x"
    rdir.mkdir(parents=True)
    (rdir / "recipe.yaml").write_text(
        "name: x\nversion: '1'\nsources:\n  - url: https://example.invalid/x-1.tar.gz\n"
        f"    sha256: {sha256_file(archive)}\n")
    lr = load_recipe(rdir / "recipe.yaml")
    from iglubuild.errors import FetchError
    with pytest.raises(FetchError, match="not in the distfiles cache") as info:
        prepare_source(lr, settings, tmp_path / "w")
    assert "iglubuild fetch" in info.value.hint
    assert not (tmp_path / "w" / "src").exists()


@pytest.mark.slow
def test_every_real_tarball_unpacks(tmp_path):
    """No upstream tarball in ../shared/distfiles trips the safety checks."""
    archives = sorted(p for p in DISTFILES.iterdir() if archive_kind(p.name))
    assert len(archives) >= 20
    for archive in archives:
        dest = tmp_path / archive.name
        dest.mkdir()
        top = unpack_archive(archive, dest)
        assert top is not None and top.is_dir(), archive.name
        shutil.rmtree(dest)
