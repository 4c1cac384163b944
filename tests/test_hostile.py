"""Hostile input and faults (issue 16): each case as the attack or fault was tried.

Every test runs the real thing (the CLI in-process, a real HTTP server on
127.0.0.1, real tarballs, the real packer), asserts the one clear refusal
line and its exit code, and that nothing outside the build dir changed.
Tests of unbounded input (endless bodies, bombs) run on a small tmpfs
(`small_fs`), so a regression fills 300 MB, not the machine's disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import lzma
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iglubuild.commands._common import load
from iglubuild.errors import FetchError
from iglubuild.executors import make_executor
from iglubuild.package import PackageError, PackageInfo, install_artifact, pack
from iglubuild.plan import StateStore, make_plan
from iglubuild.settings import Settings
from tests.conftest import CliResult, write_recipe
from tests.fault_server import Fault, FaultServer

Cli = Callable[..., CliResult]


# ------------------------------------------------------------------ helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball(top: str, files: dict[str, bytes]) -> bytes:
    """A real .tar.gz holding `files` under the folder `top`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(top)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime) of everything under `root` except the `skip` folder."""
    found: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), root)] = (
                st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def one_error(res: CliResult) -> str:
    """The single `error:` line of a run, asserting there is one and no traceback."""
    assert "Traceback" not in res.err, res.err
    errors = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.err
    return errors[0]


def flip_byte(path: Path, offset: int = -10) -> None:
    """Change one byte of a file in place (as a disk error or a hand edit would)."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    with open(path, "r+b") as f:  # same inode: only the stamp can tell
        f.write(data)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    return tmp_path / "build"


@contextlib.contextmanager
def tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 300 MB: where unbounded input may land if a limit regresses."""
    with tmpfs(tmp_path / "small", "300m") as mnt:
        yield mnt


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 1 MB: a disk that is full as soon as anything real is written."""
    with tmpfs(tmp_path / "tiny", "1m") as mnt:
        yield mnt


# ------------------------------------------------ 4: a corrupted cache is trusted


def hello_recipe(recipes: Path, server: FaultServer, data: bytes, extra: str = "") -> None:
    server.add("/dl/hello-1.0.tar.gz", data)
    write_recipe(recipes, "hello", f"""
        name: hello
        version: "1.0"
        sources:
          - url: {server.base}/dl/hello-{{version}}.tar.gz
            sha256: {sha256(data)}
        {extra}
        package: |
          mkdir -p "$pkgdir/usr/share"
          cp hello.txt "$pkgdir/usr/share/"
        """)


def test_4_altered_cache_entry_is_dropped_and_fetched_again(
        cli: Cli, recipes: Path, tmp_path: Path, server: FaultServer, build_dir: Path) -> None:
    data = tarball("hello-1.0", {"hello.txt": b"hello\n"})
    hello_recipe(recipes, server, data)
    base = ["--recipes", str(recipes)]
    assert cli(*base, "fetch", "hello").code == 0
    entry = build_dir / "distfiles" / "by-sha256" / sha256(data)
    assert entry.read_bytes() == data
    before = snapshot(tmp_path, build_dir)

    flip_byte(entry)
    res = cli(*base, "fetch", "hello")
    assert res.code == 0, res.err
    assert "downloaded 1" in res.err and "reused 0" in res.err
    assert entry.read_bytes() == data
    assert len(server.requests_for("/dl/hello-1.0.tar.gz")) == 2

    # Offline there is nothing to fetch it from: exit 3, one line, entry gone.
    flip_byte(entry)
    res = cli(*base, "--offline", "pkg", "--force", "hello", "hello")
    assert res.code == 3, res.err
    line = one_error(res)
    assert "changed since it was fetched" in line and "--offline" in line
    assert not entry.exists()
    assert snapshot(tmp_path, build_dir) == before


