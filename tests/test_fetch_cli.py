"""`iglubuild fetch` and `iglubuild checksum` on real recipe trees and a loopback server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.conftest import write_recipe
from tests.fault_server import FaultServer
from tests.test_fetch import DISTFILES


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server() -> FaultServer:
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def tarballs(server: FaultServer) -> dict[str, bytes]:
    """Two real upstream tarballs served over HTTP."""
    files = {}
    for name in ("lua-5.4.4.tar.gz", "opendoas-6.8.2.tar.xz"):
        data = (DISTFILES / name).read_bytes()
        server.add(f"/dl/{name}", data)
        files[name] = data
    return files


def args(recipes: Path, tmp_path: Path, *rest: str) -> list[str]:
    return ["--recipes", str(recipes), "--distfiles", str(tmp_path / "distfiles"), *rest]


def test_fetch_closure_then_reuse(cli, recipes, tmp_path, server, tarballs):
    lua = tarballs["lua-5.4.4.tar.gz"]
    doas = tarballs["opendoas-6.8.2.tar.xz"]
    write_recipe(recipes, "lua", f"""
        name: lua
        version: 5.4.4
        sources:
          - url: {server.base}/dl/lua-{{version}}.tar.gz
            sha256: {sha256(lua)}
        """)
    write_recipe(recipes, "opendoas", f"""
        name: opendoas
        version: 6.8.2
        makedeps: [lua]
        sources:
          - url: {server.base}/dl/opendoas-{{version}}.tar.xz
            sha256: {sha256(doas)}
          - file: doas.conf
        """)
    (recipes / "base" / "opendoas" / "doas.conf").write_text("permit :wheel\n")
    r = cli("fetch", *args(recipes, tmp_path, "lua"))
    assert r.code == 0, r.err
    assert "downloaded 1" in r.err and "failed 0" in r.err
    r = cli("fetch", *args(recipes, tmp_path, "--list", "opendoas"))
    assert r.code == 0, r.err
    assert "downloaded 1" in r.err and "reused 1" in r.err
    assert "reused\tlua\tlua-5.4.4.tar.gz" in r.out
    cache = tmp_path / "distfiles"
    assert (cache / "by-sha256" / sha256(doas)).read_bytes() == doas
    assert (cache / "lua-5.4.4.tar.gz").resolve() == (cache / "by-sha256" / sha256(lua))
    assert len(server.requests) == 2
    r = cli("fetch", *args(recipes, tmp_path, "--offline"))
    assert r.code == 0 and "reused 2" in r.err


def test_fetch_mismatch_exit_3(cli, recipes, tmp_path, server, tarballs):
    wrong = sha256(b"not lua")
    write_recipe(recipes, "lua", f"""
        name: lua
        version: 5.4.4
        sources:
          - url: {server.base}/dl/lua-{{version}}.tar.gz
            sha256: {wrong}
        """)
    r = cli("fetch", *args(recipes, tmp_path))
    assert r.code == 3
    assert r.err.count("error:") == 1 and "Traceback" not in r.err
    assert f"expected sha256 {wrong}" in r.err
    assert sha256(tarballs["lua-5.4.4.tar.gz"]) in r.err
    assert f"{server.base}/dl/lua-5.4.4.tar.gz" in r.err
    assert not (tmp_path / "distfiles" / "by-sha256").exists() or \
        not any((tmp_path / "distfiles" / "by-sha256").iterdir())


def test_fetch_unverified_and_offline_messages(cli, recipes, tmp_path, server, tarballs):
    write_recipe(recipes, "lua", f"""
        name: lua
        version: 5.4.4
        sources:
          - url: {server.base}/dl/lua-{{version}}.tar.gz
            unverified: upstream publishes no checksum
        """)
    r = cli("fetch", *args(recipes, tmp_path))
    assert r.code == 3
    assert "unverified (upstream publishes no checksum)" in r.err
    assert "hint: run `iglubuild checksum lua`" in r.err
    assert server.requests == []
    write_recipe(recipes, "lua", f"""
        name: lua
        version: 5.4.4
        sources:
          - url: {server.base}/dl/lua-{{version}}.tar.gz
            sha256: {sha256(tarballs["lua-5.4.4.tar.gz"])}
        """)
    r = cli("fetch", *args(recipes, tmp_path, "--offline"))
    assert r.code == 3 and "--offline is set" in r.err and "lua-5.4.4.tar.gz" in r.err
    assert server.requests == []


COMMENTED = """\
# Lua, for scripts.   (a comment at the top)
name: lua
version: 5.4.4
description: "A powerful, efficient, lightweight, embeddable scripting language, quoted on purpose"
license: MIT

