"""The build root manifest, its id, `toolchain build/status/export`, and the root check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iglubuild import toolchain_root
from iglubuild.errors import UsageError
from iglubuild.toolchain_root import BuildRoot, load_manifest
from tests.chroot.helpers import MANIFEST, PROJECT

CLI_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(PROJECT),
           "LANG": "C.UTF-8"}


def _cli(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iglubuild", *args], cwd=cwd, env=CLI_ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_project_manifest_loads() -> None:
    m = load_manifest(MANIFEST)
    assert m.suite == "bookworm" and m.variant == "minbase"
    for pkg in ("clang", "lld", "libclang-rt-14-dev", "bmake", "distcc", "zstd"):
        assert pkg in m.packages


def test_comments_do_not_change_the_digest_but_packages_do(tmp_path: Path) -> None:
    text = MANIFEST.read_text()
    a = tmp_path / "a.toml"
    a.write_text("# a comment\n" + text)
    b = tmp_path / "b.toml"
    b.write_text(text.replace('"zstd",', '"zstd",\n    "less",'))
    base = load_manifest(MANIFEST)
    assert load_manifest(a).digest == base.digest
    assert load_manifest(b).digest != base.digest
    pk = {"clang": "1:14.0-55.7~deb12u1"}
    tid = toolchain_root.toolchain_id
    assert tid(base, pk) != tid(load_manifest(b), pk)
    assert tid(base, pk) != tid(base, {"clang": "1:15"})
    assert tid(base, pk) == tid(load_manifest(a), pk)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[base]\nsuit = "bookworm"\n', "unknown key 'suit' in [base]"),
        ("[packages]\ninstall = \"clang\"\n", "must be a list of package names"),
        ('[packages]\ninstall = ["Clang"]\n', "invalid Debian package name 'Clang'"),
        ("[pkgs]\n", "unknown table [pkgs]"),
        ("[base\n", "buildroot.toml"),
    ],
)
def test_bad_manifest_is_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "buildroot.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_manifest(path)
    proc = _cli("--build-dir", str(tmp_path / "b"), "toolchain", "--manifest", str(path),
                "status")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")


def test_missing_manifest_names_the_fix(tmp_path: Path) -> None:
    proc = _cli("toolchain", "status", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no build root manifest" in proc.stderr and "hint:" in proc.stderr


def test_needs_root_is_one_line(tmp_path: Path) -> None:
    # A real unprivileged process (nobody), with Debian's python3, not a faked euid.
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root to drop to nobody, and /usr/bin/python3")
    code = ("from pathlib import Path\n"
            "from iglubuild.executors.chroot import ChrootExecutor\n"
            "from iglubuild.errors import NeedsRootError\n"
            "try:\n ChrootExecutor(Path('/'), 'x', Path('/tmp')).check()\n"
            "except NeedsRootError as e: print(e.exit_code, e.message)\n")
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", code],
        env=CLI_ENV, capture_output=True, text=True, cwd="/",
    )
    assert proc.stdout.strip() == "2 the chroot executor needs root (namespaces, mounts, chroot)"


@pytest.mark.slow
@pytest.mark.root
def test_second_build_is_a_no_op_and_changed_manifest_is_not(
    build_root: BuildRoot, tmp_path: Path
) -> None:
    build_dir = build_root.path.parent.parent
    if not build_root.record.is_file():
        pytest.skip("the given build root has no record (not made by iglubuild)")
    stat_before = build_root.path.stat().st_mtime_ns
    start = time.monotonic()
    proc = _cli("--build-dir", str(build_dir), "toolchain", "build")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 10
    assert f"build root {build_root.id} is up to date" in proc.stdout
    assert build_root.path.stat().st_mtime_ns == stat_before
    root, made = toolchain_root.create(build_dir, load_manifest(MANIFEST))
    assert not made and root.id == build_root.id

    changed = tmp_path / "buildroot.toml"
    changed.write_text(MANIFEST.read_text().replace('"zstd",', '"zstd",\n    "less",'))
    assert toolchain_root.find_root(build_dir, load_manifest(changed)) is None
    proc = _cli("--build-dir", str(build_dir), "toolchain", "--manifest", str(changed), "status")
    assert proc.returncode == 1
    assert "does not match the manifest" in proc.stdout

    proc = _cli("--build-dir", str(build_dir), "toolchain", "path")
    assert proc.returncode == 0 and proc.stdout.strip() == str(build_root.path)
    proc = _cli("--build-dir", str(tmp_path / "empty"), "toolchain", "path")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == "hint: run: iglubuild toolchain build"

    proc = _cli("--build-dir", str(build_dir), "toolchain", "status")
    assert proc.returncode == 0
    assert build_root.id in proc.stdout and "matches the manifest" in proc.stdout


@pytest.mark.slow
@pytest.mark.root
def test_installed_versions_are_recorded(build_root: BuildRoot) -> None:
    packages = toolchain_root.installed_packages(build_root.path)
    assert packages["clang-14"].startswith("1:14.0.6")
    assert "libclang-rt-14-dev" in packages
    if build_root.record.is_file():
        assert build_root.packages == packages
        m = load_manifest(MANIFEST)
        if build_root.manifest_digest == m.digest:
            assert build_root.id == toolchain_root.toolchain_id(m, packages)


@pytest.mark.slow
@pytest.mark.root
def test_export_writes_a_tarball_of_the_root(build_root: BuildRoot, tmp_path: Path) -> None:
    build_dir = build_root.path.parent.parent
    if not build_root.record.is_file():
        pytest.skip("the given build root has no record (not made by iglubuild)")
    dest = tmp_path / "root.tar.zst"
    proc = _cli("--build-dir", str(build_dir), "toolchain", "export", str(dest))
    assert proc.returncode == 0, proc.stderr
    listing = subprocess.run(["tar", "--zstd", "-tf", str(dest)], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    assert "./usr/bin/clang-14" in listing
    assert "./etc/iglubuild-toolchain.json" in listing
    assert not list(tmp_path.glob(".root.tar.zst.tmp-*"))


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.environ.get("IGLUBUILD_TEST_FULL_REBUILD") != "1",
                    reason="a second full debootstrap; set IGLUBUILD_TEST_FULL_REBUILD=1")
def test_changed_manifest_builds_a_new_root(tmp_path: Path) -> None:
    small = tmp_path / "small.toml"
    small.write_text('[base]\nsuite = "bookworm"\n[packages]\ninstall = ["zstd"]\n')
    bigger = tmp_path / "bigger.toml"
    bigger.write_text('[base]\nsuite = "bookworm"\n[packages]\ninstall = ["zstd", "less"]\n')
    a, made_a = toolchain_root.create(tmp_path / "b", load_manifest(small))
    b, made_b = toolchain_root.create(tmp_path / "b", load_manifest(bigger))
    assert made_a and made_b and a.id != b.id
    assert "less" in b.packages and "less" not in a.packages
