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
