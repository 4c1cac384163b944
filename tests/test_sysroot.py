"""Shared sysroots: made once per exact artifact set, locked in use, pruned, guarded.

Real artifacts packed by iglubuild.package; real flock locks; a real build
that writes into its sysroot.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from iglubuild.build import BuildJob, PhaseFailed, build_package
from iglubuild.executors.host import HostExecutor
from iglubuild.package import PackageInfo, pack_all
from iglubuild.recipe import load_tree
from iglubuild.settings import Settings
from iglubuild.sysroot import SysrootCache, artifacts_key
from tests.engine_support import write_recipe


def artifact(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    root = tmp_path / f"tree-{name}"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    info = PackageInfo(name=name, version="1", release=1, arch="x86_64")
    return pack_all(root, info, {}, tmp_path / "out", epoch=1)[0]


def test_same_artifacts_share_one_sysroot(tmp_path: Path) -> None:
    a = artifact(tmp_path, "a", {"usr/include/a.h": "a"})
    b = artifact(tmp_path, "b", {"usr/include/b.h": "b"})
    cache = SysrootCache(tmp_path / "sysroots")
    notes: list[str] = []
    with cache.use([a, b], notes.append) as first:
        assert (first.path / "usr/include/a.h").read_text() == "a"
        assert (first.path / "usr/include/b.h").is_file()
    assert any("a-1-r1" in n for n in notes)  # it was made
    notes.clear()
    with cache.use([b, a], notes.append) as second:  # order does not matter
        assert second.path == first.path
    assert notes == [f"sysroot: shared {first.path}"]
    with cache.use([a]) as only_a:  # another set, another sysroot
        assert only_a.path != first.path and not (only_a.path / "usr/include/b.h").exists()
    assert artifacts_key([a, b]) == artifacts_key([b, a]) != artifacts_key([a])


def test_prune_keeps_recent_and_in_use_sysroots(tmp_path: Path) -> None:
    arts = [artifact(tmp_path, f"p{i}", {f"usr/lib/p{i}": str(i)}) for i in range(4)]
    cache = SysrootCache(tmp_path / "sysroots", keep=1)
    # Hold the first sysroot the way a running build does.
    with cache.use([arts[0]]) as held:
        for art in arts[1:]:
            with cache.use([art]):
                pass
        assert held.path.is_dir(), "pruned while in use"
    remaining = [p for p in (tmp_path / "sysroots").iterdir() if p.is_dir()]
    assert len(remaining) == 2  # the held one and the newest
    # Nothing in use now: pruning leaves only the `keep` most recent.
    cache.prune()
    assert len([p for p in (tmp_path / "sysroots").iterdir() if p.is_dir()]) == 1


def test_prune_skips_a_sysroot_locked_by_another_process_style_lock(tmp_path: Path) -> None:
    a = artifact(tmp_path, "a", {"x": "1"})
    b = artifact(tmp_path, "b", {"y": "2"})
    cache = SysrootCache(tmp_path / "sysroots", keep=0)
    with cache.use([a]) as sa:
        key_a = sa.key
    fd = os.open(tmp_path / "sysroots" / f"{key_a}.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        with cache.use([b]):
            pass
        assert (tmp_path / "sysroots" / key_a).is_dir()
    finally:
        os.close(fd)
    cache.prune()
    assert not (tmp_path / "sysroots" / key_a).exists()


def test_build_writing_into_its_sysroot_fails_and_retires_it(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "vandal", """
        name: vandal
        version: "1"
        makedeps: [dep]
        build: |
          echo oops > "$SYSROOT/usr/include/stray.h"
        """)
    write_recipe(recipes, "dep", """
        name: dep
        version: "1"
        """)
    dep = artifact(tmp_path, "dep", {"usr/include/dep.h": "d"})
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build")
    lr = load_tree(recipes).recipes["vandal"]
    from dataclasses import replace

    from iglubuild.target import load_target

    target = replace(load_target(), implicit_build_deps=())
    with pytest.raises(PhaseFailed, match="changed its sysroot"):
        build_package(BuildJob(lr, settings, HostExecutor(), [dep], "s", target=target,
                               epoch=1))
    # The damaged sysroot is out of use: the next build with these deps gets a clean one.
    with SysrootCache(settings.build_dir / "sysroots").use([dep]) as fresh:
        assert not (fresh.path / "usr/include/stray.h").exists()
        assert (fresh.path / "usr/include/dep.h").is_file()


def test_two_builds_needing_the_same_missing_sysroot_make_it_once(tmp_path: Path) -> None:
    """Packages without deps share the empty sysroot; two starting together must not
    both make it (renaming an empty folder over the other's would swap it in use)."""
    import threading

    cache = SysrootCache(tmp_path / "sysroots")
    made: list[str] = []
    real_make = cache._make

    def slow_make(path: Path, artifacts: list[Path], note) -> None:  # type: ignore[no-untyped-def]
        made.append(path.name)
        threading.Event().wait(0.3)  # both builds are past their "is it there?" look
        real_make(path, artifacts, note)

    cache._make = slow_make  # type: ignore[method-assign]
    barrier = threading.Barrier(2)
    seen: list[tuple[int, list[str]]] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            barrier.wait()
            with cache.use([]) as sysroot:
                threading.Event().wait(0.5)  # in use while the other one arrives
                seen.append((sysroot.path.stat().st_ino, sysroot.changed()))
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(made) == 1
    assert len(seen) == 2 and seen[0][0] == seen[1][0]  # one sysroot, shared
    assert seen[0][1] == [] and seen[1][1] == []  # neither saw it change under it
