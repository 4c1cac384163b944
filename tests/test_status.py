"""`iglubuild status`: through the real CLI, against real recipe trees and state records."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from iglubuild.commands._common import load
from iglubuild.executors import make_executor
from iglubuild.plan import StateStore, make_plan
from iglubuild.settings import Settings
from tests.conftest import CliResult
from tests.plan_fixtures import make_tree

Cli = Callable[..., CliResult]


def record_builds(tree_dir: Path, build_dir: Path, failed: dict[str, str] | None = None) -> None:
    """Records as a real host build would leave them (same graph, same toolchain id)."""
    settings = Settings(recipes=tree_dir, build_dir=build_dir)
    tree, graph = load(settings)
    state = StateStore(build_dir)
    toolchain = make_executor(settings).toolchain_id()
    for name, pkg in make_plan(tree, graph, toolchain, state).packages.items():
        if failed and name in failed:
            state.write(pkg.new_record("failed", duration=0, log=failed[name]))
        else:
            state.write(pkg.new_record("built", duration=1.5))


def rows(out: str) -> dict[str, str]:
    result = {}
    for line in out.splitlines():
        name, _version, text = line.split(None, 2)
        result[name] = text
    return result


def test_fresh_tree_is_never_built(cli: Cli, recipes: Path) -> None:
    make_tree(recipes)
    res = cli("--recipes", str(recipes), "status")
    assert res.code == 0, res.err
    assert set(rows(res.out).values()) == {"never built"}
    assert list(rows(res.out)) == ["musl", "mksh", "pkgconf", "zlib", "openssl", "curl", "app"]
    assert "7 package(s): 7 never built" in res.err


def test_outdated_packages_say_why(cli: Cli, recipes: Path, tmp_path: Path) -> None:
    make_tree(recipes)
    record_builds(recipes, tmp_path / "build")
    (recipes / "base" / "zlib" / "fix.patch").write_text("new patch\n")
    res = cli("--recipes", str(recipes), "status")
    assert res.code == 0, res.err
    assert rows(res.out) == {
        "musl": "built",
        "mksh": "built",
        "pkgconf": "built",
        "zlib": "outdated (patches/files changed)",
        "openssl": "outdated (dependency zlib changed)",
        "curl": "outdated (dependency openssl changed, dependency zlib changed)",
        "app": "outdated (dependency curl changed)",
    }


def test_named_packages_and_json(cli: Cli, recipes: Path, tmp_path: Path) -> None:
    make_tree(recipes)
    record_builds(recipes, tmp_path / "build", failed={"curl": "/b/logs/curl.log"})
    res = cli("--recipes", str(recipes), "status", "curl", "zlib", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert [d["name"] for d in data] == ["curl", "zlib"]
    assert data[0]["status"] == "failed" and data[0]["log"] == "/b/logs/curl.log"
    assert data[1]["status"] == "built" and data[1]["last_duration"] == 1.5
    assert len(data[1]["signature"]) == 64


def test_subpackage_name_shows_its_parent(cli: Cli, recipes: Path) -> None:
    make_tree(recipes)
    res = cli("--recipes", str(recipes), "status", "curl-dev")
    assert res.code == 0, res.err
    assert list(rows(res.out)) == ["curl"]


def test_unknown_package_is_one_line_exit_2(cli: Cli, recipes: Path) -> None:
    make_tree(recipes)
    res = cli("--recipes", str(recipes), "status", "zlibb")
    assert res.code == 2
    assert res.err.splitlines()[0] == "error: unknown package 'zlibb'"
    assert "did you mean zlib" in res.err
    assert "Traceback" not in res.err
