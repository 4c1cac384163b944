"""Building packages for real: clang cross-compiling C for musl on this host.

musl 1.2.3 (the real upstream tarball) is built once per session as the
first package; its artifacts then form the sysroot of the fixture packages:
a static library, a shared library with a pkg-config file and a dev
sub-package, and a program using both. The fast tests need no musl: their
phases are shell only (failures, stamps, environment, the glibc check).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from iglubuild.build import BuildJob, PhaseFailed, build_package, sysroot_packages, work_paths
from iglubuild.elf import read_elf
from iglubuild.errors import BuildError, FetchError, UsageError
from iglubuild.executors.host import HostExecutor
from iglubuild.package import install_artifact, read_metadata
from iglubuild.recipe import load_tree
from iglubuild.settings import Settings
from iglubuild.target import load_target
from tests.engine_support import (
    MUSL_TARBALL,
    SHARED_DISTFILES,
    musl_recipe_text,
    write_recipe,
)

EPOCH = 1_700_000_000


@dataclass
class Env:
    recipes: Path
    settings: Settings
    executor: HostExecutor

    def build(self, name: str, deps: list[Path] | None = None, signature: str = "sig",
              **kw: object) -> list[Path]:
        lr = load_tree(self.recipes).recipes[name]
        return build_package(BuildJob(lr, self.settings, self.executor, deps or [], signature,
                                      epoch=EPOCH, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def executor() -> HostExecutor:
    ex = HostExecutor()
    ex.check()
    return ex


@pytest.fixture
def env(tmp_path: Path, executor: HostExecutor) -> Env:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build",
                        distfiles=SHARED_DISTFILES, jobs=1)
    return Env(recipes, settings, executor)


def packed(env: Env) -> list[str]:
    folder = env.settings.packages_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- fast: no compiler


def test_failing_build_keeps_log_and_work_folder_and_names_them(env: Env) -> None:
    write_recipe(env.recipes, "broken", """
        name: broken
        version: "1.0"
        build: |
          echo compiling step one
          echo "error: widget.c:3: boom" >&2
          exit 3
        package: |
          echo never reached > "$pkgdir/x"
        """)
    with pytest.raises(PhaseFailed) as info:
        env.build("broken")
    err = info.value
    paths = work_paths(env.settings, "broken")
    assert err.phase == "build" and "exit status 3" in err.message
    lines = err.lines()
    assert any("error: widget.c:3: boom" in line for line in lines)
    assert any("compiling step one" in line for line in lines)
    assert f"log: {paths.log}" in lines and f"work folder: {paths.work}" in lines
    assert "--from build" in (err.hint or "")
    assert paths.log.is_file() and "error: widget.c:3: boom" in paths.log.read_text()
    assert paths.work.is_dir() and paths.stamp("unpack").exists()
    assert not paths.stamp("build").exists()
    assert packed(env) == []
    assert err.exit_code == 1


def test_success_removes_work_folder_unless_kept(env: Env) -> None:
    write_recipe(env.recipes, "meta", """
        name: meta
        version: "2.0"
        release: 3
        package: |
          mkdir -p "$pkgdir/etc"
          echo hi > "$pkgdir/etc/meta.conf"
        backup: [etc/meta.conf]
        """)
    arts = env.build("meta", signature="s1")
    assert [a.name for a in arts] == ["meta-2.0-r3.x86_64.tar.zst"]
    assert not work_paths(env.settings, "meta").work.exists()
    meta = read_metadata(arts[0])
    assert meta["signature"] == "s1" and meta["backup"] == ["etc/meta.conf"]
    env.build("meta", keep_work=True)
    assert (work_paths(env.settings, "meta").pkgdir / "etc/meta.conf").is_file()


def test_phase_environment_is_whitelisted_and_complete(env: Env,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGLUBUILD_LEAK_CHECK", "leaked")
    write_recipe(env.recipes, "envdump", """
        name: envdump
        version: "0.1"
        package: |
          # Beside $pkgdir, not in it: a package naming the build's folders is refused.
          env > "$pkgdir/../env.txt"
          command -v cc > "$pkgdir/../cc.txt"
          pwd > "$pkgdir/../pwd.txt"
          bad --gmake echo shimmed > "$pkgdir/bad.txt"
        """)
    env.build("envdump", keep_work=True, jobs=3)
    paths = work_paths(env.settings, "envdump")
    seen = dict(line.split("=", 1) for line in (paths.work / "env.txt").read_text().splitlines()
                if "=" in line)
    assert "IGLUBUILD_LEAK_CHECK" not in seen
    for var in ("pkgname pkgver pkgdir srcdir ARCH TRIPLE HOST_TRIPLE JOBS CC CXX CFLAGS "
                "CXXFLAGS LDFLAGS MAKEFLAGS PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH "
                "PKG_CONFIG_LIBDIR SOURCE_DATE_EPOCH").split():
        assert var in seen, var
    assert seen["pkgname"] == "envdump" and seen["pkgver"] == "0.1"
    assert seen["pkgdir"] == str(paths.pkgdir) and seen["JOBS"] == "3"
    assert seen["MAKEFLAGS"] == "-j3" and seen["TRIPLE"] == "x86_64-linux-musl"
    sysroot = seen["SYSROOT"]
    assert Path(sysroot).parent == env.settings.build_dir / "sysroots"
    assert seen["PKG_CONFIG_SYSROOT_DIR"] == sysroot
    assert seen["SOURCE_DATE_EPOCH"] == str(EPOCH)
    # `cc` is the wrapper pinning the target and this package's sysroot.
    assert (paths.work / "cc.txt").read_text().strip() == str(paths.bindir / "cc")
    wrapper = (paths.bindir / seen["CC"]).read_text()
    assert f"--sysroot={sysroot}" in wrapper and "-target x86_64-linux-musl" in wrapper
    assert "--unwindlib=none" in wrapper
    assert (paths.work / "pwd.txt").read_text().strip() == seen["srcdir"]
    # Iglunix's `bad --gmake CMD` runs CMD.
    assert (paths.pkgdir / "bad.txt").read_text() == "shimmed\n"


def test_launcher_wraps_compiles_unless_no_distcc(env: Env, tmp_path: Path) -> None:
    """A real launcher script in front of clang, as distcc would be."""
    launcher = tmp_path / "launch"
    launcher.write_text('#!/bin/sh\necho "$@" >> "$LAUNCH_LOG"\nexec "$@"\n')
    launcher.chmod(0o755)
    log = tmp_path / "launch.log"
    body = """
        name: {name}
        version: "1"
        {options}
        build: |
          printf 'int f(void) {{ return 1; }}\\n' > f.c
          $CC -c f.c -o f.o
        """
    write_recipe(env.recipes, "farmed", body.format(name="farmed", options=""))
    write_recipe(env.recipes, "local", body.format(name="local", options="options: [no-distcc]"))
    env.build("farmed", launcher=[str(launcher)], extra_env={"LAUNCH_LOG": str(log)})
    calls = log.read_text().splitlines()
    # Through a launcher the driver is named as distccd whitelists it (clang-14).
    assert len(calls) == 1 and re.match(r"clang-[0-9]+ -target x86_64-linux-musl", calls[0])
    assert calls[0].endswith("-c f.c -o f.o")
    env.build("local", launcher=[str(launcher)], extra_env={"LAUNCH_LOG": str(log)})
    assert len(log.read_text().splitlines()) == 1  # no-distcc: the launcher was left out


def test_glibc_linked_binary_fails_the_build(env: Env) -> None:
    write_recipe(env.recipes, "hostleak", """
        name: hostleak
        version: "1"
        package: |
          mkdir -p "$pkgdir/usr/bin"
          cp /bin/true "$pkgdir/usr/bin/true"
        """)
    with pytest.raises(PhaseFailed, match="linked against glibc") as info:
        env.build("hostleak")
    assert "usr/bin/true" in info.value.message
    assert "ld-linux-x86-64.so.2" in info.value.message
    assert packed(env) == []


def test_a_package_naming_the_build_folders_fails_the_build(env: Env) -> None:
    """A path into this machine's sysroot or work folder (a RUNPATH, a -L in a
    *-config script) is refused, wherever in a file it sits, naming the file."""
    write_recipe(env.recipes, "pathleak", """
        name: pathleak
        version: "1"
        package: |
          mkdir -p "$pkgdir/usr/bin" "$pkgdir/usr/share/pathleak"
          # Past the first MiB piece, so the search must carry across pieces.
          head -c 1048570 /dev/zero > "$pkgdir/usr/share/pathleak/big"
          printf '%s/usr/lib' "$SYSROOT" >> "$pkgdir/usr/share/pathleak/big"
          printf '#!/bin/sh\\necho -L%s/usr/lib\\n' "$SYSROOT" > "$pkgdir/usr/bin/pathleak-config"
          echo fine > "$pkgdir/usr/share/pathleak/clean"
        """)
    with pytest.raises(PhaseFailed, match="name the build's sysroot") as info:
        env.build("pathleak")
    assert "2 file(s)" in info.value.message and "usr/bin/pathleak-config" in info.value.message
    assert "$SYSROOT" in info.value.message  # how to fix it
    log = work_paths(env.settings, "pathleak").log.read_text()
    assert "names the build's sysroot" in log and "usr/share/pathleak/big" in log
    assert "clean" not in log.split("package done")[-1]
    assert packed(env) == []


def test_libtool_archives_are_dropped_unless_kept(env: Env) -> None:
    body = """
        name: {name}
        version: "1"
        {options}
        package: |
          mkdir -p "$pkgdir/usr/lib"
          echo "libdir='/usr/lib'" > "$pkgdir/usr/lib/lib{name}.la"
          echo lib > "$pkgdir/usr/lib/lib{name}.a"
        """
    write_recipe(env.recipes, "dropla", body.format(name="dropla", options=""))
    write_recipe(env.recipes, "keepla", body.format(
        name="keepla", options="options: [keep-libtool-archives]"))
    contents = {}
    for name in ("dropla", "keepla"):
        artifact, = env.build(name)
        contents[name] = sorted(install_artifact(artifact, env.settings.build_dir / name))
    assert [p for p in contents["dropla"] if p.startswith("usr/lib")] == [
        "usr/lib", "usr/lib/libdropla.a"]
    assert "usr/lib/libkeepla.la" in contents["keepla"]
    log = work_paths(env.settings, "dropla").log.read_text()
    assert "removed libtool archive usr/lib/libdropla.la" in log


def test_no_check_option_skips_check(env: Env) -> None:
    body = """
        name: {name}
        version: "1"
        {options}
        check: |
          echo check ran; exit 1
        """
    write_recipe(env.recipes, "checked", body.format(name="checked", options=""))
    write_recipe(env.recipes, "unchecked",
                 body.format(name="unchecked", options="options: [no-check]"))
    with pytest.raises(PhaseFailed) as info:
        env.build("checked")
    assert info.value.phase == "check"
    assert env.build("unchecked")
    assert "skipped (no-check)" in work_paths(env.settings, "unchecked").log.read_text()


def test_stamps_resume_and_from_phase(env: Env) -> None:
    write_recipe(env.recipes, "resumable", """
        name: resumable
        version: "1"
        build: |
          echo built >> build-count
        package: |
          test -f allow
          cp build-count "$pkgdir/"
        """)
    paths = work_paths(env.settings, "resumable")
    with pytest.raises(PhaseFailed) as info:
        env.build("resumable", signature="A")
    assert info.value.phase == "package" and paths.stamp("build").exists()
    srcdir = Path((paths.work / "srcdir").read_text())
    (srcdir / "allow").touch()
    # Same inputs: the finished build phase is not run again.
    env.build("resumable", signature="A", keep_work=True)
    assert (srcdir / "build-count").read_text() == "built\n"
    # --from build: build runs again on the kept work folder.
    env.build("resumable", signature="A", keep_work=True, from_phase="build")
    assert (srcdir / "build-count").read_text() == "built\nbuilt\n"
    # Other inputs: the old work folder is thrown away and everything reruns.
    with pytest.raises(PhaseFailed):
        env.build("resumable", signature="B")
    assert (srcdir / "build-count").read_text() == "built\n"
    with pytest.raises(UsageError, match="unknown phase"):
        env.build("resumable", from_phase="compile")


def test_sources_and_patches_are_unpacked(env: Env) -> None:
    write_recipe(env.recipes, "patched", """
        name: patched
        version: "1.0"
        sources:
          - url: TARBALL_URL
          - file: extra.txt
        patches: [fix.patch]
        package: |
          mkdir -p "$pkgdir/usr/share"
          cp msg.txt "$pkgdir/usr/share/msg.txt"
          cp ../extra.txt "$pkgdir/usr/share/extra.txt"
        """, files={"msg.txt": "hello\n"})
    folder = env.recipes / "test" / "patched"
    (folder / "extra.txt").write_text("extra\n")
    (folder / "fix.patch").write_text(
        "--- a/msg.txt\n+++ b/msg.txt\n@@ -1 +1 @@\n-hello\n+hello, patched\n")
    env.build("patched", keep_work=True)
    pkgdir = work_paths(env.settings, "patched").pkgdir
    assert (pkgdir / "usr/share/msg.txt").read_text() == "hello, patched\n"
    assert (pkgdir / "usr/share/extra.txt").read_text() == "extra\n"


def test_terminate_stops_a_running_build(env: Env) -> None:
    write_recipe(env.recipes, "slowpoke", """
        name: slowpoke
        version: "1"
        build: |
          touch started
          sleep 60
        """)
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            env.build("slowpoke")
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            errors.append(exc)

    t = threading.Thread(target=runner)
    t.start()
    paths = work_paths(env.settings, "slowpoke")
    deadline = time.monotonic() + 120  # generous: a loaded machine may be slow to start it
    while not list(paths.src.rglob("started")):
        assert time.monotonic() < deadline and t.is_alive(), f"the build never started: {errors}"
        time.sleep(0.02)
    env.executor.terminate()
    t.join(60)
    # Known race (iglubuild/executors/host.py): run_phase records the process only
    # after Popen returns, so a terminate() landing in between misses it.
    assert not t.is_alive(), "build still running 60 s after terminate()"
    assert len(errors) == 1 and isinstance(errors[0], PhaseFailed)
    assert "killed by SIGTERM" in errors[0].message and paths.work.is_dir()


def test_parallel_builds_share_one_executor(env: Env, tmp_path: Path) -> None:
    """Two builds through one executor run their phases at the same time.

    Shown by a rendezvous rather than by a stopwatch: each build phase marks
    itself running and then waits for the other's mark. Had the executor run
    the phases one after the other, the first would wait for a phase that has
    not started and give up (exit 1) -- however fast or loaded the machine is.
    """
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    pair = {"par-a": "par-b", "par-b": "par-a"}
    for name, other in pair.items():
        write_recipe(env.recipes, name, f"""
            name: {name}
            version: "1"
            build: |
              touch "{rendezvous}/{name}"
              i=0
              while [ ! -e "{rendezvous}/{other}" ]; do
                i=$((i + 1))
                if [ $i -gt 2400 ]; then echo "{other} never ran beside {name}" >&2; exit 1; fi
                sleep 0.05
              done
            package: |
              mkdir -p "$pkgdir/usr/share"
              echo {name} > "$pkgdir/usr/share/{name}"
            """)
    results: dict[str, list[Path]] = {}
    errors: list[BaseException] = []

    def runner(name: str) -> None:
        try:
            results[name] = env.build(name)
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(n,)) for n in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)
    assert errors == []  # neither phase timed out waiting: they overlapped
    assert sorted(p.name for p in rendezvous.iterdir()) == ["par-a", "par-b"]
    assert packed(env) == ["par-a-1-r1.x86_64.tar.zst", "par-a-1_1.x86_64-musl.xbps",
                           "par-b-1-r1.x86_64.tar.zst", "par-b-1_1.x86_64-musl.xbps"]
    assert read_metadata(results["par-b"][0])["name"] == "par-b"


def test_missing_source_is_a_fetch_error(env: Env) -> None:
    write_recipe(env.recipes, "nosource", """
        name: nosource
        version: "1"
        sources:
          - url: file:///nonexistent/nosource-1.tar.gz
        """)
    with pytest.raises(FetchError, match="nosource-1.tar.gz") as info:
        env.build("nosource")
    assert info.value.exit_code == 3


# ---------------------------------------------------------------- slow: real C for musl


@pytest.fixture(scope="session")
def musl_artifacts(tmp_path_factory: pytest.TempPathFactory, executor: HostExecutor
                   ) -> list[Path]:
    """musl 1.2.3 built once per session with the real upstream tarball.

    Set IGLUBUILD_TEST_CACHE to a folder to keep the artifacts between
    sessions (keyed by the recipe text and the toolchain id).
    """
    if not MUSL_TARBALL.is_file():
        pytest.skip(f"{MUSL_TARBALL} not present")
    text = musl_recipe_text()
    key = hashlib.sha256((text + executor.toolchain_id()).encode()).hexdigest()[:16]
    cache = os.environ.get("IGLUBUILD_TEST_CACHE")
    base = Path(cache) / f"musl-{key}" if cache else tmp_path_factory.mktemp("musl")
    out = base / "build" / "packages" / "x86_64"
    arts = [out / "musl-1.2.3-r1.x86_64.tar.zst", out / "musl-dev-1.2.3-r1.x86_64.tar.zst"]
    if all(a.is_file() for a in arts):
        return arts
    recipes = base / "recipes"
    (recipes / "base" / "musl").mkdir(parents=True, exist_ok=True)
    (recipes / "base" / "musl" / "recipe.yaml").write_text(text)
    settings = Settings(recipes=recipes, build_dir=base / "build", distfiles=SHARED_DISTFILES)
    lr = load_tree(recipes).recipes["musl"]
    assert sysroot_packages(lr, load_target()) == []  # musl needs no sysroot
    built = build_package(BuildJob(lr, settings, executor, [], "musl-test", epoch=EPOCH))
    assert built == arts
    return arts


LIBANSWER = """
    name: libanswer
    version: "1.0"
    license: MIT
    sources:
      - url: TARBALL_URL
    build: |
      $CC $CFLAGS -c answer.c -o answer.o
      $AR rcs libanswer.a answer.o
    package: |
      install -D -m644 libanswer.a "$pkgdir/usr/lib/libanswer.a"
      install -D -m644 answer.h "$pkgdir/usr/include/answer.h"
    """
LIBANSWER_FILES = {
    "answer.h": "int answer(void);\n",
    "answer.c": '#include "answer.h"\nint answer(void) { return 42; }\n',
}

LIBHELLO = """
    name: libhello
    version: "1.0"
    description: says hello
    license: MIT
    sources:
      - url: TARBALL_URL
    build: |
      $CC $CFLAGS -fPIC -c hello.c -o hello.o
      $CC $LDFLAGS -shared -Wl,-soname,libhello.so.1 -o libhello.so.1 hello.o
    check: |
      test -s libhello.so.1
    package: |
      install -D -m755 libhello.so.1 "$pkgdir/usr/lib/libhello.so.1"
      ln -s libhello.so.1 "$pkgdir/usr/lib/libhello.so"
      install -D -m644 hello.h "$pkgdir/usr/include/hello/hello.h"
      install -D -m644 hello.pc "$pkgdir/usr/lib/pkgconfig/hello.pc"
    subpackages:
      dev: [usr/include, usr/lib/pkgconfig, usr/lib/libhello.so]
    """
LIBHELLO_FILES = {
    "hello.h": "void hello(const char *who);\n",
    "hello.c": ('#include <stdio.h>\n#include "hello.h"\n'
                'void hello(const char *who) { printf("hello, %s, from libhello\\n", who); }\n'),
    # The header is in a subfolder: the program finds it only through pkg-config.
    "hello.pc": ("prefix=/usr\nlibdir=${prefix}/lib\nincludedir=${prefix}/include\n"
                 "Name: hello\nDescription: greeting\nVersion: 1.0\n"
                 "Libs: -L${libdir} -lhello\nCflags: -I${includedir}/hello\n"),
}

GREET = """
    name: {name}
    version: "1.0"
    deps: {deps}
    makedeps: {makedeps}
    sources:
      - url: TARBALL_URL
    build: |
      $CC $CFLAGS $(pkg-config --cflags hello) -o greet greet.c $LDFLAGS \\
        $(pkg-config --libs hello) -lanswer
      $CC $CFLAGS -static -o answer-static answer-static.c -lanswer
    package: |
      install -D -m755 greet "$pkgdir/usr/bin/greet"
      install -D -m755 answer-static "$pkgdir/usr/bin/answer-static"
    """
GREET_FILES = {
    "greet.c": ('#include <stdio.h>\n#include <hello.h>\n#include <answer.h>\n'
                'int main(void) { hello("world"); printf("answer %d\\n", answer()); return 0; }\n'),
    "answer-static.c": ('#include <stdio.h>\n#include <answer.h>\n'
                        'int main(void) { printf("static answer %d\\n", answer()); return 0; }\n'),
}


@pytest.fixture
def c_tree(env: Env) -> Env:
    write_recipe(env.recipes, "libanswer", LIBANSWER, LIBANSWER_FILES)
    write_recipe(env.recipes, "libhello", LIBHELLO, LIBHELLO_FILES)
    write_recipe(env.recipes, "greet",
                 GREET.format(name="greet", deps="[libhello]",
                              makedeps="[libhello-dev, libanswer]"), GREET_FILES)
    # Uses libhello without declaring it.
    write_recipe(env.recipes, "sneaky",
                 GREET.format(name="sneaky", deps="[]", makedeps="[libanswer]"), GREET_FILES)
    return env


@pytest.mark.slow
def test_musl_is_the_first_package(musl_artifacts: list[Path], tmp_path: Path) -> None:
    main, dev = (read_metadata(a) for a in musl_artifacts)
    main_files = {f["path"]: f for f in main["files"]}
    dev_files = {f["path"] for f in dev["files"]}
    assert main_files["lib/ld-musl-x86_64.so.1"]["type"] == "file"
    assert main_files["usr/bin/ldd"]["target"] == "../../lib/ld-musl-x86_64.so.1"
    assert {"usr/include/stdio.h", "usr/lib/libc.a", "usr/lib/crt1.o",
            "usr/lib/libc.so"} <= dev_files
    assert not any(p.startswith("usr/include") for p in main_files)
    assert dev["deps"] == ["musl"]
    # The loader is musl's libc.so and runs as a program (it prints its usage).
    root = tmp_path / "root"
    for a in musl_artifacts:
        install_artifact(a, root)
    proc = subprocess.run([root / "lib/ld-musl-x86_64.so.1"], capture_output=True, text=True)
    assert "musl libc (x86_64)" in proc.stderr and "Version 1.2.3" in proc.stderr


def build_c_tree(env: Env, musl: list[Path]) -> dict[str, list[Path]]:
    answer = env.build("libanswer", musl)
    hello = env.build("libhello", musl)
    greet = env.build("greet", [*musl, hello[0], hello[1], answer[0]])
    return {"libanswer": answer, "libhello": hello, "greet": greet}


@pytest.mark.slow
def test_program_using_static_and_shared_library_runs(c_tree: Env, musl_artifacts: list[Path],
                                                       tmp_path: Path) -> None:
    built = build_c_tree(c_tree, musl_artifacts)
    hello_main, hello_dev = built["libhello"]
    assert [a.name for a in built["libhello"]] == ["libhello-1.0-r1.x86_64.tar.zst",
                                                  "libhello-dev-1.0-r1.x86_64.tar.zst"]
    main_files = {f["path"] for f in read_metadata(hello_main)["files"]}
    dev_files = {f["path"] for f in read_metadata(hello_dev)["files"]}
    assert "usr/lib/libhello.so.1" in main_files
    assert {"usr/lib/libhello.so", "usr/include/hello/hello.h",
            "usr/lib/pkgconfig/hello.pc"} <= dev_files
    assert not main_files & {"usr/lib/libhello.so", "usr/include/hello/hello.h"}

    # The runtime closure only (no -dev): musl, libhello, greet.
    root = tmp_path / "root"
    for art in (musl_artifacts[0], hello_main, built["greet"][0]):
        install_artifact(art, root)
    greet = root / "usr/bin/greet"
    info = read_elf(greet)
    assert info is not None and info.interpreter == "/lib/ld-musl-x86_64.so.1"
    assert set(info.needed) == {"libhello.so.1", "libc.so"}
    expected = "hello, world, from libhello\nanswer 42\n"
    proc = subprocess.run([root / "lib/ld-musl-x86_64.so.1", "--library-path", root / "usr/lib",
                           greet], capture_output=True, text=True, check=True)
    assert proc.stdout == expected
    if os.geteuid() == 0 and shutil.which("chroot"):
        # Inside the root the interpreter path and library search are the real ones.
        proc = subprocess.run(["chroot", root, "/usr/bin/greet"], capture_output=True,
                              text=True, check=True)
        assert proc.stdout == expected
    static = root / "usr/bin/answer-static"
    static_info = read_elf(static)
    assert static_info is not None and static_info.interpreter is None
    assert subprocess.run([static], capture_output=True, text=True).stdout == "static answer 42\n"


@pytest.mark.slow
def test_rebuild_gives_identical_artifacts(c_tree: Env, musl_artifacts: list[Path]) -> None:
    first = c_tree.build("libhello", musl_artifacts)
    saved = [a.read_bytes() for a in first]
    second = c_tree.build("libhello", musl_artifacts)
    assert [a.read_bytes() for a in second] == saved


@pytest.mark.slow
def test_undeclared_dependency_fails(c_tree: Env, musl_artifacts: list[Path]) -> None:
    answer = c_tree.build("libanswer", musl_artifacts)
    hello = c_tree.build("libhello", musl_artifacts)
    # libhello is installed nowhere the sneaky build can see: the compile fails.
    with pytest.raises(PhaseFailed) as info:
        c_tree.build("sneaky", [*musl_artifacts, answer[0]])
    assert info.value.phase == "build"
    assert any("hello.h" in line for line in info.value.tail)
    # And a scheduler handing it libhello anyway is refused before any phase runs.
    with pytest.raises(BuildError, match="libhello-dev is not a declared dependency"):
        c_tree.build("sneaky", [*musl_artifacts, answer[0], hello[1]])


@pytest.mark.slow
def test_host_library_smuggled_in_by_path_is_caught(c_tree: Env, musl_artifacts: list[Path]
                                                    ) -> None:
    """`-L/usr/lib/x86_64-linux-gnu` links the host's libz (and with it libc.so.6).

    The compiler cannot stop an explicit path; the ELF check after `package` does.
    """
    write_recipe(c_tree.recipes, "escape", """
        name: escape
        version: "1"
        build: |
          printf '#include <stdio.h>\\nint main(void){puts("x");}\\n' > x.c
          cc -o x x.c -L/usr/lib/x86_64-linux-gnu -lz
        package: |
          install -D -m755 x "$pkgdir/usr/bin/x"
        """)
    with pytest.raises(PhaseFailed, match="linked against glibc") as info:
        c_tree.build("escape", musl_artifacts)
    assert "usr/bin/x" in info.value.message and "libc.so.6" in info.value.message