sources:
  # upstream tarball
  - url: {base}/dl/lua-{{version}}.tar.gz
    unverified: new recipe   # set by import
  # a config file beside the recipe
  - file: lua.pc

patches: []                # none yet
build: |
  make linux \\
      MYCFLAGS="$CFLAGS"
package: |
  make INSTALL_TOP="$pkgdir/usr" install
"""


def test_checksum_writes_sum_and_keeps_everything_else(cli, recipes, tmp_path, server,
                                                       tarballs):
    path = write_recipe(recipes, "lua", COMMENTED.format(base=server.base))
    (path.parent / "lua.pc").write_text("Name: lua\n")
    before = path.read_text()
    r = cli("checksum", *args(recipes, tmp_path, "lua"))
    assert r.code == 0, r.err
    after = path.read_text()
    digest = sha256(tarballs["lua-5.4.4.tar.gz"])
    expected = before.replace("    unverified: new recipe   # set by import\n",
                              f"    sha256: {digest}\n")
    assert after == expected
    # The file is now in the cache: fetch reuses it without a request.
    n = len(server.requests)
    r = cli("fetch", *args(recipes, tmp_path))
    assert r.code == 0 and "reused 1" in r.err
    assert len(server.requests) == n


def test_checksum_verifies_without_update(cli, recipes, tmp_path, server, tarballs):
    digest = sha256(tarballs["lua-5.4.4.tar.gz"])
    text = COMMENTED.format(base=server.base).replace(
        "    unverified: new recipe   # set by import\n", f"    sha256: {digest}  # checked\n")
    path = write_recipe(recipes, "lua", text)
    (path.parent / "lua.pc").write_text("Name: lua\n")
    r = cli("checksum", *args(recipes, tmp_path, "lua"))
    assert r.code == 0 and "verified" in r.err
    assert path.read_text() == text
    # Upstream changes the file: without --update it is an error and nothing changes.
    server.files["/dl/lua-5.4.4.tar.gz"] = b"changed upstream"
    r = cli("checksum", *args(recipes, tmp_path, "lua"))
    assert r.code == 3 and "checksum mismatch" in r.err and "--update" in r.err
    assert path.read_text() == text


def test_checksum_update_shows_old_and_new_and_keeps_comments(cli, recipes, tmp_path, server):
    old = "ab" * 32
    text = COMMENTED.format(base=server.base).replace(
        "    unverified: new recipe   # set by import\n", f"    sha256: {old}  # checked\n")
    path = write_recipe(recipes, "lua", text)
    (path.parent / "lua.pc").write_text("Name: lua\n")
    server.files["/dl/lua-5.4.4.tar.gz"] = b"new release"
    new = sha256(b"new release")
    r = cli("checksum", *args(recipes, tmp_path, "--update", "lua"))
    assert r.code == 0, r.err
    assert f"old {old}" in r.err and f"new {new}" in r.err
    assert path.read_text() == text.replace(old, new)


def test_checksum_adds_missing_sum_in_four_space_style(cli, recipes, tmp_path, server,
                                                       tarballs):
    text = (f"name: lua\nversion: 5.4.4\nsources:\n"
            f"    -   url: {server.base}/dl/lua-{{version}}.tar.gz\n"
            f"    # the next source is local\n"
            f"    -   file: lua.pc\n"
            f"build: |\n    make\n")
    path = write_recipe(recipes, "lua", text)
    (path.parent / "lua.pc").write_text("Name: lua\n")
    # The recipe does not even load without a checksum; checksum is the fix.
    assert cli("lint", "--recipes", str(recipes)).code == 2
    r = cli("checksum", *args(recipes, tmp_path, "lua"))
    assert r.code == 0, r.err
    digest = sha256(tarballs["lua-5.4.4.tar.gz"])
    assert path.read_text() == text.replace(
        "tar.gz\n", f"tar.gz\n        sha256: {digest}\n", 1)
    assert cli("lint", "--recipes", str(recipes)).code == 0


def test_checksum_sha512_source_and_offline_and_unknown(cli, recipes, tmp_path, server,
                                                        tarballs):
    data = tarballs["opendoas-6.8.2.tar.xz"]
    old512 = hashlib.sha512(b"old").hexdigest()
    text = (f"name: opendoas\nversion: 6.8.2\nsources:\n"
            f"- url: {server.base}/dl/opendoas-{{version}}.tar.xz\n  sha512: {old512}\n")
    path = write_recipe(recipes, "opendoas", text)
    r = cli("checksum", *args(recipes, tmp_path, "--update", "opendoas"))
    assert r.code == 0, r.err
    assert path.read_text() == text.replace(old512, hashlib.sha512(data).hexdigest())
    assert (tmp_path / "distfiles" / "by-sha512" / hashlib.sha512(data).hexdigest()).is_file()
    r = cli("checksum", *args(recipes, tmp_path, "--offline", "opendoas"))
    assert r.code == 2 and "--offline" in r.err
    r = cli("checksum", *args(recipes, tmp_path, "opendoa"))
    assert r.code == 2 and "did you mean opendoas" in r.err


def test_checksum_from_a_file_mirror(cli, recipes, tmp_path, server):
    """Where upstream does not have the file, an offline folder of tarballs serves."""
    path = write_recipe(recipes, "musl", f"""
        name: musl
        version: 1.2.3
        sources:
          - url: {server.base}/releases/musl-{{version}}.tar.gz
            unverified: to be checked
        """)
    r = cli("checksum", *args(recipes, tmp_path, "--mirror", DISTFILES.as_uri(), "musl"))
    assert r.code == 0, r.err
    digest = sha256((DISTFILES / "musl-1.2.3.tar.gz").read_bytes())
    assert f"sha256: {digest}" in path.read_text() and "unverified" not in path.read_text()
    assert os.path.isfile(tmp_path / "distfiles" / "by-sha256" / digest)


def test_checksum_unreachable_source_exit_3(cli, recipes, tmp_path, server):
    path = write_recipe(recipes, "lua", f"""
        name: lua
        version: 5.4.4
        sources:
          - url: {server.base}/nowhere/lua-{{version}}.tar.gz
            unverified: new
        """)
    before = path.read_text()
    r = cli("checksum", *args(recipes, tmp_path, "lua"))
    assert r.code == 3
    assert "HTTP 404" in r.err and "Traceback" not in r.err
    assert path.read_text() == before


def test_checksum_prefers_upstream_over_mirrors(cli, recipes, tmp_path, server, tarballs):
    """A checksum describes upstream's file: the URL goes first, mirrors are a fallback."""
    server.add("/mirror/lua-5.4.4.tar.gz", b"a mirror's stale copy")
    path = write_recipe(recipes, "lua", f"""
        name: lua
        version: 5.4.4
        sources:
          - url: {server.base}/dl/lua-{{version}}.tar.gz
            unverified: new
        """)
    r = cli("checksum", *args(recipes, tmp_path, "--mirror", server.url("/mirror"), "lua"))
    assert r.code == 0, r.err
    assert f"sha256: {sha256(tarballs['lua-5.4.4.tar.gz'])}" in path.read_text()
    assert [p for p, _, _ in server.requests] == ["/dl/lua-5.4.4.tar.gz"]


