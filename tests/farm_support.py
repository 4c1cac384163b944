"""Test support for the farm: a private dockerd, a build root tarball, a C program.

Used by tests/test_farm.py and bench/farm_speedup.py. Everything here is
real: dockerd from Debian's docker.io, debootstrap, clang, distcc.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DOCKER_DIR = Path(os.environ.get("IGLUBUILD_TEST_DOCKER_DIR", "/tmp/iglu-docker"))


@dataclass
class Dockerd:
    """A dockerd started for tests; stopped by its PID."""

    proc: subprocess.Popen[bytes]
    host: str
    root: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A swarm leaves network namespaces mounted under the exec root after
        # dockerd exits; unmount them so the machine is left as it was found.
        prefix = str(self.root.resolve()) + "/"
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            leftovers = [line.split()[1] for line in mounts
                         if line.split()[1].startswith(prefix)]
        for target in reversed(leftovers):
            subprocess.run(["umount", "-l", target], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_dockerd(root: Path = DOCKER_DIR, timeout: float = 60.0,
                  wrap: Sequence[str] = ()) -> Dockerd:
    """Start dockerd on a private socket, data root and exec root.

    No iptables and no default bridge: containers here use host networking
    only, and a second engine on the machine must not fight over netfilter.
    `wrap` is put in front of the command (e.g. `NetNode.wrap`); it must
    exec dockerd, so that the PID we stop is dockerd's.
    """
    import docker

    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    pidfile = root / "docker.pid"
    if pidfile.exists():
        # A previous session died without stopping its daemon: stop it by PID.
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.2)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        pidfile.unlink(missing_ok=True)
    log = open(root / "dockerd.log", "ab")
    proc = subprocess.Popen(
        [*wrap, "dockerd", "--host", f"unix://{sock}", "--data-root", str(root / "data"),
         "--exec-root", str(root / "exec"), "--pidfile", str(pidfile),
         "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    host = f"unix://{sock}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}; see {root}/dockerd.log")
        try:
            docker.DockerClient(base_url=host, timeout=5).ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"dockerd did not answer; see {root}/dockerd.log") from None
            time.sleep(0.3)
    return Dockerd(proc=proc, host=host, root=root)


# --------------------------------------------------------------------------- a second node

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class NetNode:
    """A second machine on this one: a network namespace of our own, joined to
    this machine's network namespace by a veth pair with addresses of our own
    (198.18.0.0/15 is the range RFC 2544 sets aside for test networks, never
    routed beyond this machine).

    A dockerd started with `wrap` runs inside it with its own hostname (a UTS
    namespace) and a private mount namespace (its mounts vanish with it). So
    do its containerd, the containerd shims and the host-networked
    containers: every process of that node is in the namespace, and
    `kill_all` takes the whole node down at once, and `set_link(False)` makes
    it fall silent, as a power cut would.
    """

    name: str  # network namespace, also the node's hostname
    host_if: str
    node_if: str
    host_addr: str
    node_addr: str
    prefix: int = 30

    @classmethod
    def create(cls, name: str, host_addr: str, node_addr: str, prefix: int = 30) -> NetNode:
        tag = name.removeprefix("iglu-")[-12:]  # interface names have 15 characters
        node = cls(name=name, host_if=f"vh-{tag}", node_if=f"vn-{tag}",
                   host_addr=host_addr, node_addr=node_addr, prefix=prefix)
        node.remove()  # left over from a session that died
        try:
            _ip("netns", "add", name)
            _ip("link", "add", node.host_if, "type", "veth", "peer", "name", node.node_if,
                "netns", name)
            _ip("addr", "add", f"{host_addr}/{prefix}", "dev", node.host_if)
            _ip("link", "set", node.host_if, "up")
            _ip("-n", name, "addr", "add", f"{node_addr}/{prefix}", "dev", node.node_if)
            _ip("-n", name, "link", "set", node.node_if, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            node.remove()
            raise
        return node

    @property
    def wrap(self) -> list[str]:
        """Run a command (which must exec) inside the node, as `start_dockerd(wrap=)`."""
        return ["nsenter", f"--net=/run/netns/{self.name}",
                "unshare", "--mount", "--uts", "--propagation", "slave",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.name]

    def pids(self) -> list[int]:
        if not Path(f"/run/netns/{self.name}").exists():
            return []
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, timeout: float = 30.0) -> list[int]:
        """SIGKILL every process of the node (dockerd, containerd, shims, volunteers)."""
        killed: list[int] = []
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of {self.name} survive SIGKILL: {pids}")
            time.sleep(0.1)
        return sorted(set(killed))

    def set_link(self, up: bool) -> None:
        """Plug the node's end of the veth in or out: out, packets to the node go
        unanswered (connections time out), as with a machine that lost power."""
        _ip("-n", self.name, "link", "set", self.node_if, "up" if up else "down")

    def exists(self) -> dict[str, bool]:
        links = _ip("-br", "link", check=False).stdout.split()
        return {"netns": Path(f"/run/netns/{self.name}").exists(),
                "veth": self.host_if in links or any(w.startswith(self.host_if + "@")
                                                     for w in links)}

    def remove(self) -> None:
        """Kill what still runs inside, then delete the veth pair and the namespace."""
        self.kill_all()
        _ip("link", "del", self.host_if, check=False)
        if Path(f"/run/netns/{self.name}").exists():
            _ip("netns", "del", self.name, check=False)


def buildroot_tarball(cache: Path) -> Path:
    """A tarball of a build root: IGLUBUILD_TEST_BUILDROOT (dir or tar) or a fresh one
    made from the project's manifest by iglubuild.toolchain_root."""
    from iglubuild import toolchain_root

    given = os.environ.get("IGLUBUILD_TEST_BUILDROOT")
    tarball = cache / "buildroot.tar"
    if given and Path(given).is_file():
        return Path(given)
    if tarball.exists():
        return tarball
    if given:
        root = Path(given)
    else:
        project = Path(__file__).resolve().parents[1]
        manifest = toolchain_root.load_manifest(project / toolchain_root.MANIFEST)
        root = toolchain_root.create(cache / "build", manifest)[0].path
    tmp = tarball.with_suffix(".tmp")
    subprocess.run(["tar", "--numeric-owner", "-C", str(root), "--exclude=./proc/*",
                    "--exclude=./dev/*", "-cf", str(tmp), "."], check=True)
    tmp.rename(tarball)
    return tarball


