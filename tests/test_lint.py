"""`iglubuild lint`: every problem of every kind in one run, each at file:line:col."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import write_recipe

MUSL = """\
name: musl
version: 1.2.4
sources:
  - file: musl.conf
"""


def _tree(root: Path) -> None:
    (write_recipe(root, "musl", MUSL).parent / "musl.conf").write_text("x\n")
    # An unknown dependency (a typo).
    write_recipe(root, "curl", "name: curl\nversion: '8'\ndeps: [musl, opensll]\n")
    # A duplicate name across repos.
    write_recipe(root, "curl", "name: curl\nversion: '9'\ndeps: [zlibb]\n", repo="extra")
    # A cycle a -> b -> a.
    write_recipe(root, "a", "name: a\nversion: '1'\ndeps: [b]\n")
    write_recipe(root, "b", "name: b\nversion: '1'\nmakedeps: [a-dev]\n"
                 "subpackages:\n  dev: [usr/include]\n")
    write_recipe(root, "a", "name: a\nversion: '1'\ndeps: [b]\nsubpackages:\n"
                 "  dev: [usr/include]\n")
    # A schema error: an unknown key, and a version that is not a string; its
    # unknown dep is reported in the same run, not after the schema is fixed.
    write_recipe(root, "bad", "name: bad\nversion: 1.10\nrelese: 2\ndeps: [musl, nope]\n")


def test_lint_reports_all_four_kinds_in_one_run(cli, tmp_path: Path) -> None:
    root = tmp_path / "recipes"
    _tree(root)
    res = cli("--recipes", str(root), "lint")
    assert res.code == 2 and "Traceback" not in res.err
    lines = [line for line in res.err.splitlines() if line.startswith("error:")]
    located = [re.match(r"^error: (\S+?):(\d+):(\d+): (.*)$", line) for line in lines]
    assert all(located), lines
    messages = {(Path(m.group(1)).relative_to(root).as_posix(), m.group(4).split(" (hint")[0])
                for m in located if m}
    assert ("base/curl/recipe.yaml", "unknown dependency 'opensll' in deps") in messages
    assert ("extra/curl/recipe.yaml", "duplicate package name 'curl', also in "
            f"{root}/base/curl/recipe.yaml") in messages
    # The duplicate's own deps are checked in the same run.
    assert ("extra/curl/recipe.yaml", "unknown dependency 'zlibb' in deps") in messages
    assert ("base/a/recipe.yaml", "dependency cycle: a -> b -> a") in messages
    assert ("base/b/recipe.yaml", "dependency cycle: a -> b -> a") in messages
    assert any(f == "base/bad/recipe.yaml" and "relese" in m for f, m in messages)
    assert any(f == "base/bad/recipe.yaml" and m.startswith("version") for f, m in messages)
    assert ("base/bad/recipe.yaml", "unknown dependency 'nope' in deps") in messages


def test_lint_after_fixing_finds_nothing_new(cli, tmp_path: Path) -> None:
    """Fixing everything the first run named leaves a clean tree: no second layer."""
    root = tmp_path / "recipes"
    _tree(root)
    assert cli("--recipes", str(root), "lint").code == 2
    write_recipe(root, "curl", "name: curl\nversion: '8'\ndeps: [musl]\n")
    (root / "extra" / "curl" / "recipe.yaml").unlink()
    write_recipe(root, "b", "name: b\nversion: '1'\n")
    write_recipe(root, "bad", "name: bad\nversion: '1.10'\nrelease: 2\n")
    res = cli("--recipes", str(root), "lint")
    assert res.code == 0, res.err


def test_lint_reports_every_cycle(cli, tmp_path: Path) -> None:
    root = tmp_path / "recipes"
    for a, b in (("p", "q"), ("q", "p"), ("x", "y"), ("y", "x")):
        write_recipe(root, a, f"name: {a}\nversion: '1'\ndeps: [{b}]\n")
    res = cli("--recipes", str(root), "lint")
    assert res.code == 2
    assert "dependency cycle: p -> q -> p" in res.err
    assert "dependency cycle: x -> y -> x" in res.err
