"""PID 1 of a chroot sandbox: perform the mounts, start the phase, reap, exit.

This file runs as a plain script (``python3 -I -S _nsinit.py SPEC``)
under util-linux ``unshare --mount --pid --uts --ipc [--net] --fork --kill-child``, so it
is the first process of fresh mount, PID and network namespaces. It imports
nothing from iglubuild: it starts before any chroot and must be quick.

Why a PID 1 of our own instead of exec'ing the shell: PID 1 ignores signals it
has no handler for and must reap orphans. Keeping this small init as PID 1
means the phase's shell behaves normally, every orphan is reaped, and when
this process exits the kernel kills everything left in the namespace; the
mount namespace (and with it every mount below) disappears with its last
process, even after ``kill -9``.

The SPEC is the sandbox as data, written by iglubuild.executors.sandbox with marshal
(same interpreter on both sides, and no import cost):
``{"root": ..., "mounts": [{kind, target, source, readonly, options}], "argv": [...],
"cwd": ..., "env": {...}, "loopback": bool}``. Mount targets are paths inside the
new root. The host executor uses this init too, with no root and no mounts: its
phases get the PID namespace (nothing outlives them, even a kill -9 of
iglubuild), the host name and the empty network, and see the host's files.
"""

# Only modules that are cheap to import: this runs once per phase, and the
# pure-Python json, socket and signal modules (enum, re) cost tens of ms.
import _signal as signal  # type: ignore[import-not-found]
import _socket
import ctypes
import fcntl
import marshal
import os
import struct
import sys
from typing import Any, NoReturn

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}

# The interpreter itself links libc: no ctypes.util.find_library, which runs
# ldconfig and costs a tenth of a second per phase.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                        ctypes.c_ulong)
_libc.capset.argtypes = (ctypes.c_char_p, ctypes.c_char_p)


def fail(message: str) -> NoReturn:
    sys.stderr.write(f"iglubuild sandbox: {message}\n")
    sys.stderr.flush()
    os._exit(125)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    rc = _libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        fail(f"mount {fstype or 'bind'} {source or ''} on {target}: {os.strerror(err)}")


def ensure_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def ensure_file(path: str) -> None:
    ensure_dir(os.path.dirname(path))
    if not os.path.exists(path):
        with open(path, "a"):
            pass


def bind(source: str, target: str, readonly: bool) -> None:
    if os.path.isdir(source):
        ensure_dir(target)
    else:
        ensure_file(target)
    mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def do_mount(root: str, m: dict[str, Any]) -> None:
    kind = m["kind"]
    # Targets are paths inside the new root; the root mount itself targets "/".
    target = os.path.join(root, m["target"].lstrip("/")) if kind != "overlay" else root
    opts = ",".join(m.get("options") or ())
    if kind == "overlay":
        ensure_dir(target)
        mount("overlay", target, "overlay", 0, opts)
    elif kind == "bind":
        bind(m["source"], target, m.get("readonly", False))
    elif kind == "tmpfs":
        ensure_dir(target)
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, opts or "mode=1777")
    elif kind == "proc":
        ensure_dir(target)
        mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    elif kind == "dev":
        # A minimal /dev: a tmpfs holding bind mounts of a few host device
        # nodes (binding works where mknod may not) and the usual symlinks.
        ensure_dir(target)
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755")
        nodes = [o for o in m.get("options") or () if o != "host-pts"]
        for name in nodes:
            host = "/dev/" + name
            if os.path.exists(host):
                ensure_file(os.path.join(target, name))
                mount(host, os.path.join(target, name), None, MS_BIND)
        for name, dest in DEV_LINKS.items():
            os.symlink(dest, os.path.join(target, name))
        for sub in ("pts", "shm"):
            ensure_dir(os.path.join(target, sub))
        mount("tmpfs", os.path.join(target, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        if "host-pts" in (m.get("options") or ()):
            # An interactive shell: its terminal is one of the host's ptys, so
            # the host's devpts must be visible for tty(1) and job control.
            mount("/dev/pts", os.path.join(target, "pts"), None, MS_BIND | MS_REC)
        else:
            mount("devpts", os.path.join(target, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=620")
    else:
        fail(f"unknown mount kind {kind!r}")
    if kind == "overlay" and m.get("readonly"):
        mount(None, target, None, MS_REMOUNT | MS_RDONLY)


# --- least privilege for the phase ------------------------------------------
#
# The phase runs as uid 0 of its namespaces (files it writes are root's, as a
# package wants them) with only the four file-ownership capabilities that
# tools run as root count on (tar restoring owners, install -o, cp -p), plus
# no_new_privs and a seccomp filter: without CAP_SYS_CHROOT the classic
# double-chroot escape fails, without CAP_MKNOD no device node can be made,
# without CAP_SYS_ADMIN nothing can be mounted; the filter refuses, whatever
# the capabilities, the calls a build never needs and an escape does (mount,
# chroot, pivot_root, namespaces, keyrings, bpf, modules, kexec). The
# docker executor keeps the same four (cap_drop ALL, cap_add these).

# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID
KEPT_CAPS = (0, 1, 3, 4)
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
# x86_64 numbers of the calls refused with EPERM.
DENIED_SYSCALLS = {
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
    "setns": 308, "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "open_by_handle_at": 304, "fsopen": 430, "fsmount": 432,
    "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "swapon": 167,
    "swapoff": 168, "reboot": 169, "acct": 163, "settimeofday": 164, "clock_settime": 227,
    "adjtimex": 159, "iopl": 172, "ioperm": 173, "quotactl": 179, "syslog": 103,
    "perf_event_open": 298, "userfaultfd": 323,
}
SYS_CLONE, SYS_CLONE3 = 56, 435
# clone() flags that make namespaces: refused (fork, threads and vfork pass).
CLONE_NS_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                  | 0x20000000 | 0x40000000 | 0x00000080)


def _seccomp_program() -> bytes:
    """The filter as classic BPF over struct seccomp_data (nr, arch, ip, args)."""
    ld_w, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple[int, int, int, int]] = []

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> None:
        prog.append((code, jt, jf, k))

    denied = sorted(DENIED_SYSCALLS.values())
    # Layout: arch check, nr load, x32 check, one jeq per denied call, clone
    # and clone3 checks, then the return instructions at the end.
    op(ld_w, 4)                                   # A = arch
    op(jeq, AUDIT_ARCH_X86_64, 1, 0)
    op(ret, RET_ERRNO | ENOSYS)                   # another ABI (i386): nothing
    op(ld_w, 0)                                   # A = nr
    n_checks = 1 + len(denied) + 2
    # Offsets below count from the instruction after each jump.
    eperm_at = len(prog) + n_checks + 3           # index of "ret EPERM"
    op(jge, X32_SYSCALL_BIT, eperm_at - (len(prog) + 1), 0)
    for nr in denied:
        op(jeq, nr, eperm_at - (len(prog) + 1), 0)
    op(jeq, SYS_CLONE3, eperm_at + 1 - (len(prog) + 1), 0)   # -> ret ENOSYS
    op(jeq, SYS_CLONE, 0, 2)                      # not clone: -> allow
    op(ld_w, 16)                                  # A = low word of args[0] (flags)
    op(jset, CLONE_NS_FLAGS, eperm_at - (len(prog) + 1), 0)
    op(ret, RET_ALLOW)
    assert len(prog) == eperm_at, (len(prog), eperm_at)
    op(ret, RET_ERRNO | EPERM)
    op(ret, RET_ERRNO | ENOSYS)                   # glibc then falls back to clone()
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def drop_privileges() -> None:
    """Keep only KEPT_CAPS, forbid gaining more, install the seccomp filter."""
    if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        fail(f"clearing ambient capabilities: {os.strerror(ctypes.get_errno())}")
    cap = 0
    while cap < 64:
        if cap not in KEPT_CAPS and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
        cap += 1
    # capset(2), version 3: effective and permitted are the kept ones.
    kept = sum(1 << c for c in KEPT_CAPS)
    header = struct.pack("Ii", 0x20080522, 0)
    data = struct.pack("IIIIII", kept, kept, 0, 0, 0, 0)
    if _libc.capset(header, data) != 0:
        fail(f"capset: {os.strerror(ctypes.get_errno())}")
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
    code = _seccomp_program()
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxP", len(code) // 8,
                                                    ctypes.addressof(buf)))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        fail(f"seccomp: {os.strerror(ctypes.get_errno())}")


