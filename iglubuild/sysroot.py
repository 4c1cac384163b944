"""Sysroots: the exact set of dependency artifacts a package builds against.

Every real package has at least musl and musl-dev in its sysroot, and
unpacking those 250 files costs more than everything else iglubuild does for
a small package. Most packages share a dependency set, so a sysroot is made
once per set of artifacts (keyed by their content) under
`<build-dir>/sysroots/<key>` and shared by every build with that exact set:
still only the declared deps, never anything more.

A shared sysroot must not change while in use:

- builds hold a shared `flock` on `<key>.lock` while they use it; pruning
  (keep the most recently used `keep`) takes the exclusive lock without
  waiting and skips sysroots in use;
- it is made under a temporary name and renamed into place;
- sandboxing executors mount it read-only (PhaseJob.readonly). The host
  executor cannot, so after the build every folder's mtime is compared with
  the snapshot taken before: a build that added, removed or renamed anything
  in its sysroot fails, and that sysroot is retired so no other build uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iglubuild.errors import BuildError
from iglubuild.package import RootTree, install_artifact

DEFAULT_KEEP = 16


def artifacts_key(artifacts: Sequence[Path]) -> str:
    """A key naming this exact set of artifacts, by content (order does not matter)."""
    digests = []
    for artifact in artifacts:
        h = hashlib.sha256()
        with artifact.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digests.append(h.hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:24]


def _dir_mtimes(root: Path) -> dict[str, int]:
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        # A build replaced its sysroot with a link (ln -s / "$SYSROOT"): changed,
        # and never walked (os.walk would follow a symlinked top).
        return {".": -1}
    found = {".": st.st_mtime_ns}
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = os.lstat(path).st_mtime_ns
    return found


@dataclass
class Sysroot:
    """One sysroot in use by one build."""

    path: Path
    key: str
    snapshot: dict[str, int] = field(default_factory=dict)

    def changed(self) -> list[str]:
        """Folders whose contents changed since the build started (sorted)."""
        try:
            now = _dir_mtimes(self.path)
        except FileNotFoundError:
            return ["."]
        names = set(now) | set(self.snapshot)
        return sorted(n for n in names if now.get(n) != self.snapshot.get(n))


class SysrootCache:
    """Shared sysroots under one folder, at most `keep` of them left unused."""

    def __init__(self, folder: Path, keep: int = DEFAULT_KEEP) -> None:
        self.folder = folder
        self.keep = keep

    @contextlib.contextmanager
    def use(self, artifacts: Sequence[Path],
            note: Callable[[str], None] = lambda _: None) -> Iterator[Sysroot]:
        """The sysroot of exactly `artifacts`, made if needed, locked while in use."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = artifacts_key(artifacts)
        path = self.folder / key
        lock = os.open(self.folder / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_SH)
            os.utime(lock)  # last use, for pruning
            if path.is_dir():
                note(f"sysroot: shared {path}")
            else:
                with self._making(key):
                    # Two builds with the same deps may both find it missing; the
                    # second waits here and then shares the first one's sysroot.
                    # (Both making it is not safe: renaming an empty sysroot -- a
                    # package without deps -- replaces the other's while in use.)
                    if path.is_dir():
                        note(f"sysroot: shared {path}")
                    else:
                        self._make(path, artifacts, note)
                        self.prune(exclude=key)
            sysroot = Sysroot(path, key, _dir_mtimes(path))
            yield sysroot
        finally:
            os.close(lock)  # releases the shared lock

    @contextlib.contextmanager
    def _making(self, key: str) -> Iterator[None]:
        """Exclusive right to make sysroot `key`, between processes and threads alike
        (each call opens the lock file anew, and flock locks belong to the open file)."""
        fd = os.open(self.folder / f"{key}.make", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _make(self, path: Path, artifacts: Sequence[Path], note: Callable[[str], None]) -> None:
        tmp = self.folder / f".tmp-{path.name}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            tree = RootTree(tmp)  # one tree: a file conflict names both packages
            for artifact in artifacts:
                install_artifact(artifact, tree)
                note(f"sysroot: {artifact.name}")
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.is_dir():  # not a concurrent twin: a real error
                    raise
                note(f"sysroot: made at the same time by another build, using {path}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def retire(self, sysroot: Sysroot) -> None:
        """Take a damaged sysroot out of use (renamed away; pruned later)."""
        with contextlib.suppress(OSError):
            os.rename(sysroot.path, self.folder / f".retired-{sysroot.key}-{time.time_ns()}")

    def prune(self, exclude: str = "") -> list[str]:
        """Remove retired sysroots, and unused ones beyond the `keep` most recent."""
        removed = []
        for entry in self.folder.glob(".retired-*"):
            if entry.is_symlink():
                entry.unlink()  # a sysroot a build replaced with a link: not followed
            else:
                shutil.rmtree(entry, ignore_errors=True)
        locks = sorted(self.folder.glob("*.lock"), key=lambda p: p.stat().st_mtime_ns,
                       reverse=True)
        for lock_path in locks[self.keep:]:
            key = lock_path.name[: -len(".lock")]
            if key == exclude:
                continue
            fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use by a running build
                # Lock files stay: removing one could let two builds lock
                # different files for the same sysroot.
                if (self.folder / key).is_dir():
                    shutil.rmtree(self.folder / key, ignore_errors=True)
                    removed.append(key)
            finally:
                os.close(fd)
        return removed


def check_untouched(sysroot: Sysroot, cache: SysrootCache, package: str) -> None:
    """Fail the build (and retire the sysroot) if the build changed its sysroot."""
    changed = sysroot.changed()
    if changed:
        cache.retire(sysroot)
        raise BuildError(
            f"{package}: the build changed its sysroot ({', '.join(changed[:3])})",
            hint="install into $pkgdir (DESTDIR), never into $SYSROOT",
        )