def test_4_unpack_checks_the_cache_entry_again(
        cli: Cli, recipes: Path, server: FaultServer, build_dir: Path) -> None:
    """Between fetch and unpack the entry changes: unpack refuses it (exit 3)."""
    from iglubuild.recipe import load_tree
    from iglubuild.unpack import prepare_source

    data = tarball("hello-1.0", {"hello.txt": b"hello\n"})
    hello_recipe(recipes, server, data)
    assert cli("--recipes", str(recipes), "fetch", "hello").code == 0
    entry = build_dir / "distfiles" / "by-sha256" / sha256(data)
    flip_byte(entry)
    settings = Settings(recipes=recipes, build_dir=build_dir)
    with pytest.raises(FetchError) as info:
        prepare_source(load_tree(recipes).recipes["hello"], settings, build_dir / "work" / "h")
    assert "changed since it was fetched" in info.value.message
    assert info.value.exit_code == 3
    assert not entry.exists() and not (build_dir / "work" / "h" / "src").exists()


def test_4_stamp_survives_a_touch_back(tmp_path: Path) -> None:
    """Rewriting the content and restoring the mtime (touch -r) is still caught: ctime moved."""
    from iglubuild import integrity

    f = tmp_path / "entry"
    f.write_bytes(b"good content\n")
    integrity.seal(f, "sha256", sha256(b"good content\n"))
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.write(b"evil")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not integrity.verify(f, "sha256", sha256(b"good content\n"))


# ------------------------------------------- 5: a flipped byte in a built package


def built_hello(recipes: Path, build_dir: Path, tmp_path: Path) -> Path:
    """hello packed by the real packer, recorded as built like the engine does."""
    write_recipe(recipes, "hello", """
        name: hello
        version: "1.0"
        package: |
          true
        """)
    pkgdir = tmp_path / "pkgdir"
    (pkgdir / "usr" / "bin").mkdir(parents=True)
    (pkgdir / "usr" / "bin" / "hello").write_bytes(b"#!/bin/sh\necho hello\n" * 50)
    settings = Settings(recipes=recipes, build_dir=build_dir)
    artifact = pack(pkgdir, ["usr", "usr/bin", "usr/bin/hello"],
                    PackageInfo("hello", "1.0", 1, "x86_64"), settings.packages_dir())
    tree, graph = load(settings)
    state = StateStore(build_dir)
    plan = make_plan(tree, graph, make_executor(settings).toolchain_id(), state)
    state.write(plan.packages["hello"].new_record("built", duration=1.0, artifacts=[artifact]))
    return artifact


