"""A small real recipe tree for plan, scheduler and status tests.

    musl <- zlib (patch, file source) <- openssl <- curl (makedep pkgconf) <- app (curl-dev)
    musl <- pkgconf
    musl <- mksh            (independent of zlib)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from iglubuild.graph import DepGraph
from iglubuild.recipe import RecipeTree, load_tree
from tests.conftest import write_recipe


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Checksums are computed from these bytes, never typed in.
TARBALL = b"pretend tarball bytes for the plan tests\n"
TARBALL2 = b"a different release of the tarball\n"


def recipe_text(name: str, deps: list[str] = (), makedeps: list[str] = (),  # type: ignore[assignment]
                release: int = 1, extra: str = "", data: bytes = TARBALL) -> str:
    return (
        f"name: {name}\nversion: '1.0'\nrelease: {release}\n"
        f"deps: [{', '.join(deps)}]\nmakedeps: [{', '.join(makedeps)}]\n"
        f"sources:\n  - url: https://example.org/{name}-{{version}}.tar.gz\n"
        f"    sha256: {sha256_of(data)}\n"
        f"{extra}"
        "build: |\n  true\n"
    )


def make_tree(root: Path) -> Path:
    """Write the fixture tree under root (recipes/) and return root."""
    write_recipe(root, "musl", recipe_text("musl") + "subpackages:\n  dev: [usr/include]\n")
    zlib = write_recipe(root, "zlib", recipe_text(
        "zlib", ["musl"],
        extra="  - file: zlib.conf\npatches: [fix.patch]\n"))
    (zlib.parent / "fix.patch").write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    (zlib.parent / "zlib.conf").write_text("level=6\n")
    write_recipe(root, "pkgconf", recipe_text("pkgconf", ["musl"]))
    write_recipe(root, "openssl", recipe_text("openssl", ["musl", "zlib"]))
    write_recipe(root, "curl", recipe_text("curl", ["openssl", "zlib"], ["pkgconf"])
                 + "subpackages:\n  dev: [usr/include]\n")
    write_recipe(root, "app", recipe_text("app", ["musl"], ["curl-dev"]))
    write_recipe(root, "mksh", recipe_text("mksh", ["musl"]))
    return root


def load(root: Path) -> tuple[RecipeTree, DepGraph]:
    tree = load_tree(root)
    return tree, DepGraph(tree)
