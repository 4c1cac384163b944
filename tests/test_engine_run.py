"""The build stage under the real scheduler: Engine + iglubuild.session.run_build.

Shell-only recipes (no compiler), so this is fast: what is tested is the
wiring -- dependency artifacts found through the state records and
installed in the dependent's sysroot, sub-packages as deps, the shared make
jobserver reaching `make` inside a phase, failures reported with exit 1.
The C library is left out of the target (no implicit deps) since these
recipes compile nothing.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from iglubuild.build import Engine
from iglubuild.executors.host import HostExecutor
from iglubuild.graph import DepGraph
from iglubuild.package import install_artifact, write_index
from iglubuild.recipe import load_tree
from iglubuild.session import BuildContext, Builder, run_build
from iglubuild.settings import Settings
from iglubuild.target import load_target
from tests.engine_support import write_recipe


def tree_with(recipes: Path) -> None:
    write_recipe(recipes, "base", """
        name: base
        version: "1.0"
        package: |
          mkdir -p "$pkgdir/usr/include" "$pkgdir/usr/lib"
          echo '#define BASE 7' > "$pkgdir/usr/include/base.h"
          echo runtime > "$pkgdir/usr/lib/base.txt"
        subpackages:
          dev: [usr/include]
        """)
    write_recipe(recipes, "top", """
        name: top
        version: "2.0"
        deps: [base]
        makedeps: [base-dev]
        build: |
          cp "$SYSROOT/usr/include/base.h" got.h
          test -f "$SYSROOT/usr/lib/base.txt"
          printf 'all:\\n\\t@echo "flags: $$MAKEFLAGS"\\n' > Makefile
          make > make.out 2>&1
          cat make.out
          ! grep -q "jobserver unavailable" make.out
          grep -q -- "--jobserver-auth" make.out
        package: |
          mkdir -p "$pkgdir/usr/share/top"
          cp got.h "$pkgdir/usr/share/top/"
        """)
    # Declares only top: base comes along as top's run-time dep.
    write_recipe(recipes, "leaf", """
        name: leaf
        version: "1"
        makedeps: [top]
        build: |
          test -f "$SYSROOT/usr/share/top/got.h"
          test -f "$SYSROOT/usr/lib/base.txt"
          test ! -e "$SYSROOT/usr/include/base.h"
        """)
    write_recipe(recipes, "bad", """
        name: bad
        version: "1"
        deps: [top]
        build: |
          echo "this one fails"; exit 2
        """)


def run(settings: Settings, names: list[str], executor: HostExecutor) -> tuple[int, str]:
    tree = load_tree(settings.recipes)
    graph = DepGraph(tree)
    target = replace(load_target(), implicit_build_deps=())

    def make_builder(ctx: BuildContext) -> Builder:
        engine = Engine(settings, executor, tree, ctx.plan, jobserver=ctx.jobserver,
                        on_phase=ctx.on_phase, target=target)
        return Builder(engine.build_one, [executor.terminate])

    err = io.StringIO()
    code = run_build(settings, tree, graph, executor.toolchain_id(), make_builder,
                     names=names, out=io.StringIO(), err=err)
    return code, err.getvalue()


def test_scheduler_builds_through_the_engine(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    tree_with(recipes)
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build", jobs=2)
    executor = HostExecutor()
    code, err = run(settings, ["top"], executor)
    assert code == 0, err
    out = settings.packages_dir()
    assert sorted(p.name for p in out.iterdir()) == [
        "base-1.0-r1.x86_64.tar.zst", "base-dev-1.0-r1.x86_64.tar.zst",
        "top-2.0-r1.x86_64.tar.zst"]
    root = tmp_path / "root"
    install_artifact(out / "top-2.0-r1.x86_64.tar.zst", root)
    assert (root / "usr/share/top/got.h").read_text() == "#define BASE 7\n"
    index = json.loads(write_index(out).read_text())
    assert index["packages"]["top"]["signature"]  # the plan's signature went in
    # Everything is up to date now: a second run builds nothing.
    code, err = run(settings, ["top"], executor)
    assert code == 0 and "nothing to do" in err
    # The run-time deps of a declared dep are in the sysroot; dev packages are not.
    code, err = run(settings, ["leaf"], executor)
    assert code == 0, err


def test_scheduler_reports_a_failed_package(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    tree_with(recipes)
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build", jobs=2)
    code, err = run(settings, ["bad"], HostExecutor())
    assert code == 1
    assert "bad" in err and "exit status 2" in err
    assert (settings.logs_dir / "bad.log").is_file()
    # The summary shows the end of the failed package's log, not only its path.
    summary = err[err.index("failed: bad:"):]
    assert "  | this one fails" in summary
    assert "  | ==> [" in summary  # the engine's own notes are part of the tail
