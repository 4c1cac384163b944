"""Packing and unpacking artifacts: splitting, metadata, determinism, safe install.

Real trees on disk, real tar.zst files made with the zstandard library; the
unsafe archives are crafted byte for byte like a hostile package would be.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from iglubuild.package import (
    PKGINFO,
    FileConflictError,
    PackageError,
    PackageInfo,
    RootTree,
    _match,
    install_artifact,
    pack_all,
    read_metadata,
    split_tree,
    write_index,
)


def make_tree(root: Path) -> Path:
    """A pkgdir like a library's `make install` leaves it."""
    files = {
        "usr/lib/libz.so.1.2": b"\x7fELF-not-really",
        "usr/lib/libz.a": b"archive",
        "usr/lib/sub/deep.a": b"deep",
        "usr/lib/pkgconfig/zlib.pc": b"Name: zlib\n",
        "usr/include/zlib.h": b"int f(void);\n",
        "usr/include/zconf.h": b"#define Z 1\n",
        "usr/share/man/man3/zlib.3": b".TH ZLIB 3\n",
        "etc/z.conf": b"level=9\n",
        "usr/bin/ztool": b"#!/bin/sh\necho z\n",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "usr/bin/ztool").chmod(0o755)
    (root / "usr/lib/libz.so").symlink_to("libz.so.1.2")
    (root / "var/empty").mkdir(parents=True)
    return root


SUBS = {"dev": ["usr/include", "usr/lib/pkgconfig", "usr/lib/*.a", "usr/lib/libz.so"],
        "doc": ["usr/share/man"]}


def info(**kw: object) -> PackageInfo:
    base = dict(name="zlib", version="1.3", release=2, arch="x86_64", description="compression",
                license="Zlib", deps=("musl",), backup=("etc/z.conf",), signature="abc123")
    base.update(kw)
    return PackageInfo(**base)  # type: ignore[arg-type]


def members(artifact: Path) -> dict[str, tarfile.TarInfo]:
    with artifact.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
        with tarfile.open(fileobj=zr, mode="r|") as tar:
            return {m.name.rstrip("/"): m for m in tar}


def test_glob_matches_segment_by_segment() -> None:
    assert _match("usr/lib/*.a", "usr/lib/libz.a")
    assert not _match("usr/lib/*.a", "usr/lib/sub/deep.a")
    assert _match("usr/lib/**/*.a", "usr/lib/sub/deep.a")
    assert _match("usr/include", "usr/include/zlib.h")
    assert _match("/usr/include/", "usr/include")
    assert not _match("usr/include", "usr")
    assert not _match("usr/inc", "usr/include/zlib.h")


