"""The real recipe tree (recipes/): it lints, and its checksums are the distfiles'."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from iglubuild.graph import DepGraph
from iglubuild.recipe import load_tree
from tests.conftest import DISTFILES as SHARED_DISTFILES

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _distfiles() -> Path | None:
    return SHARED_DISTFILES if (SHARED_DISTFILES / "SOURCES.tsv").is_file() else None


DISTFILES = _distfiles()

# The base system the brief asks for; each must have a recipe.
BASE = ("musl mksh toybox busybox bmake byacc om4 m4 flex zlib-ng zstd xz lz4 expat libffi "
        "pkgconf libarchive openssl curl ncurses netbsd-curses less file lua cmake samurai "
        "llvm linux linux-headers").split()


def test_tree_lints_and_has_the_base_system() -> None:
    tree = load_tree(RECIPES)
    missing = [name for name in BASE if name not in tree]
    assert not missing
    # Iglunix's repo grouping is kept as folders.
    assert tree["musl"].repo == "linux" and tree["gmake"].repo == "bad"
    assert tree["curl"].repo == "base" and tree["lua"].repo == "extra"


def test_curl_closure_is_fully_verified() -> None:
    """curl must really build in CI: nothing in its closure may be unverified."""
    tree = load_tree(RECIPES)
    closure = DepGraph(tree).order(["curl"])
    assert closure[0] == "musl" and closure[-1] == "curl" and "openssl" in closure
    unverified = {name for name, _ in tree.unverified}
    assert not unverified & set(closure)


@pytest.mark.skipif(DISTFILES is None, reason="shared distfiles not present")
def test_every_checksum_is_the_distfile_checksum() -> None:
    assert DISTFILES is not None
    with (DISTFILES / "SOURCES.tsv").open() as f:
        tsv = {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}
    tree = load_tree(RECIPES)
    checked = 0
    for lr in tree:
        for src in lr.recipe.sources:
            if not src.url:
                continue
            if src.unverified:
                assert src.sha256 is None and src.sha512 is None
                continue
            name = src.display_name
            path = DISTFILES / name
            assert path.is_file(), f"{lr.name}: {name} is not in the distfiles"
            assert src.sha256 == hashlib.sha256(path.read_bytes()).hexdigest(), lr.name
            assert src.sha256 == tsv[name]["sha256"], lr.name
            assert src.url == tsv[name]["upstream_url"], lr.name
            assert lr.recipe.version == tsv[name]["version"] or \
                lr.recipe.version.lstrip("R") == tsv[name]["version"].lstrip("R"), lr.name
            checked += 1
    assert checked >= 20


def _git_tsv() -> dict[str, dict[str, str]] | None:
    if DISTFILES is None or not (DISTFILES / "GIT.tsv").is_file():
        return None
    with (DISTFILES / "GIT.tsv").open() as f:
        return {row["package"]: row for row in csv.DictReader(f, delimiter="\t")}


def _git_sources() -> list[tuple[str, str, object]]:
    """(recipe name, version, source) of every pinned git source in the tree."""
    tree = load_tree(RECIPES)
    return [(lr.name, lr.recipe.version, src) for lr in tree for src in lr.recipe.sources
            if src.git and not src.unverified]


@pytest.mark.skipif(_git_tsv() is None, reason="shared distfiles (GIT.tsv) not present")
def test_every_git_commit_is_the_bundles_commit() -> None:
    """Each git source is GIT.tsv's: clone URL, tag, commit, and a bundle named for the repo."""
    from iglubuild.recipe import git_repo_name

    rows = _git_tsv()
    assert rows is not None
    checked = 0
    for name, version, src in _git_sources():
        row = rows.get(name)
        assert row is not None, f"{name}: no bundle for it in GIT.tsv"
        assert src.git == row["upstream_repo"], name  # type: ignore[attr-defined]
        assert src.commit == row["commit"], name  # type: ignore[attr-defined]
        assert src.tag == row["tag"], name  # type: ignore[attr-defined]
        # Recipe versions have no '-': kernel-headers' 4.19.88-2 is 4.19.88_2.
        assert version.replace("_", "-") == row["version"], name
        bundle = DISTFILES / row["bundle"]  # type: ignore[operator]
        assert bundle.is_file() and bundle.name == \
            f"{git_repo_name(src.git)}.bundle", name  # type: ignore[attr-defined]
        checked += 1
    assert checked >= 1


@pytest.mark.slow
@pytest.mark.skipif(_git_tsv() is None, reason="shared distfiles (GIT.tsv) not present")
def test_every_git_commit_is_in_its_bundle(tmp_path: Path) -> None:
    """Fetch each pinned commit from the shared bundles for real: the commit is
    there, passes fsck, and the bundle's tag still points at it."""
    from iglubuild.fetch import FetchOptions, fetch_sources
    from iglubuild.settings import Settings

    assert DISTFILES is not None
    settings = Settings(build_dir=tmp_path / "build", distfiles=tmp_path / "distfiles",
                        mirrors=(DISTFILES.as_uri(),))
    items = [(name, src) for name, _, src in _git_sources()]
    report = fetch_sources(items, settings, FetchOptions(progress=False))  # type: ignore[arg-type]
    assert len(report.downloaded) + len(report.reused) == len(items) >= 1
