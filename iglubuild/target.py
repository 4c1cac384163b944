"""The build target (x86_64-linux-musl) as data: toolchain/target.toml.

The host executor cross-compiles with Debian's clang for musl. Which flags
that takes is a fact about the target, not about any package, so it lives in
one small file. From it this module writes per-package compiler wrappers
(`<triple>-cc`, `cc`, ...) whose only job is to add the target flags and the
package's own sysroot to every compile and link: a build system that drops
CFLAGS or LDFLAGS still cannot reach the host's glibc.

C++ is out of reach for now: there is no libc++ built for musl yet, so
`<triple>-c++` compiles but cannot link against a C++ standard library.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shlex
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iglubuild.errors import ToolMissingError, UsageError
from iglubuild.run import which

DEFAULT_TARGET_FILE = Path(__file__).resolve().parent.parent / "toolchain" / "target.toml"


@dataclass(frozen=True)
class Target:
    """What `toolchain/target.toml` says; see that file for the why of each flag."""

    arch: str
    triple: str
    interpreter: str
    cc: str
    cxx: str
    driver_flags: tuple[str, ...]
    cflags: str
    cxxflags: str
    ldflags: str
    tools: dict[str, str] = field(default_factory=dict)
    libc: str = "musl"
    implicit_build_deps: tuple[str, ...] = ()
    source: Path | None = None
    digest: str = ""  # sha256 of the file's bytes; part of the toolchain id

    def flags_for(self, sysroot: Path, work: Path | None = None) -> list[str]:
        """The driver flags with this package's sysroot (and work folder) filled in."""
        flags = [f.replace("{sysroot}", str(sysroot)) for f in self.driver_flags]
        if work is not None:
            flags = [f.replace("{work}", str(work)) for f in flags]
        return [f for f in flags if "{work}" not in f]

    def implicit_deps_for(self, name: str, libc_closure: frozenset[str] = frozenset()) -> list[str]:
        """Build deps every recipe gets without naming them: the C library.

        The libc itself (and anything it needs, `libc_closure`) gets none,
        or the graph would have a cycle.
        """
        if name == self.libc or name in libc_closure:
            return []
        return list(self.implicit_build_deps)


def load_target(path: Path | None = None) -> Target:
    """Read a target definition; a bad file is a one-line UsageError."""
    path = path or DEFAULT_TARGET_FILE
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: target definition not found",
                         hint="toolchain/target.toml ships with iglubuild") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}", hint="the target definition must be TOML") from exc
    try:
        libc = data.get("libc", {})
        return Target(
            arch=data["arch"],
            triple=data["triple"],
            interpreter=data["interpreter"],
            cc=data["cc"],
            cxx=data["cxx"],
            driver_flags=tuple(data["driver_flags"]),
            cflags=data.get("cflags", ""),
            cxxflags=data.get("cxxflags", ""),
            ldflags=data.get("ldflags", ""),
            tools=dict(data.get("tools", {})),
            libc=libc.get("package", "musl"),
            implicit_build_deps=tuple(libc.get("implicit_build_deps", ())),
            source=path,
            digest=hashlib.sha256(raw).hexdigest(),
        )
    except KeyError as exc:
        raise UsageError(f"{path}: missing key {exc.args[0]!r}",
                         hint="see toolchain/target.toml for the expected keys") from exc


def host_triple() -> str:
    """The machine iglubuild runs on, as Iglunix scripts spell HOST_TRIPLE."""
    machine = platform.machine() or "x86_64"
    libc = "musl" if Path(f"/lib/ld-musl-{machine}.so.1").exists() else "gnu"
    return f"{machine}-linux-{libc}"


_WRAPPER = """#!/bin/sh
# Written by iglubuild for one package: the target and its sysroot, always.
exec {driver} {flags} "$@"
"""


