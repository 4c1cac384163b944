"""iglubuild image: closure, install, conflicts, and the disk read back with real tools.

These build real images (sfdisk, mtools, mke2fs, debugfs) from small artifacts
made here; the kernel is any file, since nothing is booted. Booting is in
test_boot.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from iglubuild.cli import main
from iglubuild.errors import BuildError, UsageError
from iglubuild.image import (
    Artifact,
    find_artifacts,
    make_image,
    parse_size,
    populate_root,
    runtime_closure,
)
from iglubuild.package import FileConflictError
from tests.imagekit import pack_artifact

ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def _pkg(tmp: Path, name: str, files: dict[str, str | tuple[str, int]],
         links: dict[str, str] | None = None) -> Path:
    """A package folder: files (text or (text, mode)) and symlinks."""
    d = tmp / "pkgdirs" / name
    for rel, content in files.items():
        text, mode = (content, 0o644) if isinstance(content, str) else content
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.chmod(p, mode)
    for rel, target in (links or {}).items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A build dir with a small consistent package set and a fake kernel."""
    out = tmp_path / "build" / "packages" / "x86_64"
    pack_artifact(out, _pkg(tmp_path, "libc", {"usr/lib/libc.so": "libc"},
                            {"lib/ld.so": "/usr/lib/libc.so"}), "libc", "1.2.3")
    pack_artifact(out, _pkg(tmp_path, "shell", {"bin/mksh": ("#!shell", 0o755)},
                            {"bin/sh": "mksh"}), "shell", "59", deps=["libc"])
    pack_artifact(out, _pkg(tmp_path, "su", {"bin/su": ("su", 0o4755),
                                             "etc/shadow": ("root:*:", 0o600)}),
                  "su", "1", deps=["libc"])
    pack_artifact(out, _pkg(tmp_path, "su-dev", {"usr/include/su.h": "h"}), "su-dev", "1")
    pack_artifact(out, _pkg(tmp_path, "iglunix-base", {"etc/passwd": "root:x:0:0::/root:/bin/sh",
                                                       "sbin/init": ("init", 0o755)}),
                  "iglunix-base", "1", deps=["shell", "su"])
    (tmp_path / "vmlinuz").write_bytes(os.urandom(300_000))
    return tmp_path


def _debugfs(image: Path, offset: int, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, f"{image}?offset={offset}"],
                          capture_output=True, text=True, check=True).stdout


def _partitions(image: Path) -> list[dict]:
    out = subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)["partitiontable"]["partitions"]


def _inode(image: Path, offset: int, path: str) -> tuple[int, int, int]:
    """(mode, uid, gid) of a path inside the ext4 at `offset`."""
    text = _debugfs(image, offset, f"stat {path}")
    mode = int(re.search(r"Mode:\s+(\d+)", text)[1], 8)
    uid = int(re.search(r"User:\s+(\d+)", text)[1])
    gid = int(re.search(r"Group:\s+(\d+)", text)[1])
    return mode, uid, gid


def test_parse_size() -> None:
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("2G") == 2 * 2**30
    assert parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("4096") == 4096
    with pytest.raises(UsageError, match="invalid size"):
        parse_size("lots")


def test_artifact_names() -> None:
    a = Artifact.from_path(Path("curl-dev-7.88.1-r2.x86_64.tar.zst"))
    assert (a.name, a.version, a.release, a.arch) == ("curl-dev", "7.88.1", 2, "x86_64")
    with pytest.raises(UsageError):
        Artifact.from_path(Path("curl.tar.gz"))


def test_closure_follows_runtime_deps_only(repo: Path) -> None:
    arts = find_artifacts(repo / "build/packages/x86_64")
    names = [a.name for a in runtime_closure(["iglunix-base"], arts)]
    assert names == ["libc", "shell", "su", "iglunix-base"]
    assert "su-dev" not in names  # sub-packages only when named
    named = [a.name for a in runtime_closure(["iglunix-base", "su-dev"], arts)]
    assert named[-1] == "su-dev"