# (recipe text, the lines checksum replaces or adds): every other byte must survive.
LAYOUTS = {
    "blank-line-and-comment-after-mark": (
        "name: lua\nversion: 5.4.4\nsources:\n  - url: {url}\n    filename: lua.tgz\n"
        "    unverified: new\n\n# end of sources\nbuild: make\n",
        "    unverified: new\n", "    sha256: {sum}\n"),
    "blank-line-before-next-source": (
        "name: lua\nversion: 5.4.4\nsources:\n  - url: {url}\n\n  # local\n  - file: lua.pc\n",
        "  - url: {url}\n", "  - url: {url}\n    sha256: {sum}\n"),
    "comment-on-url-line-and-after": (
        "name: lua\nversion: 5.4.4\nsources:\n  - url: {url}  # upstream\n  # local\n"
        "  - file: lua.pc\n",
        "  # upstream\n", "  # upstream\n    sha256: {sum}\n"),
    "zero-indented-sequence": (
        "name: lua\nversion: 5.4.4\nsources:\n- url: {url}\n  unverified: new  # why\n"
        "- file: lua.pc\ndeps: []\n",
        "  unverified: new  # why\n", "  sha256: {sum}\n"),
    "flow-style-source": (
        "name: lua\nversion: 5.4.4\nsources: [{{url: '{url}'}}]\n",
        "{{url: '{url}'}}", "{{url: '{url}', sha256: {sum}}}"),
}


@pytest.mark.parametrize("case", sorted(LAYOUTS))
def test_checksum_changes_only_the_checksum_line(cli, recipes, tmp_path, server, tarballs,
                                                 case):
    template, old, new = LAYOUTS[case]
    url = f"{server.base}/dl/lua-{{version}}.tar.gz"
    digest = sha256(tarballs["lua-5.4.4.tar.gz"])
    text = template.format(url=url)
    path = recipes / "base" / "lua" / "recipe.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    (path.parent / "lua.pc").write_text("Name: lua\n")
    r = cli("checksum", *args(recipes, tmp_path, "lua"))
    assert r.code == 0, r.err
    assert path.read_text() == text.replace(old.format(url=url),
                                            new.format(url=url, sum=digest), 1)