# --------------------------------------------------------------------------- C program

def write_program(dest: Path, nfiles: int = 10, weight: int = 40) -> Path:
    """A real multi-file C program with a Makefile; `weight` scales compile time.

    Each module defines arithmetic kernels that clang -O2 has real work to do
    on (unrolling, vectorising), and main() prints a checksum over all of them,
    so a wrong or missing object changes the output.
    """
    dest.mkdir(parents=True, exist_ok=True)
    decls = []
    for i in range(nfiles):
        funcs = []
        for k in range(weight):
            funcs.append(f"""
static unsigned long k{i}_{k}(const unsigned *v, int n, unsigned long s) {{
    for (int r = 0; r < {3 + k % 5}; r++)
        for (int j = 0; j < n; j++) {{
            s = s * {6364136223846793005 % (1000 + i * 97 + k)}UL + v[j] + (unsigned long)r;
            s ^= s >> {7 + (i + k) % 13};
            if ((s & {1 << (k % 7)}) && j + {k % 4} < n) s += v[j + {k % 4}] * {i + k + 1}U;
        }}
    return s;
}}""")
        calls = "\n".join(f"    s = k{i}_{k}(v, n, s ^ {k});" for k in range(weight))
        (dest / f"mod{i}.c").write_text(
            "#include \"prog.h\"\n" + "".join(funcs) +
            f"\nunsigned long mod{i}(const unsigned *v, int n) {{\n"
            f"    unsigned long s = {i + 1};\n{calls}\n    return s;\n}}\n")
        decls.append(f"unsigned long mod{i}(const unsigned *v, int n);")
    (dest / "prog.h").write_text("#pragma once\n" + "\n".join(decls) + "\n")
    body = "\n".join(f'    total ^= mod{i}(v, 64) + {i}; printf("mod{i} %lx\\n", mod{i}(v, 64));'
                     for i in range(nfiles))
    (dest / "main.c").write_text(
        "#include <stdio.h>\n#include \"prog.h\"\n"
        "int main(void) {\n    unsigned v[64]; unsigned long total = 0;\n"
        "    for (int i = 0; i < 64; i++) v[i] = (unsigned)(i * 2654435761u);\n"
        f"{body}\n    printf(\"total %lx\\n\", total);\n    return 0;\n}}\n")
    objs = " ".join([f"mod{i}.o" for i in range(nfiles)] + ["main.o"])
    (dest / "Makefile").write_text(
        "CC ?= clang\nCFLAGS ?= -O2\n"
        f"OBJS = {objs}\n"
        "prog: $(OBJS)\n\t$(CC) $(CFLAGS) -o $@ $(OBJS)\n"
        "%.o: %.c prog.h\n\t$(CC) $(CFLAGS) -c $< -o $@\n"
        "clean:\n\trm -f prog $(OBJS)\n")
    return dest


def copy_program(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def write_farm_recipes(base: Path, nfiles: int, weight: int) -> Path:
    """Recipes for a real `--farm pkg` build: the shipped musl recipe (its real URL
    and sha256, served from the shared distfiles by a file:// mirror) and
    `farmprog`, an `nfiles`-module C program (write_program) packed as a real
    tarball beside its recipe. Returns the recipes folder."""
    import tarfile
    import textwrap

    project = Path(__file__).resolve().parents[1]
    recipes = base / "recipes"
    shutil.copytree(project / "recipes" / "linux" / "musl", recipes / "linux" / "musl")
    src = write_program(base / "farmprog-1.0", nfiles=nfiles, weight=weight)
    folder = recipes / "test" / "farmprog"
    folder.mkdir(parents=True)
    tarball = folder / "farmprog-1.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src, arcname="farmprog-1.0")
    (folder / "recipe.yaml").write_text(textwrap.dedent(f"""\
        name: farmprog
        version: "1.0"
        description: a multi-file C program whose compiles go to the farm
        license: MIT
        sources:
          - url: file://{tarball}
        build: |
          make prog
        package: |
          install -Dm755 prog "$pkgdir/usr/bin/farmprog"
        """))
    return recipes