def test_engine_metadata_and_index(repo: Path) -> None:
    """The engine's formats: iglupkg's key=value file (colon deps) and index.json."""
    out = repo / "build/packages/x86_64"
    meta = (b"[pkg]\npkgname=app\npkgver=2\ndeps=shell:su\n\n[license]\ndeps=not:this\n"
            b"\n[fs]\nusr/bin/app\n")
    pack_artifact(out, _pkg(repo, "app", {"usr/bin/app": "a"}), "app", "2", metadata=meta,
                  pkginfo=False)
    assert [a.name for a in runtime_closure(["app"], find_artifacts(out))] == \
        ["libc", "shell", "su", "app"]
    # An index naming an older file and other deps wins over the directory listing.
    old = pack_artifact(out, _pkg(repo, "app1", {"usr/bin/app": "old"}), "app", "1")
    os.utime(old, (0, 0))
    (out / "index.json").write_text(json.dumps({"format": 1, "packages": {
        "app": {"file": old.name, "deps": ["libc"], "version": "1"}}}))
    closure = runtime_closure(["app"], find_artifacts(out))
    assert [a.name for a in closure] == ["libc", "app"] and closure[-1].version == "1"


def test_missing_dependency_names_who_needs_it(repo: Path) -> None:
    out = repo / "build/packages/x86_64"
    pack_artifact(out, _pkg(repo, "curl", {"usr/bin/curl": "c"}), "curl", "8", deps=["openssl"])
    with pytest.raises(UsageError, match=r"package openssl \(needed by curl\) has no built"):
        runtime_closure(["curl"], find_artifacts(out))


