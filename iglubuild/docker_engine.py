"""The Docker engine as iglubuild uses it: one client, the toolchain image's names.

Shared by the farm (swarm, volunteers), the docker executor (one container
per phase) and the toolchain image. Everything goes through the Engine API
(the docker Python SDK); the docker CLI is never run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from iglubuild.errors import IglubuildError

if TYPE_CHECKING:
    import docker

# The toolchain image: iglubuild-toolchain:<toolchain id>, labelled with the id.
IMAGE_REPOSITORY = "iglubuild-toolchain"
LABEL_TOOLCHAIN = "org.iglunix.toolchain-id"


class EngineError(IglubuildError):
    """The Docker engine could not be reached or refused a request."""


def docker_client() -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (or the default socket)."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EngineError(
            f"cannot reach the Docker engine at {where}",
            hint="start dockerd (or set DOCKER_HOST to a running engine)",
        ) from exc
    return client
