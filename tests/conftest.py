"""Shared fixtures: recipe trees written on the fly, and the CLI run in-process."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from iglubuild.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent


def _distfiles() -> Path:
    """Real upstream tarballs: $IGLUBUILD_TEST_DISTFILES, else shared/ beside the
    clone (CI), else /work/shared (a developer's worktree)."""
    given = os.environ.get("IGLUBUILD_TEST_DISTFILES")
    if given:
        return Path(given)
    beside = REPO_ROOT.parent / "shared" / "distfiles"
    return beside if beside.is_dir() else Path("/work/shared/distfiles")


DISTFILES = _distfiles()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., CliResult]:
    """Run `iglubuild ARGS` in-process with the build dir under tmp_path."""

    def invoke(*args: str) -> CliResult:
        argv = list(args)
        if "--build-dir" not in argv:
            argv = ["--build-dir", str(tmp_path / "build"), *argv]
        code = main(argv)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def write_recipe(root: Path, name: str, body: str, repo: str = "base") -> Path:
    """Write recipes/<repo>/<name>/recipe.yaml with dedented `body`."""
    folder = root / repo / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    root = tmp_path / "recipes"
    root.mkdir()
    return root
