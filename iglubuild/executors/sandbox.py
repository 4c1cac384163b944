"""The sandbox as data: namespaces, mounts and the spec our PID 1 reads.

Used by the chroot executor for every phase and by the build root for the
apt-get steps that make it. The chroot executor runs each phase in private
namespaces over a read-only build root, like this:

A phase runs under util-linux ``unshare --mount --pid --net --fork --kill-child``
with our own small PID 1 (iglubuild/executors/_nsinit.py) that performs the mounts and
starts ``sh -e -c SCRIPT`` chrooted into an overlay of the build root:

- mount namespace: every mount exists only inside it and vanishes with its last
  process, even after ``kill -9``, so the host's mount table never changes;
- PID namespace: when PID 1 exits the kernel kills everything left, so no
  stray daemon or background job outlives a phase;
- network namespace: only a loopback interface, no route out (builds have no
  network; only the fetch stage talks to the network). A phase that sends
  compiles to the distcc farm joins the farm's namespace instead
  (``nsenter --net=PATH`` around it, unshare without ``--net``): a loopback
  on which only iglubuild's relays to the volunteers listen
  (iglubuild.farmnet);
- the root is an overlay whose lower layer is the build root and whose upper
  and work layers live in a scratch folder per phase, so a phase can never
  change the build root; the work folder, sysroot and $pkgdir are bind-mounted
  at their host paths, so paths are identical inside and out.

The sandbox is data: `phase_mounts` returns a list of `Mount`, written down
for the init and printed with --debug.
"""

from __future__ import annotations

import marshal
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from iglubuild.errors import BuildError, NeedsRootError
from iglubuild.executor import Mount, MountKind
from iglubuild.executors import HOSTNAME
from iglubuild.run import require_tool

NSINIT = Path(__file__).with_name("_nsinit.py")
SHELL = "/bin/sh"


def require_root(what: str) -> None:
    """Namespaces, mounts and chroot need root; say so in one line."""
    if os.geteuid() != 0:
        raise NeedsRootError(
            f"{what} needs root (namespaces, mounts, chroot)",
            hint="run iglubuild as root, e.g. with sudo",
        )


def host_tools() -> tuple[str, str]:
    unshare = require_tool("unshare", "util-linux")
    setpriv = require_tool("setpriv", "util-linux")
    return unshare, setpriv


def _overlay_safe(path: Path) -> None:
    # overlayfs options are a comma separated list with ':' between lower layers.
    if any(c in str(path) for c in ",:\\"):
        raise BuildError(
            f"{path}: the chroot executor cannot use a path containing ',', ':' or '\\'",
            hint="move the build directory to a plain path",
        )


DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def base_mounts(host_pts: bool = False) -> list[Mount]:
    """What every sandbox has above its root: /proc, a minimal /dev, a tmpfs /tmp.

    `host_pts` shows the host's /dev/pts (for an interactive shell on a host
    terminal) instead of a private devpts instance.
    """
    dev_opts = DEV_NODES + (("host-pts",) if host_pts else ())
    return [
        Mount(MountKind.PROC, Path("/proc")),
        Mount(MountKind.DEV, Path("/dev"), options=dev_opts),
        Mount(MountKind.TMPFS, Path("/tmp"), options=("mode=1777",)),
    ]


def phase_mounts(
    root: Path,
    scratch: Path,
    writable: Iterable[Path] = (),
    readonly: Iterable[Path] = (),
    extra: Iterable[Mount] = (),
    host_pts: bool = False,
) -> list[Mount]:
    """The mounts of one phase, in the order they are made.

    The overlay comes first (it is the new root), then /proc, /dev and /tmp,
    then the host folders, shallowest first, so a folder under /tmp lands on
    the sandbox's tmpfs and a pkgdir inside the work folder is not hidden.
    """
    for p in (root, scratch):
        _overlay_safe(p)
    overlay = Mount(
        MountKind.OVERLAY,
        Path("/"),
        source=root,
        options=(
            f"lowerdir={root}",
            f"upperdir={scratch / 'upper'}",
            f"workdir={scratch / 'work'}",
        ),
    )
    binds = [Mount(MountKind.BIND, p, source=p) for p in writable]
    binds += [Mount(MountKind.BIND, p, source=p, readonly=True) for p in readonly]
    binds += list(extra)
    binds.sort(key=lambda m: len(m.target.parts))
    return [overlay, *base_mounts(host_pts), *binds]


