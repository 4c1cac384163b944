"""Recipes marked `left_out: why`: world goes on without them and says why, pkg refuses them.

In-process CLI runs with --dry-run on shell-only recipes: what is tested is
the selection (what is left out, what it blocks, what is still planned) and
the messages, not a build.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_recipe


def _tree(recipes: Path) -> None:
    write_recipe(recipes, "alpha", 'name: alpha\nversion: "1"\npackage: "true"\n')
    write_recipe(recipes, "bigcc", 'name: bigcc\nversion: "2"\n'
                 "left_out: needs a C++ runtime that has no source here\n"
                 'package: "true"\n')
    write_recipe(recipes, "user", 'name: user\nversion: "3"\nmakedeps: [bigcc]\n'
                 'package: "true"\n')


def test_world_leaves_out_the_recipe_and_what_needs_it(cli, recipes: Path) -> None:  # type: ignore[no-untyped-def]
    _tree(recipes)
    r = cli("--recipes", str(recipes), "world", "--dry-run")
    assert r.code == 0, r.err
    assert "left out: bigcc (needs a C++ runtime that has no source here)" in r.err
    assert "blocked by them: user" in r.err
    assert "alpha" in r.out
    assert "bigcc" not in r.out and "user" not in r.out


def test_pkg_of_a_left_out_recipe_is_a_one_line_error(cli, recipes: Path) -> None:  # type: ignore[no-untyped-def]
    _tree(recipes)
    for name in ("bigcc", "user"):
        r = cli("--recipes", str(recipes), "pkg", name, "--dry-run")
        assert r.code == 2, r.err
        first = r.err.splitlines()[0]
        assert first.startswith(f"error: {name}: cannot be built here: bigcc is left out"), first
        assert "hint:" in r.err and "left_out:" in r.err
        assert "Traceback" not in r.err
    assert cli("--recipes", str(recipes), "pkg", "alpha", "--dry-run").code == 0


def test_lint_lists_left_out_recipes(cli, recipes: Path) -> None:  # type: ignore[no-untyped-def]
    _tree(recipes)
    r = cli("--recipes", str(recipes), "lint")
    assert r.code == 0, r.err
    assert "note: bigcc: left out of builds: needs a C++ runtime" in r.err
    assert "3 recipes ok, 1 left out" in r.err


def test_left_out_must_give_a_reason(cli, recipes: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_recipe(recipes, "empty", 'name: empty\nversion: "1"\nleft_out: ""\n')
    r = cli("--recipes", str(recipes), "lint")
    assert r.code == 2
    assert f"{path}:3:" in r.err
