"""Write a file so that readers see the old contents or the new, never half of either.

Recipes (checksum), the recipe cache, plan records, the repository index and
the image's package database are all small files that other processes may
read while they are rewritten. Each goes to a unique temporary name in the
same folder (so the rename stays on one file system and two writers never
share a temporary) and is renamed over the target; on any failure the
temporary is removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from iglubuild.errors import disk_full, is_disk_full


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Replace `path` with `data` (str is written as UTF-8) in one rename; return `path`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path.parent) from exc
        raise
    return path
