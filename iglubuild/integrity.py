"""Files checked when used, not only when written: distfiles and artifacts.

A checksum verified at download time says nothing about the file a week
later: a disk error, a hand edit or a careless `cp` over the cache would be
built from (or installed) without anyone noticing. So every use checks the
file again, cheaply:

- for each checked file there is a *seal* (see `seal_path`) holding the file's
  sha256 and the `stat` it had when that sha256 was computed (size, mtime,
  inode, device and ctime, all in nanoseconds where the kernel has them);
- a use compares the file's `stat` with the seal. Equal: the content is the
  sealed one (ctime cannot be set from user space; any write, `touch -r` or
  rename-over changes it, and a new file has another inode). Different, or
  no seal: the file is hashed again and compared with what it must be.

Why a stamp and not a re-hash on every use: hashing the largest distfile of
the tree (openssl-3.0.20.tar.gz, 15 MB) costs 15 ms warm, far more cold
from disk, and it is paid by every build and every `status`; the stat costs
20 us. A re-hash happens only when the stat moved, and then decides.

Sources know what they must be (the recipe's checksum). Artifacts are sealed
by the packer right after writing: every writer of artifacts must call
`seal_artifact`. An artifact without a seal (packed by an older iglubuild)
is not checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from iglubuild.atomic import write_atomic

SEAL_SUFFIX = ".seal"
_BUF = 1 << 20


def seal_path(path: Path) -> Path:
    """Where the seal of `path` lives: `<grandparent>/.seals/<parent name>/<name>.seal`.

    Not beside the file: the folders holding checked files (`distfiles/by-sha256`,
    `packages/x86_64`) are listed and served as they are, and stay free of
    anything but the files themselves.
    """
    return path.parent.parent / ".seals" / path.parent.name / f"{path.name}{SEAL_SUFFIX}"


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns]


def file_hash(path: Path, algo: str = "sha256") -> str:
    """The hex digest of a file, read in 1 MiB pieces."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def _read_seal(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(seal_path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def seal(path: Path, algo: str, hexsum: str) -> None:
    """Record that `path` has checksum `hexsum` now (the caller just verified it)."""
    st = os.stat(path)
    doc = {"algo": algo, "sum": hexsum.lower(), "stat": _stat_key(st)}
    target = seal_path(path)
    with contextlib.suppress(OSError):  # a read-only cache still works, only slower
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, json.dumps(doc) + "\n")


def drop(path: Path) -> None:
    """Remove a file that failed its check, and its seal."""
    for p in (path, seal_path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _sealed_matches(path: Path, algo: str, hexsum: str, st: os.stat_result) -> bool:
    doc = _read_seal(path)
    return (doc is not None and doc.get("algo") == algo and doc.get("sum") == hexsum
            and doc.get("stat") == _stat_key(st))


def verify(path: Path, algo: str, hexsum: str) -> bool:
    """Does `path` still hold the content with checksum `hexsum`? (False if it is gone.)

    The seal answers when the file's stat is unchanged; otherwise the file is
    hashed, and a match is sealed again so the next use is cheap.
    """
    hexsum = hexsum.lower()
    try:
        before = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if _sealed_matches(path, algo, hexsum, before):
        return True
    actual = file_hash(path, algo)
    if actual != hexsum:
        return False
    # Seal only if nothing changed while hashing; otherwise the next use hashes again.
    if _stat_key(os.stat(path)) == _stat_key(before):
        seal(path, algo, hexsum)
    return True


def seal_artifact(path: Path) -> str:
    """Hash a just-written artifact and seal it; returns its sha256."""
    hexsum = file_hash(path)
    seal(path, "sha256", hexsum)
    return hexsum


def artifact_intact(path: Path) -> bool:
    """Is the artifact at `path` the one its packer sealed? (False if it is gone.)

    An artifact without a seal was packed by an older iglubuild (or is not
    iglubuild's): nothing says what it should hold, so it is not refused;
    the next build of its package seals it.
    """
    doc = _read_seal(path)
    if doc is None or doc.get("algo") != "sha256" or not isinstance(doc.get("sum"), str):
        return path.is_file()
    return verify(path, "sha256", str(doc["sum"]))


def intact_sum(path: Path) -> str | None:
    """The sha256 of the artifact at `path`, or None if it changed since it was sealed.

    For whoever publishes an artifact's checksum (the xbps repository index):
    the seal gives it without hashing when the stat is unchanged, and a file
    altered after packing gives None instead of a checksum that would vouch
    for the altered bytes. An unsealed artifact is hashed.
    """
    doc = _read_seal(path)
    if doc is None or doc.get("algo") != "sha256" or not isinstance(doc.get("sum"), str):
        return file_hash(path)
    hexsum = str(doc["sum"])
    return hexsum if verify(path, "sha256", hexsum) else None


__all__ = ["artifact_intact", "drop", "file_hash", "intact_sum", "seal", "seal_artifact",
           "seal_path", "verify"]
