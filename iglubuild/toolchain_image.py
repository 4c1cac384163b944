"""The toolchain image: the build root tarball imported into Docker.

The distcc volunteers must run the very clang local builds use, so their
image is not pulled from anywhere: it is the build root (debootstrap + clang,
lld, distcc; see iglubuild.toolchain_root) imported as a single layer through the
Engine API's "create image from source", and tagged with the toolchain id.
Nodes without a registry get it with --save / --load; --push sends it to a
registry the nodes can pull from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iglubuild.docker_engine import IMAGE_REPOSITORY, LABEL_TOOLCHAIN, docker_client
from iglubuild.errors import IglubuildError, UsageError
from iglubuild.settings import Settings

if TYPE_CHECKING:
    import docker

# What a volunteer needs from the root; checked in a throwaway container
# right after the import so a bad root fails here, not on the farm.
_CHECK_SCRIPT = (
    "command -v distccd >/dev/null || { echo 'no distccd'; exit 1; }; "
    "command -v clang >/dev/null || { echo 'no clang'; exit 1; }; "
    "[ -e /usr/lib/distcc/clang ] || { echo 'no /usr/lib/distcc/clang'; exit 1; }; "
    "clang --version | head -n 1"
)
# The sha256 of the build root manifest an image was made from (see iglubuild.toolchain_root).
LABEL_MANIFEST = "org.iglunix.toolchain-manifest"
_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(IglubuildError):
    """The toolchain image could not be made, saved, loaded or pushed."""


@dataclass(frozen=True)
class ToolchainImage:
    """A toolchain image in the engine: its reference, id and the clang it holds."""

    ref: str
    image_id: str
    toolchain_id: str
    compiler: str


def tarball_toolchain_id(tarball: Path) -> str:
    """The toolchain id of a root tarball: the first 16 hex digits of its sha256."""
    digest = hashlib.sha256()
    with open(tarball, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def create_image(tarball: Path, toolchain_id: str | None = None,
                 client: docker.DockerClient | None = None,
                 labels: Mapping[str, str] | None = None) -> ToolchainImage:
    """Import `tarball` as iglubuild-toolchain:<toolchain id> and check it can volunteer.

    `labels` are added to the image (the build root's manifest digest, so a
    machine without the build root can still find the image for its manifest).
    """
    tarball = Path(tarball)
    if not tarball.is_file():
        raise UsageError(f"{tarball}: no such build root tarball",
                         hint="make one with `iglubuild toolchain export FILE`")
    client = client or docker_client()
    tid = toolchain_id or tarball_toolchain_id(tarball)
    changes = [
        f"ENV PATH={_IMAGE_PATH}",
        f"LABEL {LABEL_TOOLCHAIN}={tid}",
        'CMD ["/bin/sh"]',
        *(f"LABEL {key}={value}" for key, value in (labels or {}).items()),
    ]
    result = client.api.import_image_from_file(
        str(tarball), repository=IMAGE_REPOSITORY, tag=tid, changes=changes)
    _raise_stream_error(result, f"importing {tarball}")
    ref = f"{IMAGE_REPOSITORY}:{tid}"
    image = client.images.get(ref)
    compiler = _check_image(client, ref)
    return ToolchainImage(ref=ref, image_id=image.id, toolchain_id=tid, compiler=compiler)


def _raise_stream_error(result: object, what: str) -> None:
    """The Engine reports import/push failures inside a JSON stream, not as HTTP errors."""
    text = result if isinstance(result, str) else (
        b"".join(result).decode() if isinstance(result, (list, tuple)) else str(result))
    for line in str(text).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("error"):
            raise ImageError(f"{what}: {msg['error']}")


def _check_image(client: docker.DockerClient, ref: str) -> str:
    import docker.errors

    try:
        out = client.containers.run(ref, ["sh", "-c", _CHECK_SCRIPT], remove=True,
                                    network_mode="none", stdout=True, stderr=True)
    except docker.errors.ContainerError as exc:
        client.images.remove(ref, force=True)
        detail = (exc.stderr or b"").decode(errors="replace").strip() or str(exc)
        raise ImageError(f"the build root cannot run a distcc volunteer: {detail}",
                         hint="the root needs clang, lld and distcc installed "
                              "(and update-distcc-symlinks run)") from exc
    return bytes(out).decode(errors="replace").strip()


def save_image(ref: str, dest: Path, client: docker.DockerClient | None = None) -> Path:
    """Write the image as a `docker load`-able tar, atomically."""
    client = client or docker_client()
    image = client.images.get(ref)
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for chunk in image.save(named=True):
                f.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def load_image(src: Path, client: docker.DockerClient | None = None) -> list[str]:
    """Load a saved image; returns its tags."""
    src = Path(src)
    if not src.is_file():
        raise UsageError(f"{src}: no such image file", hint="make it with --save FILE")
    client = client or docker_client()
    with open(src, "rb") as f:
        images = client.images.load(f)
    return [t for img in images for t in img.tags]


def push_image(ref: str, registry: str, client: docker.DockerClient | None = None) -> str:
    """Tag `ref` under `registry` and push it; returns the pushed reference."""
    client = client or docker_client()
    image = client.images.get(ref)
    repo, _, tag = ref.rpartition(":")
    target = f"{registry.rstrip('/')}/{repo}"
    image.tag(target, tag)
    stream = client.images.push(target, tag=tag)
    _raise_stream_error(stream, f"pushing {target}:{tag}")
    return f"{target}:{tag}"


# --------------------------------------------------------------------------- CLI action


def default_tarball(settings: Settings) -> tuple[Path, str | None]:
    """The current build root as a tarball (exported on first use) and its id.

    The tarball is keyed by the root's id, so a new build root gets a new one.
    """
    from iglubuild import toolchain_root

    root = toolchain_root.current_root(settings)
    tarball = settings.build_dir / "toolchain" / f"{root.id}.tar"
    if not tarball.exists():
        toolchain_root.export(root, tarball)
    return tarball, str(root.id)