def test_conflict_names_both_packages(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = repo / "build/packages/x86_64"
    pack_artifact(out, _pkg(repo, "toybox", {"bin/sh": ("toy", 0o755)}), "toybox", "0.8")
    arts = find_artifacts(out)
    with pytest.raises(FileConflictError, match=r"packages shell and toybox both install /bin/sh"):
        populate_root(runtime_closure(["iglunix-base", "toybox"], arts), repo / "root")
    code = main(["image", "--build-dir", str(repo / "build"), "--packages", "iglunix-base",
                 "toybox", "--kernel", str(repo / "vmlinuz")])
    err = capsys.readouterr().err
    assert code == 1
    assert "shell and toybox both install /bin/sh" in err and "Traceback" not in err
    assert not (repo / "build/iglunix.img").exists()
    assert not list((repo / "build").glob(".iglunix.img*"))


def test_unsafe_member_refused(repo: Path) -> None:
    import io
    import tarfile

    import zstandard
    bad = repo / "evil-1-r1.x86_64.tar.zst"
    with open(bad, "wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as zw, \
            tarfile.open(fileobj=zw, mode="w|") as tar:
        ti = tarfile.TarInfo("../../escaped")
        ti.size = 2
        tar.addfile(ti, io.BytesIO(b"x\n"))
    with pytest.raises(BuildError, match="unsafe member name"):
        populate_root([Artifact.from_path(bad)], repo / "root")
    assert not (repo / "escaped").exists()


def test_links_resolve_inside_the_root(repo: Path) -> None:
    """A package's absolute symlink never redirects another package's files onto the host."""
    out = repo / "build/packages/x86_64"
    outside = repo / "host-etc"
    outside.mkdir()
    pack_artifact(out, _pkg(repo, "linker", {}, {"conf": str(outside)}), "linker", "1")
    pack_artifact(out, _pkg(repo, "writer", {"conf/file": "inside"}), "writer", "1",
                  deps=["linker"])
    (repo / "root").mkdir()
    populate_root(runtime_closure(["writer"], find_artifacts(out)), repo / "root")
    assert not (outside / "file").exists()
    assert (repo / "root" / str(outside).lstrip("/") / "file").read_text() == "inside"


def test_image_read_back(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = repo / "build"
    code = main(["image", "--build-dir", str(build), "--kernel", str(repo / "vmlinuz")])
    assert code == 0, capsys.readouterr().err
    image = build / "iglunix.img"
    parts = _partitions(image)
    assert [p["name"] for p in parts] == ["ESP", "IGLUNIX"]
    esp, root = parts[0]["start"] * 512, parts[1]["start"] * 512
    # Root file system: label, files, owners and modes as the artifacts asked.
    assert "IGLUNIX" in subprocess.run(["dumpe2fs", "-h", f"{image}?offset={root}"],
                                       capture_output=True, text=True).stdout
    assert _debugfs(image, root, "cat /etc/passwd").startswith("root:x:0:0")
    mode, uid, gid = _inode(image, root, "/bin/su")
    assert (uid, gid) == (0, 0) and stat.S_IMODE(mode) == 0o4755
    assert stat.S_IMODE(_inode(image, root, "/etc/shadow")[0]) == 0o600
    assert _inode(image, root, "/")[1:] == (0, 0)
    assert "mksh" in _debugfs(image, root, "stat /bin/sh")  # fast symlink target
    index = json.loads(_debugfs(image, root, "cat /usr/share/iglupkg/index.json"))["packages"]
    assert sorted(index) == ["iglunix-base", "libc", "shell", "su"]
    assert "bin/su" in index["su"]["files"]
    assert "deps=libc\n" in _debugfs(image, root, "cat /usr/share/iglupkg/su")
    assert ".PKGINFO" not in _debugfs(image, root, "ls /")
    assert "su.h" not in _debugfs(image, root, "ls -l /usr")
    # ESP: loader, entry pointing at the root partition's PARTUUID, the kernel.
    mdir = subprocess.run(["mdir", "-b", "-/", "-i", f"{image}@@{esp}", "::"],
                          capture_output=True, text=True, env=ENV, check=True).stdout
    assert "::/EFI/BOOT/BOOTX64.EFI" in mdir and "::/vmlinuz" in mdir
    entry = subprocess.run(["mtype", "-i", f"{image}@@{esp}", "::/loader/entries/iglunix.conf"],
                           capture_output=True, text=True, env=ENV, check=True).stdout
    assert f"root=PARTUUID={parts[1]['uuid']}".lower() in entry.lower()
    assert "console=ttyS0" in entry
    kernel = subprocess.run(["mtype", "-i", f"{image}@@{esp}", "::/vmlinuz"],
                            capture_output=True, env=ENV, check=True).stdout
    assert kernel == (repo / "vmlinuz").read_bytes()
    fsck = subprocess.run(["e2fsck", "-fn", f"{image}?offset={root}"], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout


def test_owners_fixed_when_tree_is_not_root_owned(repo: Path) -> None:
    """As a non-root user the tree belongs to the caller; debugfs gives the files back to 0:0.

    The tests run as root, so the tree is chowned to 1000:1000 to be in that
    situation for real; the image must still say 0:0.
    """
    arts = runtime_closure(["iglunix-base"], find_artifacts(repo / "build/packages/x86_64"))
    root = repo / "root"
    root.mkdir()
    tree = populate_root(arts, root)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 1000, 1000)
    os.chmod(root / "bin/su", 0o4755)  # chown cleared it; a non-root unpack keeps it
    result = make_image(tree, repo / "vmlinuz", repo / "out.img")
    assert result.owners_fixed > 0
    off = result.layout.root_offset
    for path in ("/bin/su", "/bin/sh", "/etc", "/usr/share/iglupkg/index.json"):
        assert _inode(repo / "out.img", off, path)[1:] == (0, 0), path
    assert stat.S_IMODE(_inode(repo / "out.img", off, "/bin/su")[0]) == 0o4755


def test_size_option(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = repo / "build"
    assert main(["image", "--build-dir", str(build), "--kernel", str(repo / "vmlinuz"),
                 "--size", "300M", "-o", str(repo / "big.img")]) == 0
    assert (repo / "big.img").stat().st_size == 300 * 2**20
    capsys.readouterr()
    code = main(["image", "--build-dir", str(build), "--kernel", str(repo / "vmlinuz"),
                 "--size", "20M", "-o", str(repo / "small.img")])
    err = capsys.readouterr().err
    assert code == 2 and "too small" in err and "hint:" in err
    assert not (repo / "small.img").exists()


def test_no_kernel_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["image", "--build-dir", str(repo / "build")])
    err = capsys.readouterr().err
    assert code == 2 and "no kernel" in err and "--kernel" in err


def test_kernel_from_linux_package(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = repo / "build/packages/x86_64"
    pack_artifact(out, _pkg(repo, "linux", {"boot/vmlinuz-6.1": "KERNEL"}), "linux", "6.1")
    assert main(["image", "--build-dir", str(repo / "build")]) == 0
    assert "linux" in capsys.readouterr().out
    image = repo / "build/iglunix.img"
    esp = _partitions(image)[0]["start"] * 512
    kernel = subprocess.run(["mtype", "-i", f"{image}@@{esp}", "::/vmlinuz"],
                            capture_output=True, env=ENV, check=True).stdout
    assert kernel == b"KERNEL"


def test_base_recipe_is_valid_yaml_with_its_files() -> None:
    from ruamel.yaml import YAML
    recipe_dir = Path(__file__).parent.parent / "recipes/base/iglunix-base"
    recipe = YAML(typ="safe").load((recipe_dir / "recipe.yaml").read_text())
    assert recipe["name"] == "iglunix-base"
    # What Iglunix's `iglunix` package pulls in: busybox init, toybox, the init scripts.
    assert set(recipe["deps"]) == {"musl", "mksh", "busybox", "toybox", "init"}
    assert "init.c" not in {s.get("file") for s in recipe["sources"]}
    for source in recipe["sources"]:
        assert (recipe_dir / source["file"]).is_file(), source