def test_5_flipped_byte_in_an_artifact_is_noticed(
        cli: Cli, recipes: Path, tmp_path: Path, build_dir: Path) -> None:
    artifact = built_hello(recipes, build_dir, tmp_path)
    base = ["--recipes", str(recipes)]
    res = cli(*base, "status", "hello")
    assert res.code == 0 and "hello" in res.out and "built" in res.out
    before = snapshot(tmp_path, build_dir)

    flip_byte(artifact, offset=len(artifact.read_bytes()) // 2)
    res = cli(*base, "status", "hello")
    assert res.code == 0, res.err
    assert "outdated (artifact changed since it was packed" in res.out
    # `pkg` plans from the same status: it is not up to date any more.
    res = cli(*base, "pkg", "--dry-run", "hello")
    assert "up to date" not in res.out.replace("0 up to date", "")

    # Neither a sysroot nor the image installs it.
    from iglubuild.sysroot import SysrootCache

    with pytest.raises(PackageError) as info, \
            SysrootCache(build_dir / "sysroots").use([artifact]):
        pass
    assert "changed since it was packed" in info.value.message
    assert not any(p.is_dir() for p in (build_dir / "sysroots").iterdir())  # none made
    with pytest.raises(PackageError) as info:
        install_artifact(artifact, tmp_path / "sysroot")
    assert "changed since it was packed" in info.value.message
    res = cli(*base, "image", "--packages", "hello", "--kernel", str(artifact))
    assert res.code == 1, res.err
    assert "changed since it was packed" in one_error(res)
    assert not (build_dir / "iglunix.img").exists()
    assert snapshot(tmp_path, build_dir) == {**before, **{
        k: v for k, v in snapshot(tmp_path, build_dir).items() if k.startswith("sysroot")}}


def test_5_flipped_byte_in_an_xbps_package_is_neither_indexed_nor_shipped(
        cli: Cli, recipes: Path, tmp_path: Path, build_dir: Path) -> None:
    """The .xbps twin is sealed like the artifact: the repository index, which every
    xbps client trusts, never vouches for bytes changed after packing."""
    from iglubuild.image import RootTree, add_repository
    from iglubuild.package import xbps_twin
    from iglubuild.xbps import XbpsError, read_repodata, write_repository

    artifact = built_hello(recipes, build_dir, tmp_path)
    twin = xbps_twin(artifact)
    assert twin is not None and twin.is_file()
    packages = artifact.parent
    write_repository(packages)
    good = read_repodata(packages)["hello"]["filename-sha256"]
    assert good == hashlib.sha256(twin.read_bytes()).hexdigest()
    repodata_before = (packages / "x86_64-musl-repodata").read_bytes()

    flip_byte(twin, offset=len(twin.read_bytes()) // 2)
    base = ["--recipes", str(recipes)]
    res = cli(*base, "status", "hello")
    assert res.code == 0, res.err
    assert f"outdated (artifact changed since it was packed: {twin}" in res.out
    with pytest.raises(XbpsError) as info:
        write_repository(packages)
    assert "changed since it was packed" in info.value.message and "not indexed" in \
        info.value.message
    assert info.value.hint and "hello" in info.value.hint
    # The index keeps vouching for the good bytes only, and no image carries the bad ones.
    assert (packages / "x86_64-musl-repodata").read_bytes() == repodata_before
    with pytest.raises(PackageError) as perr:
        add_repository(RootTree(tmp_path / "root"), packages)
    assert "changed since the repository was indexed" in perr.value.message
    assert not list((tmp_path / "root").rglob("*.xbps"))


# ------------------------------------ 6 & 7: downloads and archives without limits


def endless_recipe(recipes: Path, server: FaultServer, fault: Fault, extra: str = "") -> str:
    path = "/dl/endless-1.0.tar.gz"
    real = b"the real file\n"
    server.add(path, real, fault)
    write_recipe(recipes, "endless", f"""
        name: endless
        version: "1.0"
        sources:
          - url: {server.base}{path}
            sha256: {sha256(real)}
            {extra}
        """)
    return path


def test_6_endless_body_stops_at_the_download_limit(
        cli: Cli, recipes: Path, tmp_path: Path, server: FaultServer, small_fs: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    endless_recipe(recipes, server, Fault("endless"))
    monkeypatch.setenv("IGLUBUILD_MAX_DOWNLOAD", "20M")
    before = snapshot(tmp_path, small_fs)
    res = cli("--recipes", str(recipes), "--build-dir", str(small_fs / "build"),
              "fetch", "endless")
    assert res.code == 3, res.err
    line = one_error(res)
    assert "bigger than the download limit of 20.0 MiB" in line and "--max-download" in line
    assert server.endless_sent < 40 << 20
    partial = small_fs / "build" / "distfiles" / ".partial"
    assert [p.name for p in partial.iterdir() if not p.name.endswith(".lock")] == []
    assert not list((small_fs / "build" / "distfiles" / "by-sha256").iterdir())
    assert snapshot(tmp_path, small_fs) == before


def test_6_recipe_size_is_exact_and_a_huge_announced_length_is_refused_at_once(
        cli: Cli, recipes: Path, server: FaultServer, small_fs: Path) -> None:
    endless_recipe(recipes, server, Fault("endless"), extra="size: 4096")
    base = ["--recipes", str(recipes), "--build-dir", str(small_fs / "build")]
    res = cli(*base, "fetch", "endless")
    assert res.code == 3 and "bigger than the recipe's `size: 4096`" in one_error(res)
    assert server.endless_sent < 8 << 20
    endless_recipe(recipes, server, Fault("endless", after=1 << 40))
    start = time.monotonic()
    res = cli(*base, "fetch", "endless")
    assert res.code == 3, res.err
    assert "the announced size (1099511627776 bytes) is bigger than the download limit" \
        in one_error(res)
    assert time.monotonic() - start < 10


def test_7_trickle_ends_with_exit_3(
        cli: Cli, recipes: Path, tmp_path: Path, server: FaultServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = "/dl/slow-1.0.tar.gz"
    data = b"x" * 2000
    server.add(path, data, Fault("trickle", chunk=1, delay=0.1))
    write_recipe(recipes, "slow", f"""
        name: slow
        version: "1.0"
        sources:
          - url: {server.base}{path}
            sha256: {sha256(data)}
        """)
    monkeypatch.setenv("IGLUBUILD_RATE_WINDOW", "1.5")
    start = time.monotonic()
    res = cli("--recipes", str(recipes), "fetch", "slow")
    assert res.code == 3, res.err
    line = one_error(res)
    assert "slower than the minimum rate" in line and "at least 1024 bytes/s" in line
    assert "--min-rate" in line
    assert time.monotonic() - start < 15  # one window per try, not 2000 * 0.1 s


class _Zeros(io.RawIOBase):
    """`n` zero bytes, read without holding them (the bomb's content)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def bomb(path: Path, size: int) -> Path:
    """A real archive whose one member is `size` zero bytes (compressed by its suffix)."""
    info = tarfile.TarInfo("bomb-1.0/zeros")
    info.size = size
    if path.name.endswith(".tar.zst"):
        import zstandard

        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            tar.addfile(info, io.BufferedReader(_Zeros(size)))
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw.getvalue()))
    elif path.name.endswith(".tar.xz"):
        with lzma.open(path, "wb", preset=0) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
            tar.addfile(info, io.BufferedReader(_Zeros(size)))
    else:
        with tarfile.open(path, "w:gz", compresslevel=1) as tar:
            tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return path


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.xz", ".tar.zst"])
def test_6_archive_bomb_stops_early(suffix: str, tmp_path: Path, small_fs: Path) -> None:
    from iglubuild.unpack import UnpackError, UnpackLimits, unpack_archive

    archive = bomb(tmp_path / f"bomb-1.0{suffix}", 256 << 20)
    assert archive.stat().st_size < 2 << 20
    dest = small_fs / "work" / "src"
    dest.mkdir(parents=True)
    settings = Settings(build_dir=small_fs)
    with pytest.raises(UnpackError) as info:
        unpack_archive(archive, dest, limits=UnpackLimits.from_settings(settings))
    assert "more than 200 times its size" in info.value.message
    assert "--max-ratio" in (info.value.hint or "")
    assert list(dest.iterdir()) == [] and sorted(p.name for p in dest.parent.iterdir()) == ["src"]
    # The size limit on its own (ratio allowed): stops at 100 MiB, not at 256.
    with pytest.raises(UnpackError) as info:
        unpack_archive(archive, dest, limits=UnpackLimits(100 << 20, 1e9))
    assert "more than 100.0 MiB (the unpacked size limit)" in info.value.message
    assert "--max-unpacked" in (info.value.hint or "")
    assert list(dest.iterdir()) == []


# ------------------------------------------------------- 8: YAML alias bomb, nesting


def billion_laughs(levels: int = 10) -> str:
    lines = ['name: lol', 'version: "1"', 'a0: &a0 [' + ",".join(['"lol"'] * 9) + ']']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("verb", ["lint", "status"])
def test_8_yaml_alias_bomb_is_refused_at_once(verb: str, cli: Cli, recipes: Path) -> None:
    path = write_recipe(recipes, "lol", billion_laughs())
    start = time.monotonic()
    res = cli("--recipes", str(recipes), verb, *([str(path)] if verb == "lint" else []))
    assert time.monotonic() - start < 15  # was: minutes, deaf to Ctrl-C (now 0.4 s)
    assert res.code == 2, res.err
    line = one_error(res)
    assert f"{path}:8:" in line and "expands to more than 100000 values" in line


def test_8_a_long_value_through_many_aliases_is_refused(cli: Cli, recipes: Path) -> None:
    """90 000 aliases of a 60 000-character value: few values, 5 GB of text."""
    path = write_recipe(recipes, "lol", 'name: lol\nversion: "1"\n'
                        f'description: &s "{"x" * 60000}"\n'
                        f'backup: [{",".join(["*s"] * 90000)}]\n')
    start = time.monotonic()
    res = cli("--recipes", str(recipes), "lint", str(path))
    assert time.monotonic() - start < 15
    assert res.code == 2, res.err
    assert "YAML expands to more than 4 MiB of text" in one_error(res)


def test_8_deep_nesting_is_refused_not_a_crash(tmp_path: Path, recipes: Path) -> None:
    """100 000 `[` crashed the C composer (SIGSEGV); run in a child to see a crash."""
    import sys

    path = write_recipe(recipes, "deep", 'name: deep\nversion: "1"\na: '
                        + "[" * 100_000 + "]" * 100_000 + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "iglubuild", "--build-dir",
                           str(tmp_path / "build"), "lint", str(path)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:3:35: YAML nested deeper than 32 levels" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------- 3 & 14: files from outside the recipe folder


def test_3_file_source_symlink_to_a_host_file_is_refused_at_lint(
        cli: Cli, recipes: Path, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("root:$6$hash:...\n")
    path = write_recipe(recipes, "leak", """
        name: leak
        version: "1.0"
        sources:
          - file: leak.conf
        """)
    (path.parent / "leak.conf").symlink_to(secret)
    res = cli("--recipes", str(recipes), "lint", str(path))
    assert res.code == 2, res.err
    line = one_error(res)
    assert f"{path}:4:11: file 'leak.conf' is outside the recipe folder" in line
    assert str(secret) in line


def test_3_patches_outside_the_folder_are_refused_at_lint(
        cli: Cli, recipes: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.patch").write_text("--- a/x\n+++ b/x\n")
    path = write_recipe(recipes, "leak", """
        name: leak
        version: "1.0"
        patches: [../../../outside.patch, /etc/shadow]
        backup: [/etc/passwd, ../x]
        """)
    res = cli("--recipes", str(recipes), "lint", str(path))
    assert res.code == 2, res.err
    errors = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    rest = [ln for ln in res.err.splitlines() if ln.startswith(str(path))]
    lines = errors + rest
    assert any("3:11: patch '../../../outside.patch' is outside the recipe folder" in ln
               for ln in lines), res.err
    assert any("3:35: patch '/etc/shadow' is outside the recipe folder" in ln
               for ln in lines), res.err
    assert any("4:10: backup path '/etc/passwd' must be relative" in ln for ln in lines)
    assert any("4:23: backup path '../x' must be relative" in ln for ln in lines)
    assert "Traceback" not in res.err


def test_3_a_link_made_after_lint_is_refused_at_unpack(
        recipes: Path, tmp_path: Path, build_dir: Path) -> None:
    from iglubuild.recipe import load_tree
    from iglubuild.unpack import UnpackError, prepare_source

    secret = tmp_path / "host-secret"
    secret.write_text("secret\n")
    path = write_recipe(recipes, "leak", """
        name: leak
        version: "1.0"
        sources:
          - file: leak.conf
        """)
    (path.parent / "leak.conf").write_text("fine\n")
    loaded = load_tree(recipes).recipes["leak"]
    (path.parent / "leak.conf").unlink()
    (path.parent / "leak.conf").symlink_to(secret)
    work = build_dir / "work" / "leak"
    with pytest.raises(UnpackError) as info:
        prepare_source(loaded, Settings(recipes=recipes, build_dir=build_dir), work)
    assert "resolves outside the recipe folder" in info.value.message
    assert [p.name for p in work.iterdir()] == []


def test_14_filename_with_a_folder_is_refused_at_lint(cli: Cli, recipes: Path) -> None:
    path = write_recipe(recipes, "sub", """
        name: sub
        version: "1.0"
        sources:
          - url: file:///nonexistent/x.txt
            filename: sub/x.txt
        """)
    res = cli("--recipes", str(recipes), "lint", str(path))
    assert res.code == 2, res.err
    line = one_error(res)
    assert f"{path}:5:15:" in line and "must be a plain file name" in line


# --------------------------------------------------- 2: the packer and a symlinked $pkgdir


def test_2_symlinked_pkgdir_is_refused(recipes: Path, tmp_path: Path, build_dir: Path) -> None:
    from iglubuild.build import BuildJob, build_package
    from iglubuild.errors import BuildError
    from iglubuild.executors.host import HostExecutor
    from iglubuild.recipe import load_tree

    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "shadow").write_text("root:$6$secret:...\n")
    write_recipe(recipes, "grab", f"""
        name: grab
        version: "1.0"
        package: |
          rm -rf "$pkgdir"
          ln -s {host} "$pkgdir"
        """)
    before = snapshot(tmp_path, build_dir)
    executor = HostExecutor()
    settings = Settings(recipes=recipes, build_dir=build_dir, jobs=1)
    with pytest.raises(BuildError) as info:
        build_package(BuildJob(load_tree(recipes).recipes["grab"], settings, executor, [], "sig"))
    assert "is a symlink; refusing to pack it" in info.value.message
    packages = settings.packages_dir()
    assert not packages.exists() or not any(packages.glob("*.tar.zst"))
    assert snapshot(tmp_path, build_dir) == before


def test_2_packer_does_not_follow_links_inside_pkgdir(tmp_path: Path) -> None:
    from iglubuild.package import pack_all, read_metadata

    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "shadow").write_text("secret\n")
    pkgdir = tmp_path / "pkgdir"
    (pkgdir / "usr").mkdir(parents=True)
    (pkgdir / "etc").symlink_to(host)  # a link to a folder: packed as a link
    (pkgdir / "usr" / "shadow").symlink_to(host / "shadow")
    art = pack_all(pkgdir, PackageInfo("p", "1", 1, "x86_64"), {}, tmp_path / "out")[0]
    files = {f["path"]: f for f in read_metadata(art)["files"]}
    assert files["etc"]["type"] == "symlink" and "etc/shadow" not in files
    assert files["usr/shadow"] == {"path": "usr/shadow", "type": "symlink",
                                   "target": str(host / "shadow")}


def test_2_a_sysroot_replaced_by_a_link_is_not_walked(tmp_path: Path) -> None:
    """`rm -rf "$SYSROOT"; ln -s HOST "$SYSROOT"` on the host executor."""
    import shutil

    from iglubuild.errors import BuildError
    from iglubuild.sysroot import SysrootCache, check_untouched

    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "shadow").write_text("secret\n")
    cache = SysrootCache(tmp_path / "sysroots")
    before = snapshot(tmp_path, tmp_path / "sysroots")
    with cache.use([]) as sysroot:
        shutil.rmtree(sysroot.path)
        sysroot.path.symlink_to(host)
        with pytest.raises(BuildError) as info:
            check_untouched(sysroot, cache, "evil")
    assert "the build changed its sysroot (.)" in info.value.message
    cache.prune()
    assert not list((tmp_path / "sysroots").glob(".retired-*"))
    assert snapshot(tmp_path, tmp_path / "sysroots") == before


# ------------------------------------- 11: image, a package's link is another's folder


def test_11_image_installs_through_another_packages_link(tmp_path: Path) -> None:
    from iglubuild.image import find_artifacts, make_image, populate_root, runtime_closure
    from tests.imagekit import pack_artifact
    from tests.test_image import _inode, _pkg

    out = tmp_path / "build" / "packages" / "x86_64"
    # `lib -> /usr/lib` is absolute: followed on the host it is the host's /usr/lib.
    pack_artifact(out, _pkg(tmp_path, "a", {"usr/lib/libc.so": "c"}, {"lib": "/usr/lib"}),
                  "a", "1")
    pack_artifact(out, _pkg(tmp_path, "b", {"lib/iglu-hostile-test.so": "b"}), "b", "1",
                  deps=["a"])
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(4096))
    root = tmp_path / "root"
    root.mkdir()
    tree = populate_root(runtime_closure(["b"], find_artifacts(out)), root)
    for dirpath, dirnames, filenames in os.walk(root):  # as a non-root unpack leaves it
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 1000, 1000)
    result = make_image(tree, kernel, tmp_path / "out.img")  # was: FileNotFoundError
    assert result.owners_fixed > 0
    off = result.layout.root_offset
    assert _inode(tmp_path / "out.img", off, "/usr/lib/iglu-hostile-test.so")[1:] == (0, 0)
    assert not Path("/usr/lib/iglu-hostile-test.so").exists()


def test_11_folder_then_link_over_it_is_one_clear_error(
        cli: Cli, recipes: Path, tmp_path: Path, build_dir: Path) -> None:
    from tests.imagekit import pack_artifact
    from tests.test_image import _pkg

    out = build_dir / "packages" / "x86_64"
    pack_artifact(out, _pkg(tmp_path, "a", {"lib/x.so": "a"}), "a", "1")
    pack_artifact(out, _pkg(tmp_path, "b", {"usr/lib/y.so": "b"}, {"lib": "usr/lib"}), "b",
                  "1", deps=["a"])
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(4096))
    res = cli("--recipes", str(recipes), "image", "--packages", "b", "--kernel", str(kernel))
    assert res.code == 1, res.err
    line = one_error(res)
    assert "packages a and b both install /lib" in line
    assert not (build_dir / "iglunix.img").exists()


# ------------------------------------------------------------- 10: zip symlink chains


def zip_with(path: Path, members: list[tuple[str, str | None, bytes]]) -> Path:
    """A real zip: (name, symlink target or None, file content)."""
    import stat as st
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, target, data in members:
            info = zipfile.ZipInfo(name)
            if target is not None:
                info.external_attr = (st.S_IFLNK | 0o777) << 16
                zf.writestr(info, target)
            else:
                info.external_attr = (st.S_IFREG | 0o644) << 16
                zf.writestr(info, data)
    return path


@pytest.mark.parametrize("order", ["as tried", "link last"])
def test_10_zip_symlink_chain_out_of_the_folder_is_refused(order: str, tmp_path: Path) -> None:
    from iglubuild.unpack import UnpackError, unpack_archive

    chain = [("top/a", ".", b""), ("top/x", "a/..", b""), ("top/y", "x/..", b""),
             ("top/z", "y/..", b"")]
    if order == "link last":  # x is checked while a is not a link yet
        chain = chain[1:] + chain[:1]
    archive = zip_with(tmp_path / "chain-1.0.zip", [("top/README", None, b"hi\n"), *chain])
    dest = tmp_path / "work" / "src"
    dest.mkdir(parents=True)
    before = snapshot(tmp_path, dest.parent)
    with pytest.raises(UnpackError) as info:
        unpack_archive(archive, dest)
    # top/x -> a/.. is the unpack folder itself (inside); the next rung leaves it.
    assert "is a symlink leading outside" in info.value.message
    assert ("'top/y'" if order == "as tried" else "'top/z'") in info.value.message
    assert list(dest.iterdir()) == []
    assert snapshot(tmp_path, dest.parent) == before


def test_10_links_that_stay_inside_still_unpack(tmp_path: Path) -> None:
    from iglubuild.unpack import unpack_archive

    archive = zip_with(tmp_path / "ok-1.0.zip", [
        ("top/lib64/libz.so", None, b"z"), ("top/lib", "lib64", b""),
        ("top/sub/up", "../lib/libz.so", b""), ("top/self", ".", b"")])
    dest = tmp_path / "src"
    dest.mkdir()
    top = unpack_archive(archive, dest)
    assert top is not None and (top / "sub" / "up").read_bytes() == b"z"


# ------------------------------------------------------------------ 12: disk full


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of `folder` up to `leave` bytes free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            f.write(bytes(max(free - leave, 0)))


def no_temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


def test_12_download_into_a_full_distfiles_folder(
        cli: Cli, recipes: Path, tmp_path: Path, server: FaultServer, tiny_fs: Path) -> None:
    data = os.urandom(3 << 20)
    server.add("/dl/big-1.0.bin", data)
    write_recipe(recipes, "big", f"""
        name: big
        version: "1.0"
        sources:
          - url: {server.base}/dl/big-1.0.bin
            sha256: {sha256(data)}
        """)
    res = cli("--recipes", str(recipes), "--distfiles", str(tiny_fs / "d"), "fetch", "big")
    assert res.code == 1, res.err
    line = one_error(res)
    assert f"no space left on the disk of {tiny_fs / 'd' / '.partial'} (" in line
    assert "MiB free)" in line
    partial = tiny_fs / "d" / ".partial"
    assert [p.name for p in partial.iterdir() if not p.name.endswith(".lock")] == []
    assert list((tiny_fs / "d" / "by-sha256").iterdir()) == []


def test_12_full_build_dir_is_one_line(cli: Cli, recipes: Path, tiny_fs: Path) -> None:
    write_recipe(recipes, "hello", """
        name: hello
        version: "1.0"
        description: "%s"
        """ % ("x" * 60000))
    build = tiny_fs / "build"
    build.mkdir()
    fill(tiny_fs, leave=8192)
    res = cli("--recipes", str(recipes), "--build-dir", str(build), "status")
    assert res.code == 1, res.err
    assert f"no space left on the disk of {build}" in one_error(res)
    assert no_temp_files(tiny_fs) == []


def test_12_pack_and_unpack_on_a_full_disk(tmp_path: Path, tiny_fs: Path) -> None:
    from iglubuild.errors import DiskFullError
    from iglubuild.package import pack_all
    from iglubuild.unpack import unpack_archive

    pkgdir = tmp_path / "pkgdir"
    pkgdir.mkdir()
    (pkgdir / "blob").write_bytes(os.urandom(2 << 20))
    with pytest.raises(DiskFullError) as info:
        pack_all(pkgdir, PackageInfo("p", "1", 1, "x86_64"), {}, tiny_fs / "packages")
    assert str(tiny_fs / "packages") in info.value.message
    assert list((tiny_fs / "packages").iterdir()) == []

    archive = tmp_path / "blob-1.0.tar.gz"
    archive.write_bytes(tarball("blob-1.0", {"blob": os.urandom(2 << 20)}))
    dest = tiny_fs / "src"
    dest.mkdir()
    with pytest.raises(DiskFullError) as info:
        unpack_archive(archive, dest)
    assert str(dest) in info.value.message
    assert list(dest.iterdir()) == [] and no_temp_files(tiny_fs) == []


# ---------------------------------------------- 13: temporaries of a kill -9 while packing

_PACKER = """
import sys
from pathlib import Path
from iglubuild.package import PackageInfo, pack_all
pack_all(Path(sys.argv[1]), PackageInfo("big", "1.0", 1, "x86_64"), {}, Path(sys.argv[2]))
"""


def killed_while_packing(tmp_path: Path, out: Path) -> Path:
    """Run the real packer in a child and kill -9 it while its temporary exists."""
    import signal
    import sys

    pkgdir = tmp_path / "pkgdir"
    pkgdir.mkdir()
    with open(pkgdir / "blob", "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, "-c", _PACKER, str(pkgdir), str(out)], env=env)
    deadline = time.monotonic() + 60
    temps: list[Path] = []
    while not temps and time.monotonic() < deadline and child.poll() is None:
        temps = [p for p in out.glob(".*.tmp")] if out.is_dir() else []
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert temps, "the packer finished before it could be killed"
    assert temps[0].exists() and temps[0].name.startswith(".big-1.0-r1.x86_64.tar.zst.")
    return temps[0]


def test_13_temporaries_of_a_killed_run_are_cleaned_at_the_next_start(
        cli: Cli, recipes: Path, tmp_path: Path, build_dir: Path) -> None:
    write_recipe(recipes, "hello", """
        name: hello
        version: "1.0"
        """)
    packages = build_dir / "packages" / "x86_64"
    stale = killed_while_packing(tmp_path, packages)
    old = time.time() - 5
    os.utime(stale, (old, old))
    # Not ours, or newer than the run: left alone.
    keep = [packages / "notes.tmp", packages / ".keep", build_dir / "work" / "x" / ".a.b.tmp"]
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("keep\n")
        os.utime(p, (old, old))
    unpacking = build_dir / "work" / "x" / ".src.tmp-4242"
    (unpacking / "hello-1.0").mkdir(parents=True)
    os.utime(unpacking, (old, old))
    future = packages / ".fresh.abc.tmp"
    future.write_text("being written\n")
    os.utime(future, (time.time() + 60, time.time() + 60))
    res = cli("--recipes", str(recipes), "pkg", "--dry-run", "hello")
    assert res.code == 0, res.err
    assert not stale.exists() and not unpacking.exists()
    assert all(p.exists() for p in keep) and future.exists()


def test_13_a_second_instance_holding_the_lock_keeps_its_temporaries(
        cli: Cli, recipes: Path, build_dir: Path) -> None:
    from iglubuild.lock import BuildDirLock

    write_recipe(recipes, "hello", """
        name: hello
        version: "1.0"
        """)
    packages = build_dir / "packages" / "x86_64"
    packages.mkdir(parents=True)
    busy = packages / ".hello-1.0-r1.x86_64.tar.zst.k2j3h4.tmp"
    busy.write_text("still packing\n")
    old = time.time() - 5
    os.utime(busy, (old, old))
    with BuildDirLock(build_dir):
        res = cli("--recipes", str(recipes), "pkg", "--dry-run", "hello")
    assert res.code == 2 and "is in use by PID" in one_error(res)
    assert busy.exists()