def test_split_puts_each_path_in_first_matching_subpackage(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    parts = split_tree(root, SUBS)
    assert "usr/include/zlib.h" in parts["dev"] and "usr/include/zlib.h" not in parts[""]
    assert "usr/lib/libz.a" in parts["dev"]
    assert "usr/lib/libz.so" in parts["dev"]  # the symlink, not its target
    assert "usr/lib/libz.so.1.2" in parts[""]
    assert "usr/lib/sub/deep.a" in parts[""]  # `*` does not cross folders
    assert "usr/share/man/man3/zlib.3" in parts["doc"]
    assert "var/empty" in parts[""]  # an empty folder stays with the main package
    # Parent folders come along so each artifact unpacks on its own ...
    assert {"usr", "usr/lib"} <= set(parts["dev"])
    # ... but the main package does not keep folders only sub-packages use.
    assert "usr/include" not in parts[""] and "usr/share/man" not in parts[""]


def test_pack_all_writes_metadata_and_subpackages(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    out = tmp_path / "out"
    arts = pack_all(root, info(), SUBS, out, epoch=1_700_000_000)
    assert [a.name for a in arts] == [
        "zlib-1.3-r2.x86_64.tar.zst",
        "zlib-dev-1.3-r2.x86_64.tar.zst",
        "zlib-doc-1.3-r2.x86_64.tar.zst",
    ]
    main = read_metadata(arts[0])
    assert main["name"] == "zlib" and main["release"] == 2 and main["signature"] == "abc123"
    assert main["deps"] == ["musl"] and main["backup"] == ["etc/z.conf"]
    assert main["build_date"] == 1_700_000_000
    files = {f["path"]: f for f in main["files"]}
    import hashlib

    assert files["usr/bin/ztool"]["sha256"] == hashlib.sha256(b"#!/bin/sh\necho z\n").hexdigest()
    assert files["usr/bin/ztool"]["size"] == len(b"#!/bin/sh\necho z\n")
    assert files["usr/bin/ztool"]["mode"] == "0755"
    assert "usr/include/zlib.h" not in files
    dev = read_metadata(arts[1])
    assert dev["name"] == "zlib-dev" and dev["deps"] == ["zlib"] and dev["base"] == "zlib"
    assert dev["backup"] == []
    assert {f["path"]: f for f in dev["files"]}["usr/lib/libz.so"] == {
        "path": "usr/lib/libz.so", "type": "symlink", "target": "libz.so.1.2"}

    m = members(arts[0])
    assert next(iter(m)) == PKGINFO  # first, so read_metadata reads only the head
    assert list(m)[1:] == sorted(list(m)[1:])
    assert all(x.uid == 0 and x.gid == 0 and x.uname == "root" for x in m.values())
    assert all(x.mtime <= 1_700_000_000 for x in m.values())
    assert all(not x.pax_headers for x in m.values())


def test_iglupkg_metadata_file_matches_iglunix_format(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    arts = pack_all(root, info(), SUBS, tmp_path / "out", epoch=1_700_000_000)
    dest = tmp_path / "root"
    install_artifact(arts[0], dest)
    text = (dest / "usr/share/iglupkg/zlib").read_text()
    sections = text.split("\n\n")
    assert sections[0] == "[pkg]\npkgname=zlib\npkgver=1.3\ndeps=musl"
    assert sections[1] == "[license]\nZlib"
    assert sections[2] == "[backup]\netc/z.conf"
    fs = sections[3].splitlines()
    assert fs[0] == "[fs]"
    assert "usr/bin/ztool" in fs and "usr/share/iglupkg/zlib" in fs and "usr/bin" in fs
    assert "usr/include/zlib.h" not in fs


def test_two_packings_are_byte_identical(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    first = pack_all(root, info(), SUBS, tmp_path / "a", epoch=1_600_000_000)
    # Touch everything (new mtimes, as a rebuild would) and pack again elsewhere.
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), follow_symlinks=False)
    second = pack_all(root, info(), SUBS, tmp_path / "b", epoch=1_600_000_000)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    # And the clamp really applies: a different epoch changes the bytes.
    third = pack_all(root, info(), SUBS, tmp_path / "c", epoch=1_600_000_001)
    assert third[0].read_bytes() != first[0].read_bytes()


def test_pack_leaves_no_temp_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    out = tmp_path / "out"
    pack_all(root, info(), {}, out, epoch=1)
    # The artifact and the same package for xbps (iglubuild/xbps.py), nothing else.
    assert sorted(p.name for p in out.iterdir()) == [
        "zlib-1.3-r2.x86_64.tar.zst", "zlib-1.3_2.x86_64-musl.xbps"]


def test_pack_refuses_a_fifo(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    os.mkfifo(root / "usr/bin/pipe")
    with pytest.raises(PackageError, match="not a file, folder or symlink"):
        pack_all(root, info(), {}, tmp_path / "out", epoch=1)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_install_restores_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    arts = pack_all(root, info(), SUBS, tmp_path / "out", epoch=1_700_000_000)
    dest = tmp_path / "root"
    for a in arts:
        install_artifact(a, dest)
    assert (dest / "usr/bin/ztool").read_text() == "#!/bin/sh\necho z\n"
    assert os.access(dest / "usr/bin/ztool", os.X_OK)
    assert os.readlink(dest / "usr/lib/libz.so") == "libz.so.1.2"
    assert (dest / "var/empty").is_dir()
    assert (dest / "usr/share/iglupkg/zlib-dev").is_file()
    assert not (dest / PKGINFO).exists()
    # Installing the same package again is a file conflict, unless asked to overwrite.
    with pytest.raises(PackageError, match="already exists"):
        install_artifact(arts[0], dest)
    install_artifact(arts[0], dest, overwrite=True)


def write_raw_artifact(path: Path, members_: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        meta = json.dumps({"name": "evil"}).encode()
        ti = tarfile.TarInfo(PKGINFO)
        ti.size = len(meta)
        tar.addfile(ti, io.BytesIO(meta))
        for ti, data in members_:
            ti.size = len(data) if ti.isreg() else 0
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


def ti(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type = kind
    t.linkname = link
    t.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return t


@pytest.mark.parametrize("name", ["../escape", "/etc/evil", "usr/../../escape", "./x/../../y"])
def test_install_refuses_paths_leaving_root(tmp_path: Path, name: str) -> None:
    art = write_raw_artifact(tmp_path / "evil.tar.zst", [(ti(name), b"pwned")])
    with pytest.raises(PackageError, match="unsafe member name"):
        install_artifact(art, tmp_path / "root")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("link", ["{outside}", "../../outside", "../{outside}"])
def test_install_never_writes_through_a_symlink_out_of_root(tmp_path: Path, link: str) -> None:
    """A package's symlink is resolved as the finished root will see it, never on the host.

    `lib -> /tmp/.../outside` means that path inside the root, so a later
    `lib/payload` lands under the root; `..` stops at the root as at `/`.
    """
    outside = tmp_path / "outside"
    outside.mkdir()
    art = write_raw_artifact(tmp_path / "evil.tar.zst", [
        (ti("lib", tarfile.SYMTYPE, link.format(outside=outside)), b""),
        (ti("lib/payload"), b"pwned"),
    ])
    root = tmp_path / "root"
    assert install_artifact(art, root) == ["lib", "lib/payload"]
    assert not (outside / "payload").exists()
    landed = [p for p in root.rglob("payload")]
    assert len(landed) == 1 and landed[0].read_bytes() == b"pwned"
    assert not landed[0].is_symlink() and os.path.realpath(landed[0]).startswith(str(root))


def test_conflict_names_both_packages(tmp_path: Path) -> None:
    """Two packages in one root shipping the same path: the error names both."""
    def one(name: str, files: dict[str, str]) -> Path:
        pkg = tmp_path / f"pkg-{name}"
        for rel, text in files.items():
            (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            (pkg / rel).write_text(text)
        return pack_all(pkg, PackageInfo(name=name, version="1", release=1, arch="x86_64"),
                        {}, tmp_path / "out", epoch=1)[0]

    busybox = one("busybox", {"bin/sh": "bb", "bin/ls": "bb"})
    mksh = one("mksh", {"bin/sh": "mksh"})
    tree = RootTree(tmp_path / "root")
    install_artifact(busybox, tree)
    with pytest.raises(FileConflictError,
                       match=r"^packages busybox and mksh both install /bin/sh$") as err:
        install_artifact(mksh, tree)
    assert "sub-package" in (err.value.hint or "")
    assert (tree.path / "bin/sh").read_text() == "bb"  # the first owner's file is kept
    assert tree.owners["bin/sh"] == "busybox" and "bin/ls" in tree.files["busybox"]
    # A file that is a folder in the other package is a conflict too, also naming both.
    folder = one("shdir", {"bin/sh/x": "d"})
    with pytest.raises(FileConflictError, match=r"packages busybox and shdir both install /bin/sh"):
        install_artifact(folder, tree)
    # `overwrite` (reinstalling over a tree) replaces the file and records the new owner.
    install_artifact(mksh, tree, overwrite=True)
    assert (tree.path / "bin/sh").read_text() == "mksh" and tree.owners["bin/sh"] == "mksh"


def test_read_only_folder_is_filled_before_its_mode_is_set(tmp_path: Path) -> None:
    d = ti("etc/ro", tarfile.DIRTYPE)
    d.mode = 0o555
    art = write_raw_artifact(tmp_path / "ro.tar.zst", [(ti("etc", tarfile.DIRTYPE), b""), (d, b""),
                                                       (ti("etc/ro/file"), b"x")])
    install_artifact(art, tmp_path / "root")
    assert (tmp_path / "root/etc/ro/file").read_bytes() == b"x"
    assert stat.S_IMODE((tmp_path / "root/etc/ro").stat().st_mode) == 0o555


def test_install_refuses_device_nodes_and_hardlinks(tmp_path: Path) -> None:
    for kind in (tarfile.CHRTYPE, tarfile.LNKTYPE):
        art = write_raw_artifact(tmp_path / "evil.tar.zst", [(ti("dev/x", kind, "etc"), b"")])
        with pytest.raises(PackageError, match="not a file, folder or symlink|outside"):
            install_artifact(art, tmp_path / f"root{kind!r}")


def test_read_metadata_of_garbage_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.tar.zst"
    bad.write_bytes(b"not zstd at all")
    with pytest.raises(PackageError, match="not a valid package"):
        read_metadata(bad)


def test_write_index_lists_every_artifact_atomically(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg")
    out = tmp_path / "out"
    arts = pack_all(root, info(), SUBS, out, epoch=1)
    index = write_index(out)
    doc = json.loads(index.read_text())
    assert sorted(doc["packages"]) == ["zlib", "zlib-dev", "zlib-doc"]
    z = doc["packages"]["zlib"]
    assert z["file"] == arts[0].name and z["size"] == arts[0].stat().st_size
    assert z["signature"] == "abc123" and z["version"] == "1.3"
    assert sorted(p.name for p in out.glob("*.tar.zst")) == sorted(a.name for a in arts)
    assert not list(out.glob(".*"))
