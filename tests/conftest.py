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


# --------------------------------------------------------------------------- Docker
# One private dockerd and one toolchain image per session, shared by the farm
# tests (tests/test_farm.py) and the docker executor's (tests/test_docker_executor.py):
# a second engine or a second import of the image would only cost minutes.


def _docker_missing() -> str | None:
    import shutil

    if os.geteuid() != 0:
        return "needs root (a private dockerd)"
    if shutil.which("dockerd") is None:
        return "needs dockerd (Debian's docker.io)"
    return None


@pytest.fixture(scope="session")
def docker_engine():  # type: ignore[no-untyped-def]
    """Our own dockerd for the whole session, stopped by its PID at the end.

    Its socket is exported as DOCKER_HOST for the session, so iglubuild's own
    client (iglubuild.docker_engine.docker_client) talks to it.
    """
    reason = _docker_missing()
    if reason:
        pytest.skip(reason)
    import docker

    from tests.farm_support import start_dockerd

    daemon = start_dockerd()
    # A data root kept from an earlier session may still hold a swarm (and its
    # service); start every session from no swarm at all.
    client = docker.DockerClient(base_url=daemon.host)
    if client.info().get("Swarm", {}).get("LocalNodeState") == "active":
        client.swarm.leave(force=True)
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = daemon.host
    try:
        yield daemon
    finally:
        try:
            if client.info().get("Swarm", {}).get("LocalNodeState") == "active":
                client.swarm.leave(force=True)
        except Exception:
            pass
        daemon.stop()
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old


@pytest.fixture(scope="session")
def root_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build root as a tarball (IGLUBUILD_TEST_BUILDROOT, else debootstrap once)."""
    from tests.farm_support import buildroot_tarball

    return buildroot_tarball(tmp_path_factory.mktemp("buildroot"))


@pytest.fixture(scope="session")
def toolchain_image(docker_engine, root_tarball):  # type: ignore[no-untyped-def]
    """The build root imported as iglubuild-toolchain:<sha256 prefix of the tarball>."""
    from iglubuild.toolchain_image import create_image

    return create_image(root_tarball)