def write_wrappers(target: Target, sysroot: Path, bindir: Path,
                   launcher: Sequence[str] = (), work: Path | None = None) -> dict[str, str]:
    """Write compiler wrappers and tool links into `bindir`; return the env they imply.

    `<triple>-cc`, `<triple>-clang`, `cc`, `clang` run the C driver,
    `<triple>-c++`, `c++`, `clang++` the C++ one; `<triple>-ar` etc. run
    the LLVM tools (musl's Makefile calls `$(CROSS_COMPILE)ar`). `bindir`
    goes first on the phase's PATH. `launcher` (e.g. `distcc`) is put in
    front of the compiler: preprocessing and linking stay local, where the
    sysroot is, and only compiles travel.
    """
    bindir.mkdir(parents=True, exist_ok=True)
    flags = shlex.join(target.flags_for(sysroot, work))
    prefix = shlex.join(launcher) + " " if launcher else ""
    t = target.triple
    cc_names = (f"{t}-cc", f"{t}-gcc", f"{t}-clang", "cc", "gcc", "clang")
    cxx_names = (f"{t}-c++", f"{t}-g++", f"{t}-clang++", "c++", "g++", "clang++")
    shadowed = set(cc_names) | set(cxx_names)
    # Absolute driver paths: the wrappers shadow `clang` on PATH themselves.
    # distccd refuses absolute compiler paths (it only runs compilers in its
    # masquerade whitelist), so through a launcher the driver is named by a
    # whitelisted name that the wrappers do not shadow, such as clang-14.
    cc_driver = _tool_path(target.cc)
    cxx_driver = _tool_path(target.cxx)
    if launcher:
        cc_driver = _whitelisted_name(cc_driver, shadowed)
        cxx_driver = _whitelisted_name(cxx_driver, shadowed)
    cc_text = _WRAPPER.format(driver=prefix + shlex.quote(cc_driver), flags=flags)
    cxx_text = _WRAPPER.format(driver=prefix + shlex.quote(cxx_driver), flags=flags)
    for names, text in ((cc_names, cc_text), (cxx_names, cxx_text)):
        for name in names:
            path = bindir / name
            path.write_text(text, encoding="utf-8")
            path.chmod(0o755)
    env = {"CC": f"{t}-cc", "CXX": f"{t}-c++"}
    for var, tool in target.tools.items():
        env[var] = tool
        path = bindir / f"{t}-{var.lower()}"
        path.write_text(f'#!/bin/sh\nexec {shlex.quote(_tool_path(tool))} "$@"\n',
                        encoding="utf-8")
        path.chmod(0o755)
    return env


DISTCC_WHITELIST = Path("/usr/lib/distcc")


def _whitelisted_name(driver: str, shadowed: set[str]) -> str:
    """A name distccd accepts for the same compiler binary as `driver`.

    Falls back to `driver` itself (distcc then compiles locally) when no
    whitelisted name that the wrappers leave alone points at the same file.
    """
    real = os.path.realpath(driver)
    # clang and clang++ are one binary whose mode comes from its name, so only
    # versioned spellings of the same name qualify (clang -> clang-14).
    same_name = re.compile(re.escape(os.path.basename(driver)) + r"(-[0-9.]+)?")
    candidates = sorted(p.name for p in DISTCC_WHITELIST.iterdir()) \
        if DISTCC_WHITELIST.is_dir() else []
    for name in candidates:
        if name in shadowed or not same_name.fullmatch(name):
            continue
        found = which(name)
        if found is not None and os.path.realpath(found) == real:
            return name
    return driver


@functools.lru_cache(maxsize=64)
def _tool_path(name: str) -> str:
    """Absolute path of a host tool (the wrappers shadow some names on PATH)."""
    found = which(name)
    if found is None:
        raise ToolMissingError(f"{name} is not installed",
                               hint="apt-get install clang lld llvm libclang-rt-14-dev")
    return str(found)


def sysroot_env(sysroot: Path) -> dict[str, str]:
    """pkg-config sees only the sysroot's .pc files, with paths prefixed by it."""
    libdir = os.pathsep.join(
        [str(sysroot / "usr/lib/pkgconfig"), str(sysroot / "usr/share/pkgconfig")]
    )
    return {
        "SYSROOT": str(sysroot),
        "PKG_CONFIG_SYSROOT_DIR": str(sysroot),
        "PKG_CONFIG_LIBDIR": libdir,
        "PKG_CONFIG_PATH": libdir,
    }