def _mount_data(m: Mount) -> dict[str, object]:
    d = asdict(m)
    d["kind"] = str(m.kind)  # marshal takes plain str only
    d["target"] = str(m.target)
    d["source"] = str(m.source) if m.source else None
    d["options"] = list(m.options)
    return d


def sandbox_argv(spec_file: Path, network: bool, netns: str | None = None) -> list[str]:
    """The host command that enters fresh namespaces and runs the init with `spec_file`.

    setpriv --pdeathsig KILL ties the sandbox to the iglubuild thread that
    started it: if iglubuild dies, even by kill -9, unshare is killed, and
    its --kill-child takes PID 1 and so the whole namespace with it.
    `netns` (a path nsenter opens, e.g. /proc/<iglubuild pid>/fd/<fd>) is a
    network namespace to join instead of a fresh, empty one: nsenter enters
    it and execs the rest (it forks only for a PID namespace), so setpriv's
    parent is still iglubuild.
    """
    unshare, setpriv = host_tools()
    ns = ["--mount", "--pid", "--uts", "--ipc", "--fork", "--kill-child",
          "--propagation", "private"]
    if not network and netns is None:
        ns.insert(2, "--net")
    argv = [setpriv, "--pdeathsig", "KILL", "--", unshare, *ns,
            sys.executable, "-I", "-S", str(NSINIT), str(spec_file)]
    if netns is not None:
        argv = [require_tool("nsenter", "util-linux"), f"--net={netns}", "--", *argv]
    return argv


def write_spec(
    spec_file: Path,
    root: Path | None,
    mounts: Sequence[Mount],
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    network: bool,
    status_file: Path | None = None,
    least_privilege: bool = False,
) -> None:
    """Write the sandbox description the init reads (root = where the new / is built).

    `root` None keeps the host's / (the host executor: namespaces, no chroot).
    `status_file` receives the command's exit code (negative for a signal).
    `least_privilege` runs the command with no capabilities, no_new_privs, a
    seccomp filter and /proc/sys read-only (build phases; not the apt-get
    steps that make a build root, nor an interactive shell).
    """
    spec = {
        "status_file": str(status_file) if status_file else None,
        "root": str(root) if root is not None else None,
        "mounts": [_mount_data(m) for m in mounts],
        "argv": list(argv),
        "cwd": str(cwd),
        "env": dict(env),
        "loopback": not network,
        "hostname": HOSTNAME,
        "least_privilege": least_privilege,
    }
    # marshal: the init runs with the same interpreter and reads it without
    # importing json (which costs tens of ms per phase); --debug shows it as text.
    spec_file.write_bytes(marshal.dumps(spec))


def describe(mounts: Sequence[Mount], network: bool, netns: str | None = None) -> str:
    """Human-readable sandbox, one mount a line (for --debug)."""
    net = (f", the farm's net {netns} (relays to the volunteers only)" if netns
           else "" if network else ", net (loopback only)")
    lines = ["namespaces: mount, pid, uts, ipc" + net]
    lines += ["  " + m.describe() for m in mounts]
    return "\n".join(lines)


def _host_mountpoints_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix) or point + "/" == prefix:
                found.append(point)
    return found


def remove_scratch(scratch: Path) -> None:
    """Delete a phase's scratch folder, refusing if anything is mounted below it.

    The sandbox's mounts live in its own namespace, so the host never sees a
    mount here; the check guards against deleting through a bind mount into a
    work folder if that ever stops being true.
    """
    if not scratch.exists():
        return
    mounted = _host_mountpoints_under(scratch)
    if mounted:
        raise BuildError(
            f"{scratch}: still has mounts ({', '.join(mounted)}); not deleting it",
            hint="unmount them with umount -R, then delete the folder",
        )
    shutil.rmtree(scratch, ignore_errors=True)
