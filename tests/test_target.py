"""The target definition, the compiler wrappers it writes, and the ELF check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iglubuild.elf import find_glibc_linked, read_elf
from iglubuild.errors import UsageError
from iglubuild.run import base_env
from iglubuild.target import load_target, write_wrappers


def test_shipped_target_file_loads() -> None:
    t = load_target()
    assert t.triple == "x86_64-linux-musl" and t.interpreter == "/lib/ld-musl-x86_64.so.1"
    assert "--unwindlib=none" in t.driver_flags
    assert t.implicit_deps_for("musl") == []
    assert t.implicit_deps_for("curl") == ["musl", "musl-dev"]
    assert len(t.digest) == 64


@pytest.mark.parametrize("text,message", [
    ("arch = ", "target.toml"),
    ('arch = "x86_64"\n', "missing key 'triple'"),
])
def test_bad_target_file_is_one_line_usage_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "target.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_target(path)


def test_wrappers_compile_for_the_target_with_the_given_sysroot(tmp_path: Path) -> None:
    sysroot, bindir = tmp_path / "sysroot", tmp_path / "bin"
    sysroot.mkdir()
    env = write_wrappers(load_target(), sysroot, bindir)
    (tmp_path / "f.c").write_text("int f(void) { return 42; }\n")
    run_env = base_env({"PATH": f"{bindir}:/usr/bin:/bin"})
    for cc in (env["CC"], "cc", "gcc", "clang"):
        obj = tmp_path / f"{cc}.o"
        subprocess.run([cc, "-c", "f.c", "-o", obj], cwd=tmp_path, env=run_env, check=True)
        assert obj.read_bytes()[:4] == b"\x7fELF"
    # The sysroot really is the only place headers come from: it is empty here.
    (tmp_path / "g.c").write_text("#include <stdio.h>\n")
    proc = subprocess.run(["cc", "-c", "g.c"], cwd=tmp_path, env=run_env, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "stdio.h" in proc.stderr
    # The triple-prefixed binutils names run the LLVM tools.
    out = subprocess.run(["x86_64-linux-musl-ar", "--version"], env=run_env,
                         capture_output=True, text=True, check=True).stdout
    assert "LLVM" in out


def test_elf_reader_sees_glibc_in_host_binaries(tmp_path: Path) -> None:
    info = read_elf(Path("/bin/true"))
    assert info is not None and info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in info.needed and info.glibc_reason
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/true").write_bytes(Path("/bin/true").read_bytes())
    (tmp_path / "bin/script").write_text("#!/bin/sh\n")
    (tmp_path / "bin/short").write_bytes(b"\x7fELF\x02\x01")
    assert read_elf(tmp_path / "bin/short") is None
    assert read_elf(tmp_path / "bin/script") is None
    found = find_glibc_linked(tmp_path)
    assert [p for p, _ in found] == ["bin/true"]


def test_wrappers_name_a_distcc_whitelisted_compiler_with_a_launcher(tmp_path: Path) -> None:
    """distccd refuses absolute compiler paths; through distcc the wrapper must
    call a whitelisted name that it does not shadow itself (Debian: clang-14)."""
    import shutil

    import pytest

    from iglubuild.target import DISTCC_WHITELIST, load_target, write_wrappers

    if not DISTCC_WHITELIST.is_dir() or shutil.which("clang") is None:
        pytest.skip("distcc or clang not installed")
    target = load_target()
    write_wrappers(target, tmp_path / "sysroot", tmp_path / "bin", launcher=("distcc",))
    text = (tmp_path / "bin" / "cc").read_text()
    driver = text.split("distcc ", 1)[1].split()[0]
    assert not driver.startswith("/") and driver not in ("clang", "cc", "gcc")
    assert (DISTCC_WHITELIST / driver).exists()
    plain = tmp_path / "plain"
    write_wrappers(target, tmp_path / "sysroot", plain)
    assert "exec distcc" not in (plain / "cc").read_text()
    assert "/clang" in (plain / "cc").read_text()
