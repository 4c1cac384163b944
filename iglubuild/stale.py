"""Temporaries left by a run that was killed (kill -9, power loss) are removed
at the start of the next one.

Every write of iglubuild goes to a temporary name and is renamed into place;
a run killed in between leaves the temporary behind (`.NAME-1.0-r1.x86_64.tar.zst.abc123.tmp`
in packages/ after a kill while packing: a whole package's worth of disk,
forever). `clean_stale` runs once the build-dir lock is held, so no other
iglubuild of this build dir can be writing, and removes only:

- names made by iglubuild's own temporaries (see `_TEMP_FILE`, `_TEMP_DIR`);
- in iglubuild's own folders, one level deep (not the work trees of builds,
  whose contents belong to the packages' build systems);
- last changed before this run started. The distfiles cache may be shared
  with other build dirs (other locks), so there a temporary must also be
  older than `SHARED_MARGIN` seconds: another tree's rename takes microseconds.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from iglubuild.settings import Settings

log = logging.getLogger("iglubuild.stale")

SHARED_MARGIN = 600.0

# write_atomic and pack: mkstemp(prefix=".NAME.", suffix=".tmp"); image: .NAME.PID.tmp;
# fetch's readable-name link: .NAME.PID.TID.lnk.
_TEMP_FILE = re.compile(r"^\..+\.tmp$|^\..+\.\d+\.\d+\.lnk$")
# unpack: .src.tmp-PID; sysroot: .tmp-KEY-PID-TID.
_TEMP_DIR = re.compile(r"^\.src\.tmp-\d+$|^\.tmp-[0-9a-f]+-\d+-\d+$")


def _folders(settings: Settings) -> Iterator[tuple[Path, bool, bool]]:
    """(folder, shared, files too) for every folder iglubuild writes temporaries into.

    In a package's work folder only unpack's `.src.tmp-PID` is iglubuild's;
    files there may be anything a build left."""
    build = settings.build_dir
    yield build, False, True
    for sub in ("state", "cache", "sysroots"):
        yield build / sub, False, True
    for parent in (build / "packages", build / "packages" / ".seals"):
        yield from ((p, False, True) for p in _subfolders(parent))
    yield from ((p, False, False) for p in _subfolders(build / "work"))
    dist = settings.distfiles_dir
    yield dist, True, True
    yield from ((p, True, True) for p in _subfolders(dist) if p.name.startswith("by-"))
    yield from ((p, True, True) for p in _subfolders(dist / ".seals"))


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def clean_stale(settings: Settings, started: float | None = None) -> list[Path]:
    """Remove temporaries of killed runs (see the module docstring); returns them."""
    started = time.time() if started is None else started
    removed: list[Path] = []
    for folder, shared, files_too in _folders(settings):
        limit = started - SHARED_MARGIN if shared else started
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_mtime >= limit:
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if not shared and _TEMP_DIR.match(entry.name):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            elif files_too and _TEMP_FILE.match(entry.name):
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
    for path in removed:
        log.info("removed %s, left by an interrupted run", path)
    return removed


__all__ = ["SHARED_MARGIN", "clean_stale"]
