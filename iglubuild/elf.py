"""Just enough ELF reading to tell a musl binary from a glibc one.

After `package`, every ELF file in pkgdir is checked: a program whose
interpreter is glibc's loader, or anything that needs `libc.so.6`, means the
build escaped the sysroot and used the host's C library. Reading the program
headers and the dynamic section ourselves keeps the check fast (no process
per file) and free of binutils.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14

GLIBC_INTERPRETERS = frozenset({
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-x86-64.so.2",
    "/lib/ld-linux.so.2",
    "/lib/ld-linux-aarch64.so.1",
})
GLIBC_LIBS = frozenset({"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libgcc_s.so.1"})


@dataclass(frozen=True)
class ElfInfo:
    """The dynamic-linking facts of one ELF file."""

    interpreter: str | None
    needed: tuple[str, ...]
    soname: str | None = None  # DT_SONAME: what a shared library provides (xbps shlib-provides)
    elf_type: int = 0  # e_type: ET_EXEC 2, ET_DYN 3 (shared objects and PIE programs)

    @property
    def glibc_reason(self) -> str | None:
        """Why this file is linked against glibc, or None if it is not."""
        if self.interpreter in GLIBC_INTERPRETERS:
            return f"interpreter {self.interpreter}"
        bad = [n for n in self.needed if n in GLIBC_LIBS]
        if bad:
            return "NEEDED " + ", ".join(bad)
        return None


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo | None:
    """Interpreter and NEEDED entries of `path`; None if it is not a readable ELF file."""
    # mmap, not read: only the headers and the dynamic section are touched,
    # which matters for the 100 MB binaries of big packages.
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size < 52:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data[:4] != ELF_MAGIC:
                    return None
                return _parse(data)
    except (OSError, ValueError):
        return None


def _parse(data: mmap.mmap) -> ElfInfo | None:
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    try:
        e_type, = struct.unpack_from(endian + "H", data, 0x10)
        if is64:
            phoff, = struct.unpack_from(endian + "Q", data, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
            ph_fmt = endian + "IIQQQQQQ"  # type flags offset vaddr paddr filesz memsz align
        else:
            phoff, = struct.unpack_from(endian + "I", data, 0x1C)
            phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x2A)
            ph_fmt = endian + "IIIIIIII"  # type offset vaddr paddr filesz memsz flags align
        loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
        interp: str | None = None
        dynamic: tuple[int, int] | None = None
        for i in range(phnum):
            fields = struct.unpack_from(ph_fmt, data, phoff + i * phentsize)
            if is64:
                p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = fields
            else:
                p_type, p_offset, p_vaddr, _, p_filesz, _, _, _ = fields
            if p_type == PT_LOAD:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == PT_INTERP:
                interp = data[p_offset:p_offset + p_filesz].split(b"\0", 1)[0].decode(
                    "utf-8", "replace")
            elif p_type == PT_DYNAMIC:
                dynamic = (p_offset, p_filesz)
        needed: list[str] = []
        soname: str | None = None
        if dynamic is not None:
            needed, soname = _needed(data, dynamic, loads, is64, endian)
        return ElfInfo(interp, tuple(needed), soname, e_type)
    except struct.error:
        return None  # truncated or not really ELF: not something a loader would run


def _needed(data: mmap.mmap, dynamic: tuple[int, int], loads: list[tuple[int, int, int]],
            is64: bool, endian: str) -> tuple[list[str], str | None]:
    fmt = endian + ("qQ" if is64 else "iI")
    size = struct.calcsize(fmt)
    offset, length = dynamic
    entries: list[tuple[int, int]] = []
    for pos in range(offset, offset + length - size + 1, size):
        tag, val = struct.unpack_from(fmt, data, pos)
        if tag == DT_NULL:
            break
        entries.append((tag, val))
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    if strtab is None:
        return [], None
    # DT_STRTAB is a virtual address; the PT_LOAD segments map it to the file.
    base = next((off + strtab - va for va, off, sz in loads if va <= strtab < va + sz), None)
    if base is None:
        return [], None
    names = []
    soname: str | None = None
    for tag, val in entries:
        if tag in (DT_NEEDED, DT_SONAME):
            end = data.find(b"\0", base + val)
            text = data[base + val:end].decode("utf-8", "replace")
            if tag == DT_NEEDED:
                names.append(text)
            else:
                soname = text
    return names, soname


def find_glibc_linked(root: Path) -> list[tuple[str, str]]:
    """(relative path, reason) for every ELF file under `root` linked against glibc."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or not is_elf(path):
            continue
        info = read_elf(path)
        if info is not None and info.glibc_reason:
            found.append((path.relative_to(root).as_posix(), info.glibc_reason))
    return found
