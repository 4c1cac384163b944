"""`iglubuild new`: scaffold recipes from real tarballs served over loopback HTTP."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iglubuild.recipe import load_recipe
from iglubuild.scaffold import archive_members, guess_version, pick_template, read_member
from tests.conftest import DISTFILES as SHARED_DISTFILES


def _distfiles() -> Path | None:
    return SHARED_DISTFILES if (SHARED_DISTFILES / "SOURCES.tsv").is_file() else None


DISTFILES = _distfiles()
pytestmark = pytest.mark.skipif(DISTFILES is None, reason="shared distfiles not present")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder of real tarballs."""
    root = tmp_path / "www"
    root.mkdir()
    assert DISTFILES is not None
    for name in ("pkgconf-1.8.1.tar.xz", "lz4-1.9.4.tar.gz", "mksh-R59c.tgz",
                 "libarchive-3.6.2.tar.xz"):
        shutil.copy(DISTFILES / name, root / name)
    # lz4 as upstream names it: a GitHub tag archive called v1.9.4.tar.gz.
    (root / "archive").mkdir()
    shutil.copy(DISTFILES / "lz4-1.9.4.tar.gz", root / "archive" / "v1.9.4.tar.gz")
    handler = lambda *a, **kw: _Quiet(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _args(tmp_path: Path) -> list[str]:
    return ["--recipes", str(tmp_path / "recipes"), "--distfiles", str(tmp_path / "cache")]


def test_new_autotools_over_http(cli, served, tmp_path: Path) -> None:
    base, root = served
    res = cli(*_args(tmp_path), "new", "pkgconf", "--url", f"{base}/pkgconf-1.8.1.tar.xz")
    assert res.code == 0, res.err
    target = tmp_path / "recipes" / "base" / "pkgconf" / "recipe.yaml"
    lr = load_recipe(target)
    assert lr.recipe.version == "1.8.1"
    src = lr.recipe.sources[0]
    assert src.url == f"{base}/pkgconf-1.8.1.tar.xz"  # {version} expanded by the loader
    assert "pkgconf-{version}.tar.xz" in target.read_text()
    assert src.sha256 == _sha(root / "pkgconf-1.8.1.tar.xz")
    assert lr.recipe.build is not None and lr.recipe.build.startswith("./configure")
    assert "autotools template" in res.out
    # The download is kept in the distfiles cache under the source's file name.
    cached = tmp_path / "cache" / "pkgconf-1.8.1.tar.xz"
    assert _sha(cached) == src.sha256
    assert not list((tmp_path / "cache").glob(".*part"))


def test_new_tag_archive_gets_a_filename(cli, served, tmp_path: Path) -> None:
    base, root = served
    res = cli(*_args(tmp_path), "new", "lz4", "--repo", "extra", "--url",
              f"{base}/archive/v1.9.4.tar.gz")
    assert res.code == 0, res.err
    lr = load_recipe(tmp_path / "recipes" / "extra" / "lz4" / "recipe.yaml")
    src = lr.recipe.sources[0]
    assert lr.recipe.version == "1.9.4"
    assert src.filename == "lz4-1.9.4.tar.gz"  # a mirror folder finds the distfiles name
    assert src.sha256 == _sha(root / "lz4-1.9.4.tar.gz")
    assert lr.recipe.build is not None and lr.recipe.build.startswith("make ")
    assert (tmp_path / "cache" / "lz4-1.9.4.tar.gz").is_file()


def test_new_file_url_and_odd_version(cli, tmp_path: Path) -> None:
    assert DISTFILES is not None
    res = cli(*_args(tmp_path), "new", "mksh", "--url", f"file://{DISTFILES}/mksh-R59c.tgz")
    assert res.code == 0, res.err
    target = tmp_path / "recipes" / "base" / "mksh" / "recipe.yaml"
    lr = load_recipe(target)
    assert lr.recipe.version == "R59c"
    assert lr.recipe.sources[0].sha256 == _sha(DISTFILES / "mksh-R59c.tgz")
    # mksh has only Build.sh, MirBSD's build script: its own template.
    assert "sh ./Build.sh" in (lr.recipe.build or "")


def test_new_cmake_project(cli, tmp_path: Path) -> None:
    # A real (small) tarball whose top holds CMakeLists.txt only.
    tarball = tmp_path / "hello-0.3.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in (("hello-0.3/CMakeLists.txt", b"project(hello C)\n"),
                           ("hello-0.3/hello.c", b"int main(void){return 0;}\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "recipes" / "base" / "cmake").mkdir(parents=True)
    (tmp_path / "recipes" / "base" / "cmake" / "recipe.yaml").write_text("name: cmake\n")
    res = cli(*_args(tmp_path), "new", "hello", "--url", f"file://{tarball}")
    assert res.code == 0, res.err
    target = tmp_path / "recipes" / "base" / "hello" / "recipe.yaml"
    lr = load_recipe(target)
    assert lr.recipe.build is not None and lr.recipe.build.startswith("cmake -G Ninja")
    # cmake has a recipe in this tree, samurai does not: named in a TODO instead.
    assert lr.recipe.makedeps == ["cmake"]
    assert "TODO: also needs samurai" in target.read_text()


def test_new_http_404_is_a_fetch_error(cli, served, tmp_path: Path) -> None:
    base, _ = served
    res = cli(*_args(tmp_path), "new", "nothing", "--url", f"{base}/nothing-1.0.tar.gz")
    assert res.code == 3
    assert "HTTP 404" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "recipes" / "base" / "nothing").exists()
    # Nothing kept of a failed download (fetch's own .partial folder may stay, empty).
    assert not [p for p in (tmp_path / "cache").rglob("*") if not p.is_dir()]


def test_new_refuses_overwrite_before_downloading(cli, served, tmp_path: Path) -> None:
    base, _ = served
    target = tmp_path / "recipes" / "base" / "pkgconf" / "recipe.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("name: pkgconf\nversion: '1'\n")
    res = cli(*_args(tmp_path), "new", "pkgconf", "--url", f"{base}/pkgconf-1.8.1.tar.xz")
    assert res.code == 2 and "already exists" in res.err and "--force" in res.err
    assert target.read_text() == "name: pkgconf\nversion: '1'\n"
    assert not (tmp_path / "cache").exists()
    res = cli(*_args(tmp_path), "new", "pkgconf", "--force", "--url",
              f"{base}/pkgconf-1.8.1.tar.xz")
    assert res.code == 0 and load_recipe(target).recipe.version == "1.8.1"


def test_new_bad_input(cli, tmp_path: Path) -> None:
    assert DISTFILES is not None
    res = cli(*_args(tmp_path), "new", "Bad Name", "--url", "file:///x-1.tar.gz")
    assert res.code == 2 and "invalid package name" in res.err
    res = cli(*_args(tmp_path), "new", "foo", "--url", "file:///nowhere/foo.tar.gz")
    assert res.code == 2 and "cannot guess the version" in res.err and "--version" in res.err
    res = cli(*_args(tmp_path), "new", "foo", "--url", "file:///nowhere/foo-1.0.tar.gz")
    assert res.code == 3 and "no such file" in res.err
    res = cli(*_args(tmp_path), "new", "foo", "--version", "1-2", "--url",
              "file:///nowhere/foo-1.0.tar.gz")
    assert res.code == 2 and "invalid version" in res.err
    res = cli(*_args(tmp_path), "new", "foo", "--url", "gopher://h/foo-1.0.tar.gz")
    assert res.code == 2 and "unsupported URL scheme" in res.err
    notar = tmp_path / "foo-1.0.tar.gz"
    notar.write_bytes(b"not a tarball")
    res = cli(*_args(tmp_path), "new", "foo", "--url", f"file://{notar}")
    assert res.code == 3 and "not a readable archive" in res.err


@pytest.mark.parametrize(("name", "filename", "version"), [
    ("curl", "curl-7.88.1.tar.gz", "7.88.1"),
    ("mksh", "mksh-R59c.tgz", "R59c"),
    ("lz4", "v1.9.4.tar.gz", "1.9.4"),
    ("byacc", "byacc-20221106.tgz", "20221106"),
    ("lua", "lua-5.4.4.tar.gz", "5.4.4"),
    ("zlib-ng", "2.2.2.tar.gz", "2.2.2"),
    ("less", "less-590.tar.gz", "590"),
    ("foo", "foo.tar.gz", None),
    ("expat", "libexpat-R_2_5_0.tar.gz", "2.5.0"),  # a tag name, read as dotted
    ("lua2", "lua-5.4.4.tar.gz", "5.4.4"),  # whatever the package is called
    ("doas", "opendoas-6.8.2.tar.xz", "6.8.2"),
    ("xz-utils", "xz-5.4.1.tar.xz", "5.4.1"),
    ("mksh2", "mksh-R59c.tgz", "R59c"),
    ("curl", "curl-8_5_0.tar.gz", "8.5.0"),
    ("foo", "foo-bar-baz.tar.gz", None),
])
def test_guess_version(name: str, filename: str, version: str | None) -> None:
    assert guess_version(name, filename) == version


def test_template_from_real_tarballs() -> None:
    assert DISTFILES is not None
    def kind(name: str) -> str | None:
        path = DISTFILES / name  # type: ignore[operator]
        choice = pick_template(archive_members(path), lambda m: read_member(path, m))
        return f"{choice.template.kind}{'@' + choice.subdir if choice.subdir else ''}" \
            if choice else None
    kinds = {name: kind(name) for name in ("curl-7.88.1.tar.gz", "lz4-1.9.4.tar.gz",
                                           "mksh-R59c.tgz", "libexpat-R_2_5_0.tar.gz",
                                           "xz-5.4.1.tar.xz")}
    assert kinds == {"curl-7.88.1.tar.gz": "autotools", "lz4-1.9.4.tar.gz": "make",
                     "mksh-R59c.tgz": "mirbsd-build-sh", "libexpat-R_2_5_0.tar.gz": "cmake@expat",
                     "xz-5.4.1.tar.xz": "autotools"}


# What each tarball of the shared distfiles holds, and so the template `new`
# must pick (checked by hand against the archives' top folders).
EXPECTED_TEMPLATE = {
    "bmake": "autotools", "busybox": "kconfig", "byacc": "autotools", "cmake": "cmake",
    "curl": "autotools", "file": "autotools", "flex": "autotools", "less": "autotools",
    "libarchive": "autotools", "expat": "cmake", "libffi": "autotools",
    "lua5.4": "make-install-top", "lz4": "make", "m4": "autotools",
    "mksh": "mirbsd-build-sh", "musl": "configure", "ncurses": "autotools",
    "opendoas": "configure", "openssl": "openssl", "pkgconf": "autotools",
    "xz-utils": "autotools",
}


def test_new_scaffolds_every_shared_distfile(cli, tmp_path: Path) -> None:
    """Each tarball of SOURCES.tsv, served over loopback HTTP under its own name,
    scaffolds into a recipe that lints, with SOURCES.tsv's version and the
    template its contents call for; the whole tree then lints too."""
    import csv

    assert DISTFILES is not None
    rows = list(csv.DictReader((DISTFILES / "SOURCES.tsv").open(), delimiter="\t"))
    assert {r["package"] for r in rows} == set(EXPECTED_TEMPLATE)
    handler = lambda *a, **kw: _Quiet(*a, directory=str(DISTFILES), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for row in sorted(rows, key=lambda r: r["package"] != "musl"):  # musl first
            name = row["package"]
            res = cli(*_args(tmp_path), "new", name, "--url", f"{base}/{row['file']}")
            assert res.code == 0, (name, res.err)
            target = tmp_path / "recipes" / "base" / name / "recipe.yaml"
            lr = load_recipe(target)
            text = target.read_text()
            assert lr.recipe.version == row["version"], name
            assert f"{EXPECTED_TEMPLATE[name]} template:" in text, (name, text)
            assert lr.recipe.sources[0].sha256 == row["sha256"], name
            # The host is never templated, only the file name.
            assert f"url: {base}/" in text and "127.0.{version}" not in text
            assert name not in lr.recipe.deps + lr.recipe.makedeps, name
            if name != "musl":
                assert lr.recipe.deps == ["musl"], name
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert cli(*_args(tmp_path), "lint").code == 0


def test_new_self_dep_and_expat_note(cli, tmp_path: Path) -> None:
    assert DISTFILES is not None
    res = cli(*_args(tmp_path), "new", "musl", "--url", f"file://{DISTFILES}/musl-1.2.3.tar.gz")
    assert res.code == 0, res.err
    assert load_recipe(tmp_path / "recipes/base/musl/recipe.yaml").recipe.deps == []
    res = cli(*_args(tmp_path), "new", "bmake", "--url",
              f"file://{DISTFILES}/bmake-20200710.tar.gz")
    assert res.code == 0 and "bmake is its own build tool" in res.out
    assert load_recipe(tmp_path / "recipes/base/bmake/recipe.yaml").recipe.makedeps == []
    res = cli(*_args(tmp_path), "new", "expat", "--url",
              f"file://{DISTFILES}/libexpat-R_2_5_0.tar.gz")
    assert res.code == 0, res.err
    assert "R_2_5_0 in libexpat-R_2_5_0.tar.gz read as version 2.5.0" in res.out
    target = tmp_path / "recipes/base/expat/recipe.yaml"
    lr = load_recipe(target)
    assert lr.recipe.version == "2.5.0"
    assert "libexpat-R_{version_underscore}.tar.gz" in target.read_text()
    assert (lr.recipe.build or "").startswith("cd expat\ncmake ")


def test_new_refuses_a_name_that_exists_in_another_repo(cli, tmp_path: Path) -> None:
    assert DISTFILES is not None
    url = f"file://{DISTFILES}/lz4-1.9.4.tar.gz"
    assert cli(*_args(tmp_path), "new", "lz4", "--repo", "extra", "--url", url).code == 0
    res = cli(*_args(tmp_path), "new", "lz4", "--url", url)
    assert res.code == 2 and "already exists" in res.err and "extra/lz4" in res.err
    assert "--force" in res.err and not (tmp_path / "recipes/base/lz4").exists()
    res = cli(*_args(tmp_path), "new", "lz4", "--force", "--url", url)
    assert res.code == 0 and not (tmp_path / "recipes/base/lz4").exists()
    assert f"wrote {tmp_path}/recipes/extra/lz4/recipe.yaml" in res.out


def test_version_only_in_the_file_name_part() -> None:
    from iglubuild.scaffold import template_url

    url, note = template_url("http://127.0.0.1:8000/v1.2/foo-1.2.tar.gz", "1.2")
    assert url == "http://127.0.0.1:8000/v1.2/foo-{version}.tar.gz"
    assert note and "also holds 1.2" in note
    assert template_url("http://1.2.3.4/x-1.2.3.tgz", "1.2.3") == \
        ("http://1.2.3.4/x-{version}.tgz", None)