def protect_proc(root: str) -> None:
    """/proc/sys read-only and the dangerous files of /proc hidden, as containers do.

    uid 0 may write most of /proc/sys by file mode alone, capabilities or not.
    """
    proc = os.path.join(root, "proc")
    if not os.path.isdir(os.path.join(proc, "sys")):
        return
    sysdir = os.path.join(proc, "sys")
    mount(sysdir, sysdir, None, MS_BIND | MS_REC)
    mount(None, sysdir, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for name in ("sysrq-trigger", "kcore", "keys", "timer_list"):
        target = os.path.join(proc, name)
        if os.path.exists(target):
            mount("/dev/null", target, None, MS_BIND)


def loopback_up() -> None:
    # SIOCGIFFLAGS / SIOCSIFFLAGS on "lo": a fresh network namespace has only
    # a loopback interface, and it starts down.
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), 0x8913, req))[1]
        fcntl.ioctl(sock.fileno(), 0x8914, struct.pack("16sH22x", b"lo", flags | 1))
    finally:
        sock.close()


def main() -> None:
    with open(sys.argv[1], "rb") as fh:
        spec = marshal.load(fh)
    root = spec["root"]
    # unshare already made "/" private; say it again in case it was run without.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for m in spec["mounts"]:
        do_mount(root, m)
    least_privilege = spec.get("least_privilege", False)
    if least_privilege and root is not None:
        protect_proc(root)
    if spec.get("loopback"):
        loopback_up()
    if spec.get("hostname"):
        name = spec["hostname"].encode()
        if _libc.sethostname(name, len(name)) != 0:
            fail(f"sethostname: {os.strerror(ctypes.get_errno())}")

    child = os.fork()
    if child == 0:
        try:
            if root is not None:  # None: the host executor, phases see the host's /
                os.chroot(root)
            os.chdir(spec.get("cwd") or "/")
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            if least_privilege:
                drop_privileges()
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except OSError as exc:
            sys.stderr.write(f"iglubuild sandbox: {spec['argv'][0]}: {exc}\n")
            os._exit(127 if isinstance(exc, FileNotFoundError) else 126)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    # An interactive shell stops on terminal signals in its own job control;
    # PID 1 must not be stopped by them.
    for sig in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)

    status: int | None = None
    while True:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = wstatus
            break
    # Leaving now kills every process left in the PID namespace.
    if status is None:
        os._exit(125)
    code = os.waitstatus_to_exitcode(status)  # negative for a signal
    # PID 1 cannot die of a signal it sends itself, so the phase's death by
    # signal N would only show as exit 128+N, like a script's own exit 128+N.
    # The status file tells the two apart for iglubuild.
    if spec.get("status_file"):
        with open(spec["status_file"], "w") as out:
            out.write(f"{code}\n")
    os._exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
