"""xbps packages and repositories, judged by the real xbps 0.59.2 tools.

The tools are built once per machine from the shared bundle
(tests/xbps_tools.sh). Fast tests pack small trees and compare what we
write with what `xbps-rindex` itself writes for the same packages; the
slow ones build real C packages with musl and install, upgrade and remove
them with `xbps-install` / `xbps-remove` in an empty root, from a local
folder and from a signed repository served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import plistlib
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from iglubuild.package import PackageInfo, pack_all, source_date_epoch
from iglubuild.xbps import (
    UNSIGNED_META,
    package_filename,
    parse_public_key,
    public_key,
    read_plist_member,
    read_repodata,
    trust_key,
    write_repository,
)
from tests.xbps_support import XbpsTools, rel_files, tools_or_skip

EPOCH = 1_700_000_000


@pytest.fixture(scope="session")
def xbps() -> XbpsTools:
    return tools_or_skip()


def make_tree(root: Path) -> Path:
    files = {
        "usr/bin/ztool": b"#!/bin/sh\necho z\n",
        "usr/lib/libz.a": b"archive",
        "usr/include/zlib.h": b"int f(void);\n",
        "etc/z.conf": b"level=9\n",
        # A file beside a folder of the same stem: xbps-create's order is not a string sort.
        "usr/share/zlib.txt": b"notes\n",
        "usr/share/zlib/README": b"more notes\n",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "usr/bin/ztool").chmod(0o755)
    (root / "usr/bin/zt").symlink_to("ztool")
    (root / "var/empty").mkdir(parents=True)
    return root


SUBS = {"dev": ["usr/include", "usr/lib/*.a"]}


def info(**kw: object) -> PackageInfo:
    base = dict(name="zlib", version="1.3-2", release=2, arch="x86_64",
                description="compression", license="Zlib", homepage="https://zlib.net",
                deps=("musl",), backup=("etc/z.conf",), signature="abc")
    base.update(kw)
    return PackageInfo(**base)  # type: ignore[arg-type]


def members(path: Path) -> list[tarfile.TarInfo]:
    with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
        with tarfile.open(fileobj=zr, mode="r|") as tar:
            return list(tar)


def repodata_members(path: Path) -> dict[str, bytes]:
    out = {}
    with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
        with tarfile.open(fileobj=zr, mode="r|") as tar:
            for m in tar:
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def packed(tmp_path: Path, out: str = "out", epoch: int = EPOCH, **kw: object) -> Path:
    root = tmp_path / "pkg"
    if not root.exists():
        make_tree(root)
    pack_all(root, info(**kw), SUBS, tmp_path / out, epoch=epoch)
    return tmp_path / out


# ---------------------------------------------------------------- fast: format


def test_package_name_members_and_props(tmp_path: Path) -> None:
    out = packed(tmp_path)
    # A '-' in a version becomes '.': xbps splits NAME-VERSION_REVISION at the last '-'.
    assert package_filename(info()) == "zlib-1.3.2_2.x86_64-musl.xbps"
    main = out / "zlib-1.3.2_2.x86_64-musl.xbps"
    names = [m.name for m in members(main)]
    assert names[:2] == ["./props.plist", "./files.plist"]
    # Folders are in files.plist only: xbps's unpacker skips folder members.
    # The rest as xbps-create adds them: its walk (a folder's contents before
    # the parent's next name), last walked first.
    assert names[2:] == ["./usr/share/zlib.txt", "./usr/share/zlib/README",
                         "./usr/share/iglupkg/zlib", "./usr/bin/ztool", "./usr/bin/zt",
                         "./etc/z.conf"]
    assert all(m.uid == 0 and m.uname == "root" and m.mtime <= EPOCH for m in members(main))
    props = read_plist_member(main, "props.plist")
    assert props["pkgver"] == "zlib-1.3.2_2" and props["version"] == "1.3.2_2"
    assert props["architecture"] == "x86_64-musl" and props["short_desc"] == "compression"
    assert props["run_depends"] == ["musl>=0"] and props["conf_files"] == ["/etc/z.conf"]
    assert props["license"] == "Zlib" and props["homepage"] == "https://zlib.net"
    files = read_plist_member(main, "files.plist")
    assert [f["file"] for f in files["conf_files"]] == ["/etc/z.conf"]
    # In xbps-create's order: a folder's entries before the next name of its parent.
    assert [f["file"] for f in files["files"]] == [
        "/usr/bin/ztool", "/usr/share/iglupkg/zlib", "/usr/share/zlib/README",
        "/usr/share/zlib.txt"]
    tool = next(f for f in files["files"] if f["file"] == "/usr/bin/ztool")
    assert tool["sha256"] == hashlib.sha256(b"#!/bin/sh\necho z\n").hexdigest()
    assert tool["size"] == len(b"#!/bin/sh\necho z\n")
    assert files["links"] == [{"file": "/usr/bin/zt", "target": "/usr/bin/ztool", "mtime": EPOCH}]
    assert {"file": "/var/empty"} in files["dirs"]
    dev = read_plist_member(out / "zlib-dev-1.3.2_2.x86_64-musl.xbps", "props.plist")
    # A sub-package needs its own build of the base package.
    assert dev["run_depends"] == ["zlib>=1.3.2_2"] and "conf_files" not in dev


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    a, b = packed(tmp_path, "a"), packed(tmp_path, "b")
    c = packed(tmp_path, "c", epoch=EPOCH + 1)
    name = "zlib-1.3.2_2.x86_64-musl.xbps"
    assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / name).read_bytes() != (c / name).read_bytes()
    write_repository(a, epoch=EPOCH)
    write_repository(b, epoch=EPOCH)
    assert (a / "x86_64-musl-repodata").read_bytes() == (b / "x86_64-musl-repodata").read_bytes()


def test_artifact_without_twin_gets_one(tmp_path: Path) -> None:
    """Artifacts packed before .xbps files existed get their twin at the next repository
    write: the same bytes pack() would have written, the artifact's mtime."""
    out = packed(tmp_path)
    twins = sorted(out.glob("*.xbps"))
    originals = {p.name: p.read_bytes() for p in twins}
    for p in twins:
        p.unlink()
    old = 1_600_000_000_000_000_000
    os.utime(out / "zlib-1.3-2-r2.x86_64.tar.zst", ns=(old, old))
    write_repository(out)
    assert {p.name: p.read_bytes() for p in out.glob("*.xbps")} == originals
    assert (out / "zlib-1.3.2_2.x86_64-musl.xbps").stat().st_mtime_ns == old
    assert sorted(read_repodata(out)) == ["zlib", "zlib-dev"]
    # Sealed after its mtime was set: the seal matches without hashing again.
    from iglubuild.integrity import _read_seal, _stat_key

    for twin in out.glob("*.xbps"):
        seal = _read_seal(twin)
        assert seal is not None and seal["stat"] == _stat_key(twin.stat())
        assert seal["sum"] == hashlib.sha256(twin.read_bytes()).hexdigest()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_shlibs_from_elf(tmp_path: Path) -> None:
    """SONAME and NEEDED of real ELF files (the host's clang makes them; glibc is fine here)."""
    if shutil.which("clang") is None:
        pytest.skip("clang missing")
    src = tmp_path / "src"
    src.mkdir()
    (src / "l.c").write_text("int l(void) { return 1; }\n")
    (src / "m.c").write_text("int l(void);\nint main(void) { return l(); }\n")
    root = tmp_path / "pkg"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    subprocess.run(["clang", "-shared", "-fPIC", "-Wl,-soname,libl.so.1", "-o",
                    root / "usr/lib/libl.so.1", src / "l.c"], check=True)
    subprocess.run(["clang", "-o", root / "usr/bin/m", src / "m.c", root / "usr/lib/libl.so.1"],
                   check=True)
    pack_all(root, info(name="l", version="1", deps=(), backup=()), {"m": ["usr/bin"]},
             tmp_path / "out", epoch=EPOCH)
    lib = read_plist_member(tmp_path / "out/l-1_2.x86_64-musl.xbps", "props.plist")
    prog = read_plist_member(tmp_path / "out/l-m-1_2.x86_64-musl.xbps", "props.plist")
    assert lib["shlib-provides"] == ["libl.so.1"] and lib["shlib-requires"] == ["libc.so.6"]
    assert prog["shlib-requires"] == ["libc.so.6", "libl.so.1"]
    assert "shlib-provides" not in prog
    # The twin made from the .tar.zst finds the same shlibs (same bytes).
    made = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.xbps")}
    for name in made:
        (tmp_path / "out" / name).unlink()
    write_repository(tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.xbps")} == made


# ---------------------------------------------------------------- fast: against xbps-rindex


def test_our_index_is_what_xbps_rindex_writes(xbps: XbpsTools, tmp_path: Path) -> None:
    out = packed(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    for p in out.glob("*.xbps"):
        shutil.copy2(p, theirs)
    proc = xbps.run("xbps-rindex", "-a", *sorted(theirs.glob("*.xbps")))
    assert "index: 2 packages registered." in proc.stdout, proc.stdout + proc.stderr
    write_repository(out, epoch=EPOCH)
    ours = repodata_members(out / "x86_64-musl-repodata")
    real = repodata_members(theirs / "x86_64-musl-repodata")
    assert list(ours) == list(real) == ["index.plist", "index-meta.plist"]
    assert ours["index-meta.plist"] == real["index-meta.plist"] == UNSIGNED_META
    assert plistlib.loads(ours["index.plist"]) == plistlib.loads(real["index.plist"])
    # And xbps reads ours: the query answers from our repodata.
    q = xbps.run("xbps-query", f"--repository={out}", "-R", "-S", "zlib-dev")
    assert "pkgver: zlib-dev-1.3.2_2" in q.stdout and "run_depends:\n\tzlib>=1.3.2_2" in q.stdout


def remade_by_xbps_create(xbps: XbpsTools, ours: Path, work: Path) -> Path:
    """The real xbps-create's package from our package's files and properties."""
    props = read_plist_member(ours, "props.plist")
    files = read_plist_member(ours, "files.plist")
    dest = work / "dest"
    with ours.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
        with tarfile.open(fileobj=zr, mode="r|") as tar:
            tar.extractall(dest, filter="tar")
    for name in ("props.plist", "files.plist"):
        (dest / name).unlink()
    for d in files.get("dirs", []):
        (dest / d["file"].lstrip("/")).mkdir(parents=True, exist_ok=True)
    for link in files.get("links", []):
        os.utime(dest / link["file"].lstrip("/"), (EPOCH, EPOCH), follow_symlinks=False)
    made = work / "made"
    made.mkdir()
    argv = [str(xbps.bin("xbps-create")), "-q", "-A", props["architecture"],
            "-n", props["pkgver"], "-s", props["short_desc"], "-l", props["license"],
            "-H", props["homepage"], "-D", " ".join(props["run_depends"])]
    if "conf_files" in props:
        argv += ["-F", " ".join(props["conf_files"])]
    subprocess.run([*argv, dest], cwd=made, check=True, env={"PATH": "/usr/bin:/bin"})
    theirs = made / ours.name
    assert theirs.is_file()
    return theirs


def test_our_plists_are_what_xbps_create_writes(xbps: XbpsTools, tmp_path: Path) -> None:
    """The real xbps-create, given our package's files and the same options, agrees."""
    ours = packed(tmp_path) / "zlib-1.3.2_2.x86_64-musl.xbps"
    theirs = remade_by_xbps_create(xbps, ours, tmp_path)
    props = read_plist_member(ours, "props.plist")
    assert {k: v for k, v in props.items() if k != "packaged-with"} == \
        read_plist_member(theirs, "props.plist")
    assert read_plist_member(ours, "files.plist") == read_plist_member(theirs, "files.plist")
    # The members too, in xbps-create's order (the last walked first).
    assert [m.name for m in members(ours)] == [m.name for m in members(theirs)]


def test_dotdot_links_are_what_xbps_create_resolves(xbps: XbpsTools, tmp_path: Path) -> None:
    """A `../` link's target is realpath() inside the package, as xbps-create has it."""
    root = tmp_path / "pkg"
    for rel in ("bin/busybox", "usr/share/terminfo/a/adm", "usr/bin/clang-14"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    links = {
        "sbin/acpid": "../bin/busybox",                 # Iglunix's busybox applets
        "usr/lib/terminfo": "../share/terminfo",        # a folder
        "usr/share/terminfo/1/x": "../a/adm",           # ncurses' terminfo aliases
        "usr/bin/cc": "./clang",                        # a chain: the last link's file
        "usr/bin/clang": "clang-14",
        "usr/lib/t2": "../lib/terminfo/1/x",            # through a link to a folder
        "usr/lib/libgone.so": "../../lib/libgone.so.1",  # another package's file
        "usr/lib/loop": "./loop",                       # realpath() fails: as written
    }
    for rel, target in links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)
    pack_all(root, info(backup=()), {}, tmp_path / "out", epoch=EPOCH)
    ours = tmp_path / "out" / "zlib-1.3.2_2.x86_64-musl.xbps"
    theirs = remade_by_xbps_create(xbps, ours, tmp_path)
    mine = {e["file"]: e["target"] for e in read_plist_member(ours, "files.plist")["links"]}
    assert mine == {e["file"]: e["target"]
                    for e in read_plist_member(theirs, "files.plist")["links"]}
    assert mine["/sbin/acpid"] == "/bin/busybox" and mine["/usr/bin/cc"] == "/usr/bin/clang-14"
    assert mine["/usr/lib/t2"] == "/usr/share/terminfo/a/adm"
    assert mine["/usr/lib/libgone.so"] == "../../lib/libgone.so.1"


def test_repository_updates_and_drops_stale_entries(xbps: XbpsTools, tmp_path: Path) -> None:
    out = packed(tmp_path)
    write_repository(out)
    assert sorted(read_repodata(out)) == ["zlib", "zlib-dev"]
    for gone in out.glob("zlib-dev-*"):  # the package is gone: artifact and .xbps
        gone.unlink()
    pack_all(tmp_path / "pkg", info(release=3), {}, out, epoch=EPOCH)
    os.utime(out / "zlib-1.3.2_3.x86_64-musl.xbps", ns=(2**62, 2**62))  # clearly the newest
    write_repository(out)
    index = read_repodata(out)
    assert sorted(index) == ["zlib"] and index["zlib"]["pkgver"] == "zlib-1.3.2_3"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries
    q = xbps.run("xbps-query", f"--repository={out}", "-R", "-s", "zlib")
    assert "zlib-1.3.2_3" in q.stdout and "zlib-dev" not in q.stdout


# ---------------------------------------------------------------- fast: keys and signing


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from iglubuild.commands.keygen import make_key

    # 2048 bits: the same kind as the 4096-bit default, made in a fraction of the time.
    return make_key(tmp_path_factory.mktemp("key") / "keys" / "test.pem", bits=2048)


def test_keygen_command(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("keygen", "--bits", "2048")
    assert r.code == 0, r.err
    key = tmp_path / "build/keys/xbps-signing.pem"
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    pub = parse_public_key((tmp_path / "build/keys/xbps-signing.pem.pub").read_bytes())
    assert pub.bits == 2048 and pub.fingerprint in r.out
    again = cli("keygen")
    assert again.code != 0 and "already exists" in again.err and "Traceback" not in again.err
    assert len(again.err.strip().splitlines()) <= 2


def test_signatures_are_what_xbps_rindex_writes(xbps: XbpsTools, tmp_path: Path,
                                                signing_key: Path) -> None:
    out = packed(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    for p in out.glob("*.xbps"):
        shutil.copy2(p, theirs)
    pkgs = sorted(theirs.glob("*.xbps"))
    xbps.run("xbps-rindex", "-a", *pkgs)
    xbps.run("xbps-rindex", "--sign", "--signedby", "iglubuild", "--privkey", signing_key,
             theirs)
    xbps.run("xbps-rindex", "--sign-pkg", "--privkey", signing_key, *pkgs)
    write_repository(out, signing_key=signing_key)
    for p in pkgs:
        # PKCS#1 v1.5 signatures are deterministic: the bytes must be the same.
        assert (out / f"{p.name}.sig2").read_bytes() == Path(f"{p}.sig2").read_bytes()
    ours = repodata_members(out / "x86_64-musl-repodata")
    real = repodata_members(theirs / "x86_64-musl-repodata")
    assert plistlib.loads(ours["index-meta.plist"]) == plistlib.loads(real["index-meta.plist"])
    assert plistlib.loads(ours["index.plist"]) == plistlib.loads(real["index.plist"])
    # The private key is nowhere in what is published.
    secret = b"".join(signing_key.read_bytes().splitlines()[1:3])
    for p in out.iterdir():
        blob = p.read_bytes()
        if p.suffix in (".xbps", ".zst") or p.name.endswith("repodata"):
            with zstandard.ZstdDecompressor().stream_reader(p.open("rb")) as zr:
                blob += zr.read()
        assert secret not in blob.replace(b"\n", b""), p
    # A second write with the same key keeps the signatures (no openssl run);
    # a rebuilt package is signed again.
    sig = out / f"{pkgs[0].name}.sig2"
    before = sig.stat()
    write_repository(out, signing_key=signing_key)
    assert sig.stat().st_ino == before.st_ino  # not rewritten (rewrites are renames)
    later = before.st_mtime_ns + 10**9
    os.utime(out / pkgs[0].name, ns=(later, later))
    write_repository(out, signing_key=signing_key)
    assert sig.stat().st_ino != before.st_ino
    assert sig.read_bytes() == Path(f"{pkgs[0]}.sig2").read_bytes()
    # A package removed from the folder (artifact and .xbps) takes its signature with it.
    assert pkgs[0].name.startswith("zlib-1.3")
    (out / pkgs[0].name).unlink()
    (out / "zlib-1.3-2-r2.x86_64.tar.zst").unlink()
    write_repository(out, signing_key=signing_key)
    assert not (out / f"{pkgs[0].name}.sig2").exists()


def test_missing_signing_key_is_one_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "recipes").mkdir()
    r = cli("--signing-key", str(tmp_path / "nope.pem"), "world")
    assert r.code != 0 and "does not exist" in r.err and "keygen" in r.err
    assert "Traceback" not in r.err


def test_fingerprint_matches_ssh_keygen(tmp_path: Path, signing_key: Path) -> None:
    """xbps names trusted keys by the OpenSSH MD5 fingerprint; ssh-keygen computes it too."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen missing")
    key = public_key(signing_key)
    pub = tmp_path / "k.pub"
    pub.write_bytes(key.pem)
    proc = subprocess.run(["ssh-keygen", "-E", "md5", "-l", "-f", pub, "-m", "PKCS8"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        proc = subprocess.run(["ssh-keygen", "-i", "-m", "PKCS8", "-f", pub],
                              capture_output=True, text=True, check=True)
        (tmp_path / "k.ssh").write_text(proc.stdout)
        proc = subprocess.run(["ssh-keygen", "-E", "md5", "-l", "-f", tmp_path / "k.ssh"],
                              capture_output=True, text=True, check=True)
    assert f"MD5:{key.fingerprint}" in proc.stdout


# ---------------------------------------------------------------- HTTP, for signed repositories


@pytest.fixture
def serve() -> Iterator[functools.partial[str]]:
    """Serve folders over HTTP on 127.0.0.1; yields a function folder -> URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    def start(folder: Path) -> str:
        handler = functools.partial(Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield functools.partial(start)
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_signed_remote_repository(xbps: XbpsTools, tmp_path: Path, signing_key: Path,
                                  serve: functools.partial[str]) -> None:
    """Over HTTP xbps checks the .sig2 of each package against a trusted key."""
    out = packed(tmp_path, deps=())
    write_repository(out, signing_key=signing_key)
    url = serve(out)
    # Not trusted yet: xbps-install would ask, and with no one to answer refuses.
    untrusted = tmp_path / "untrusted"
    proc = xbps.run("xbps-install", "-r", untrusted, f"--repository={url}", "-Sy", "zlib",
                    check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Do you want to import this public key" in said
    # xbps's own fingerprint of the key is the one we name the trusted key file by.
    assert f"Fingerprint: {public_key(signing_key).fingerprint}\n" in said
    assert not (untrusted / "usr/bin/ztool").exists()
    root = tmp_path / "root"
    trust_key(root, public_key(signing_key))
    proc = xbps.run("xbps-install", "-r", root, f"--repository={url}", "-Sy", "zlib",
                    check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verifying RSA signature" in proc.stdout
    assert (root / "usr/bin/ztool").read_bytes() == b"#!/bin/sh\necho z\n"
    # One flipped byte in a package: the signature no longer matches.
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    victim = bad / "zlib-dev-1.3.2_2.x86_64-musl.xbps"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    url_bad = serve(bad)
    proc = xbps.run("xbps-install", "-r", root, f"--repository={url_bad}", "-Sy", "zlib-dev",
                    check=False)
    assert proc.returncode != 0, proc.stdout
    assert "signature" in (proc.stdout + proc.stderr).lower()
    assert not (root / "usr/include/zlib.h").exists()


def test_epoch_default_is_source_date_epoch() -> None:
    assert source_date_epoch(5) == 5


def test_image_root_has_xbps_database(xbps: XbpsTools, tmp_path: Path) -> None:
    """The image stage fills a root from the artifacts and writes xbps's own database."""
    from iglubuild.image import find_artifacts, populate_root, runtime_closure

    out = packed(tmp_path, version="1.3", deps=())
    arts = find_artifacts(out)
    root = tmp_path / "root"
    populate_root(runtime_closure(["zlib-dev"], arts), root)
    listed = xbps.run("xbps-query", "-r", root, "-l").stdout
    assert [line.split()[1] for line in listed.splitlines()] == ["zlib-1.3_2", "zlib-dev-1.3_2"]
    check = xbps.run("xbps-pkgdb", "-r", root, "-a", check=False)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check
    owned = xbps.run("xbps-query", "-r", root, "-o", "/usr/bin/ztool").stdout
    assert owned.startswith("zlib-1.3_2: /usr/bin/ztool")
    # A file changed behind xbps's back is noticed: the database is really checked.
    (root / "usr/bin/ztool").write_text("tampered\n")
    assert xbps.run("xbps-pkgdb", "-r", root, "-a", check=False).returncode != 0


def test_image_with_repo_installs_more_from_it(xbps: XbpsTools, tmp_path: Path,
                                              signing_key: Path) -> None:
    """`image --with-repo`: the repository on the image, named in /etc/xbps.d, key trusted;
    xbps-install takes a package from it and the already installed base satisfies its deps."""
    from iglubuild.image import (
        REPO_DIR,
        add_repository,
        find_artifacts,
        populate_root,
        runtime_closure,
    )

    out = packed(tmp_path, version="1.3", deps=())
    write_repository(out, signing_key=signing_key)
    root = tmp_path / "root"
    tree = populate_root(runtime_closure(["zlib"], find_artifacts(out)), root)
    assert add_repository(tree, out) == 2
    assert (root / "etc/xbps.d/00-iglunix.conf").read_text().endswith(
        f"repository=/{REPO_DIR}\n")
    key = public_key(signing_key)
    assert (root / f"var/db/xbps/keys/{key.fingerprint}.plist").is_file()
    secret = signing_key.read_text().splitlines()[1]
    assert not any(secret in p.read_text(errors="replace")
                   for p in root.rglob("*") if p.is_file())
    proc = xbps.run("xbps-install", "-r", root, f"--repository={root / REPO_DIR}", "-y",
                    "zlib-dev", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 installed" in proc.stdout  # zlib was already there, from the image's database
    listed = xbps.run("xbps-query", "-r", root, "-l").stdout
    assert [line.split()[1] for line in listed.splitlines()] == ["zlib-1.3_2", "zlib-dev-1.3_2"]
    assert (root / "usr/include/zlib.h").is_file()
    assert xbps.run("xbps-pkgdb", "-r", root, "-a", check=False).returncode == 0


def test_pkg_command_writes_a_signed_repository(xbps: XbpsTools, cli,  # type: ignore[no-untyped-def]
                                               tmp_path: Path, signing_key: Path) -> None:
    """`iglubuild pkg` with a signing key: .xbps, .sig2 and signed repodata; status reads it."""
    import json

    from tests.engine_support import write_recipe as write_engine_recipe

    recipes = tmp_path / "recipes"
    # Shell-only stand-ins: the C library is an implicit dep of every recipe.
    write_engine_recipe(recipes, "musl", """
        name: musl
        version: 1.2.3
        package: |
          mkdir -p "$pkgdir/usr/include"
          echo '/* stand-in */' > "$pkgdir/usr/include/stdio.h"
        subpackages:
          dev: [usr/include]
        """)
    write_engine_recipe(recipes, "foo", """
        name: foo
        version: "1.0"
        description: a shell-only package
        package: |
          mkdir -p "$pkgdir/usr/share/foo"
          echo hi > "$pkgdir/usr/share/foo/hi"
        """)
    opts = ("--recipes", str(recipes), "--signing-key", str(signing_key))
    r = cli(*opts, "pkg", "foo")
    assert r.code == 0, r.err
    packages = tmp_path / "build/packages/x86_64"
    assert sorted(p.name for p in packages.glob("*.sig2")) == [
        "foo-1.0_1.x86_64-musl.xbps.sig2", "musl-1.2.3_1.x86_64-musl.xbps.sig2",
        "musl-dev-1.2.3_1.x86_64-musl.xbps.sig2"]
    meta = read_plist_member(packages / "x86_64-musl-repodata", "index-meta.plist")
    assert meta["public-key"] == public_key(signing_key).pem and meta["signature-type"] == "rsa"
    assert sorted(read_repodata(packages)) == ["foo", "musl", "musl-dev"]
    # The private key went into no log.
    secret = signing_key.read_text().splitlines()[1]
    for log in (tmp_path / "build").rglob("*.log"):
        assert secret not in log.read_text(errors="replace"), log
    st = cli("--recipes", str(recipes), "status", "foo", "--json")
    assert st.code == 0, st.err
    assert json.loads(st.out)[0]["repository"] == "foo-1.0_1"
    assert "xbps repository: 3 package(s)" in cli("--recipes", str(recipes), "status").err
    # And the real xbps reads it.
    q = xbps.run("xbps-query", f"--repository={packages}", "-R", "-S", "foo")
    assert "pkgver: foo-1.0_1" in q.stdout and "short_desc: a shell-only package" in q.stdout


def test_unreadable_signing_key_is_one_line(tmp_path: Path) -> None:
    from iglubuild.xbps import XbpsError

    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot really\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(XbpsError, match="not a readable private key") as exc:
        public_key(bad)
    assert "not really" not in str(exc.value)


# ---------------------------------------------------------------- slow: real C packages


LIBGREET = """
    name: libgreet
    version: "1.0"
    description: says hello
    license: MIT
    homepage: https://example.org/greet
    sources:
      - url: TARBALL_URL
    build: |
      $CC $CFLAGS -fPIC -c greet.c -o greet.o
      $CC $LDFLAGS -shared -Wl,-soname,libgreet.so.1 -o libgreet.so.1 greet.o
    package: |
      install -D -m755 libgreet.so.1 "$pkgdir/usr/lib/libgreet.so.1"
      ln -s libgreet.so.1 "$pkgdir/usr/lib/libgreet.so"
      install -D -m644 greet.h "$pkgdir/usr/include/greet.h"
    subpackages:
      dev: [usr/include, usr/lib/libgreet.so]
    """
LIBGREET_FILES = {
    "greet.h": "void greet(const char *who);\n",
    "greet.c": ('#include <stdio.h>\n#include "greet.h"\n'
                'void greet(const char *who) { printf("hello, %s, from libgreet\\n", who); }\n'),
}
GREETER = """
    name: greeter
    version: "1.0"
    release: RELEASE
    description: greets the world
    license: MIT
    deps: [libgreet]
    makedeps: [libgreet-dev]
    backup: [etc/greeter.conf]
    sources:
      - url: TARBALL_URL
    build: |
      $CC $CFLAGS -o greeter main.c $LDFLAGS -lgreet
    package: |
      install -D -m755 greeter "$pkgdir/usr/bin/greeter"
      install -D -m644 greeter.conf "$pkgdir/etc/greeter.conf"
      ln -s greeter "$pkgdir/usr/bin/hi"
    """
GREETER_FILES = {
    "main.c": '#include <greet.h>\nint main(void) { greet("world"); return 0; }\n',
    "greeter.conf": "loud=no\n",
}


@pytest.fixture(scope="session")
def musl_xbps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """musl 1.2.3 built once per session (its .tar.zst artifacts and its .xbps files)."""
    from iglubuild.build import BuildJob, build_package
    from iglubuild.executors.host import HostExecutor
    from iglubuild.recipe import load_tree
    from iglubuild.settings import Settings
    from tests.engine_support import MUSL_TARBALL, SHARED_DISTFILES, musl_recipe_text

    if not MUSL_TARBALL.is_file():
        pytest.skip(f"{MUSL_TARBALL} not present")
    executor = HostExecutor()
    executor.check()
    base = tmp_path_factory.mktemp("musl-xbps")
    recipes = base / "recipes"
    (recipes / "base" / "musl").mkdir(parents=True)
    (recipes / "base" / "musl" / "recipe.yaml").write_text(musl_recipe_text())
    settings = Settings(recipes=recipes, build_dir=base / "build", distfiles=SHARED_DISTFILES)
    arts = build_package(BuildJob(load_tree(recipes).recipes["musl"], settings, executor, [],
                                  "musl", epoch=EPOCH))
    return [*arts, *sorted(settings.packages_dir().glob("*.xbps"))]


class CRepo:
    """libgreet (+ -dev) and greeter built by iglubuild with musl, in one packages folder."""

    def __init__(self, base: Path, musl: list[Path]) -> None:
        from iglubuild.executors.host import HostExecutor
        from iglubuild.settings import Settings
        from tests.engine_support import SHARED_DISTFILES

        self.recipes = base / "recipes"
        self.settings = Settings(recipes=self.recipes, build_dir=base / "build",
                                 distfiles=SHARED_DISTFILES, jobs=2)
        self.executor = HostExecutor()
        self.musl = musl
        self.packages = self.settings.packages_dir()
        self.packages.mkdir(parents=True)
        for p in musl:
            if p.suffix == ".xbps":
                shutil.copy2(p, self.packages)
        from tests.engine_support import write_recipe

        write_recipe(self.recipes, "libgreet", LIBGREET, LIBGREET_FILES)
        self.greet = self.build("libgreet", [musl[0], musl[1]])
        self.greeter(1)

    def build(self, name: str, deps: list[Path]) -> list[Path]:
        from iglubuild.build import BuildJob, build_package
        from iglubuild.recipe import load_tree

        lr = load_tree(self.recipes).recipes[name]
        return build_package(BuildJob(lr, self.settings, self.executor, deps, f"{name}-sig",
                                      epoch=EPOCH))

    def greeter(self, release: int) -> list[Path]:
        from tests.engine_support import write_recipe

        write_recipe(self.recipes, "greeter", GREETER.replace("RELEASE", str(release)),
                     GREETER_FILES)
        built = self.build("greeter", [self.musl[0], self.musl[1], *self.greet])
        write_repository(self.packages)
        return built


@pytest.fixture(scope="module")
def c_repo(tmp_path_factory: pytest.TempPathFactory, musl_xbps: list[Path]) -> CRepo:
    return CRepo(tmp_path_factory.mktemp("c-repo"), musl_xbps)


@pytest.mark.slow
def test_c_packages_carry_shlibs_and_deps(c_repo: CRepo) -> None:
    def props_of(name: str) -> dict[str, object]:
        (pkg,) = c_repo.packages.glob(f"{name}-[0-9]*.xbps")
        return dict(read_plist_member(pkg, "props.plist"))

    lib, prog, musl = props_of("libgreet"), props_of("greeter"), props_of("musl")
    assert lib["shlib-provides"] == ["libgreet.so.1"] and lib["shlib-requires"] == ["libc.so"]
    assert prog["shlib-requires"] == ["libc.so", "libgreet.so.1"]
    # musl is implied for every recipe, but xbps must be told: it comes from libc.so.
    assert prog["run_depends"] == ["libgreet>=0", "musl>=0"]
    assert lib["run_depends"] == ["musl>=0"] and "run_depends" not in musl
    assert prog["conf_files"] == ["/etc/greeter.conf"]
    assert "libc.so" in musl["shlib-provides"]  # type: ignore[operator]
    assert props_of("libgreet-dev")["run_depends"] == ["libgreet>=1.0_1"]


@pytest.mark.slow
def test_real_xbps_installs_upgrades_and_removes(xbps: XbpsTools, c_repo: CRepo,
                                                 tmp_path: Path) -> None:
    # xbps-rindex itself accepts every package, with consistent shlibs.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    for p in c_repo.packages.glob("*.xbps"):
        shutil.copy2(p, theirs)
    proc = xbps.run("xbps-rindex", "-a", *sorted(theirs.glob("*.xbps")))
    assert "Inconsistent shlibs" not in proc.stdout and "packages registered" in proc.stdout
    assert sorted(read_repodata(c_repo.packages)) == sorted(
        plistlib.loads(repodata_members(theirs / "x86_64-musl-repodata")["index.plist"]))

    root = tmp_path / "root"
    repo = f"--repository={c_repo.packages}"
    proc = xbps.run("xbps-install", "-r", root, repo, "-y", "greeter", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = xbps.run("xbps-query", "-r", root, "-l").stdout
    assert sorted(line.split()[1] for line in listed.splitlines()) == [
        "greeter-1.0_1", "libgreet-1.0_1", "musl-1.2.3_1"]
    check = xbps.run("xbps-pkgdb", "-r", root, "-a", check=False)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check
    ran = subprocess.run(["chroot", root, "/usr/bin/hi"], capture_output=True, text=True,
                         check=False)
    assert ran.stdout == "hello, world, from libgreet\n", ran.stderr

    # A release bump, rebuilt by iglubuild: xbps-install -u takes it.
    (root / "etc/greeter.conf").write_text("loud=yes\n")  # an edited conf file is kept
    c_repo.greeter(2)
    proc = xbps.run("xbps-install", "-r", root, repo, "-uy", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "greeter-1.0_2" in xbps.run("xbps-query", "-r", root, "-l").stdout
    assert (root / "etc/greeter.conf").read_text() == "loud=yes\n"
    assert xbps.run("xbps-pkgdb", "-r", root, "-a", check=False).returncode == 0

    # Removing it and what it pulled in leaves nothing but xbps's own database.
    (root / "etc/greeter.conf").write_text("loud=no\n")  # unchanged conf files go too
    proc = xbps.run("xbps-remove", "-r", root, "-Ry", "greeter", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert xbps.run("xbps-query", "-r", root, "-l").stdout == ""
    assert rel_files(root, ignore=("var/db/xbps", "var/cache/xbps")) == []


def test_image_with_repo_but_no_repository_is_one_line(tmp_path: Path) -> None:
    from iglubuild.errors import UsageError
    from iglubuild.image import add_repository
    from iglubuild.package import RootTree

    with pytest.raises(UsageError, match="no xbps repository") as exc:
        add_repository(RootTree(tmp_path / "root"), tmp_path)
    assert "iglubuild world" in (exc.value.hint or "")
