"""distcc as a build uses it: volunteers, the phase environment, identity, the tally.

A volunteer is one distccd (`Volunteer`; the farm finds them in its swarm).
`phase_additions` and `build_env` turn usable volunteers (`FarmHosts`) into
the variables a build phase needs. A volunteer's compiler identity is
measured, not declared: a fixed probe file is compiled through that
volunteer's distccd and the object's sha256 compared with the local
compiler's (`volunteer_identity`, `local_identity`). Two compilers that
produce the same object for the probe are interchangeable for distcc's
purposes (it only ever sends them preprocessed code); a different clang, a
wrapper adding flags or another target default all change the hash.
After a build, `tally_compiles` reads back from distcc's own client log how
many compiles went to the farm, and `CompileRecorder` is the post-build
step that notes it in the package log and sums it over a run.
"""

from __future__ import annotations

import hashlib
import re
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iglubuild.run import base_env, require_tool, run

if TYPE_CHECKING:
    from iglubuild.build import Built
    from iglubuild.runrecord import FarmShare

# The flags every build uses for the musl target; the probe is compiled with
# them so that the identity covers the code generation builds will get.
PROBE_FLAGS = ("-target", "x86_64-linux-musl", "-O2")  # distcc keeps an explicit -target
PROBE_SOURCE = """\
/* iglubuild compiler identity probe: exercises the optimiser and codegen. */
struct node { struct node *next; unsigned long key; double weight; };
static unsigned long mix(unsigned long h, unsigned long v) {
    h ^= v + 0x9e3779b97f4a7c15UL + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdUL;
}
unsigned long iglubuild_probe(const struct node *n, int rounds) {
    unsigned long h = 0;
    double w = 0.0;
    for (int r = 0; r < rounds; r++)
        for (const struct node *p = n; p; p = p->next) {
            h = mix(h, p->key + (unsigned long)r);
            w += p->weight * (double)r;
        }
    return h ^ (unsigned long)w;
}
"""


@dataclass
class Volunteer:
    """One running distccd of the farm, as seen from the swarm API."""

    task_id: str
    slot: int
    node: str
    address: str
    port: int
    state: str
    container_id: str = ""
    slots: int = 1
    identity: str | None = None
    compiler: str | None = None
    jobs_served: int | None = None
    problem: str | None = None

    @property
    def stats_port(self) -> int:
        return self.port + 1

    @property
    def host_spec(self) -> str:
        """This volunteer as a DISTCC_HOSTS entry."""
        return f"{self.address}:{self.port}/{self.slots}"


@dataclass
class FarmHosts:
    """The usable part of a live farm, ready for a build."""

    volunteers: list[Volunteer]
    jobs: int
    local_identity: str
    excluded: list[Volunteer] = field(default_factory=list)

    @property
    def distcc_hosts(self) -> str:
        return " ".join(v.host_spec for v in self.volunteers)


def read_stats(address: str, stats_port: int, timeout: float = 2.0) -> dict[str, str]:
    """distccd's --stats page as a dict (dcc_compile_ok, dcc_tcp_accept, ...)."""
    data = b""
    with socket.create_connection((address, stats_port), timeout=timeout) as sock:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    stats = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("dcc_"):
            stats[key] = value.strip()
    return stats


def _compiler_name(obj: bytes) -> str | None:
    """The compiler that produced an object, from its .comment section text."""
    match = re.search(rb"[\x20-\x7e]*clang version [\x20-\x7e]*", obj)
    return match.group(0).decode().strip() if match else None


def _compile_probe(cc: Sequence[str], env: Mapping[str, str], workdir: Path) -> bytes:
    src = workdir / "iglubuild_probe.c"
    out = workdir / "iglubuild_probe.o"
    src.write_text(PROBE_SOURCE, encoding="utf-8")
    out.unlink(missing_ok=True)
    run([*cc, *PROBE_FLAGS, "-c", src.name, "-o", out.name], env=env, cwd=workdir,
        capture=True, timeout=60)
    return out.read_bytes()


def local_identity(compiler: str = "clang") -> tuple[str, str | None]:
    """(identity, compiler name) of the local compiler: the probe object's sha256."""
    require_tool(compiler.split()[0], "clang")
    with tempfile.TemporaryDirectory(prefix="iglubuild-probe-") as tmp:
        obj = _compile_probe(compiler.split(), base_env(), Path(tmp))
    return hashlib.sha256(obj).hexdigest()[:16], _compiler_name(obj)


def volunteer_identity(address: str, port: int,
                       compiler: str = "clang") -> tuple[str, str | None]:
    """(identity, compiler name) measured by compiling the probe on one volunteer.

    Local fallback is switched off, so the object really comes from that
    volunteer; a failure raises CommandError.
    """
    require_tool("distcc")
    with tempfile.TemporaryDirectory(prefix="iglubuild-probe-") as tmp:
        (Path(tmp) / "distcc").mkdir()
        env = base_env({
            "DISTCC_HOSTS": f"{address}:{port}/1",
            "DISTCC_FALLBACK": "0",
            "DISTCC_DIR": str(Path(tmp) / "distcc"),
            "DISTCC_IO_TIMEOUT": "30",
        })
        obj = _compile_probe(["distcc", *compiler.split()], env, Path(tmp))
    return hashlib.sha256(obj).hexdigest()[:16], _compiler_name(obj)


PAUSE_TIME_MSEC = "10"
# A volunteer is offered one compile more than its distccd runs at once
# (`queued`), so the next compile is preprocessed and sent while the current
# one finishes: the volunteer does not idle through the client's start-up,
# the local `clang -E` and the connection between two compiles.
QUEUE_AHEAD = 1
_HOST_SLOTS = re.compile(r"^(?P<host>[^/\s]+)/(?P<slots>\d+)(?P<rest>\S*)$")


def queued(distcc_hosts: str, extra: int = QUEUE_AHEAD) -> str:
    """DISTCC_HOSTS with `extra` more slots on every TCP volunteer.

    distccd answers a connection beyond its --jobs when a compile ends
    (the kernel holds it in the listen backlog, the client's preprocessed
    file in the socket's buffers), so the extra slot is a queue of one
    ready compile per volunteer, not more load. `localhost` is left alone.
    """
    if extra <= 0:
        return distcc_hosts
    out = []
    for entry in distcc_hosts.split():
        m = _HOST_SLOTS.match(entry)
        if m is None or m["host"] == "localhost" or entry.startswith("--"):
            out.append(entry)
        else:
            out.append(f"{m['host']}/{int(m['slots']) + extra}{m['rest']}")
    return " ".join(out)


def phase_additions(hosts: FarmHosts, distcc_dir: Path | None = None,
                    local_slots: int = 0) -> tuple[tuple[str, ...], dict[str, str]]:
    """(launcher, extra_env) for iglubuild.build: `launcher` goes in front of the
    compiler in the phase's compiler wrappers, `extra_env` into the phase env.

    The build engine's wrappers keep the target flags and --sysroot, so only
    DISTCC_HOSTS and distcc's own settings are added here.
    """
    env = build_env(hosts, distcc_dir=distcc_dir, local_slots=local_slots)
    for key in ("CC", "CXX", "JOBS", "MAKEFLAGS"):
        env.pop(key)
    return ("distcc",), env


def build_env(hosts: FarmHosts, cc: str = "clang", cxx: str = "clang++",
              distcc_dir: Path | None = None, local_slots: int = 0,
              queue_ahead: int = 0) -> dict[str, str]:
    """Environment additions that send a build phase's compiles to the farm.

    distcc's default (non-pump) mode preprocesses and links locally against
    the sysroot and ships only preprocessed code, so the volunteers need no
    headers or libraries; a volunteer that fails makes distcc compile locally.
    `local_slots` > 0 lets this machine compile too (listed after the
    volunteers, so distcc fills them first). `queue_ahead` > 0 offers each
    volunteer that many compiles more than it runs at once (`queued`).
    """
    host_list = queued(hosts.distcc_hosts, queue_ahead)
    jobs = hosts.jobs
    if local_slots > 0:
        host_list += f" localhost/{local_slots}"
        jobs += local_slots
    env = {
        "DISTCC_HOSTS": host_list,
        "CC": f"distcc {cc}",
        "CXX": f"distcc {cxx}",
        "JOBS": str(jobs),
        "MAKEFLAGS": f"-j{jobs}",
        # With every slot busy distcc polls for a free one (a fixed sleep
        # between tries of its lock files), by default once a second: a
        # slot freed mid-sleep idles until the next try, half the pause on
        # average, every time. 10 ms costs a few lock attempts a second.
        "DISTCC_PAUSE_TIME_MSEC": PAUSE_TIME_MSEC,
    }
    if distcc_dir is not None:
        # distcc does not create its state folder and, without it, silently
        # compiles everything locally.
        distcc_dir.mkdir(parents=True, exist_ok=True)
        env["DISTCC_DIR"] = str(distcc_dir)
    return env


# distcc's client log (DISTCC_LOG, info level): one "compile from SRC to OBJ"
# per distributable compile, then "compile SRC on HOST completed ok" from the
# host whose result was kept (HOST is the DISTCC_HOSTS entry, or localhost
# after a fallback). Links, -E and autoconf tests never get a "compile from".
# Several distcc processes append to one log; every line is a single write
# and starts with the writer's pid, so lines are matched by pid.
_LOG_LINE = re.compile(r"^distcc\[(\d+)\] (.*)$")
_COMPILE_FROM = re.compile(r"^compile from .* to .*$")
_COMPILED_ON = re.compile(r"^compile .* on (\S+) completed ok$")
_COMPILE_FAILED = re.compile(r"^ERROR: compile .* on \S+ failed")
_EXIT = re.compile(r"^\(dcc_exit\) ")
_EXEC_LOCAL = re.compile(r"^exec on localhost: ")
_EXEC_ON = re.compile(r"^exec on (\S+): ")
_CONNECT_FAILED = re.compile(
    r"^(?:\(\w+\) )?ERROR: (?:nonblocking )?connect to (\S+) failed: (.*)$")
_ERROR = re.compile(r"^(?:\(\w+\) )?ERROR: (.*)$")
_RETRIED = re.compile(r"^\(dcc_build_somewhere\) Warning: remote compilation of .* failed, "
                      r"retrying locally")
_NOT_DISTRIBUTED = re.compile(r"^(?:\(\w+\) )?Warning: failed to distribute(?: .* to (\S+))?, "
                              r"running locally instead")

# Why a compile fell back to the build machine, in the tally's words.
RETRIED_LOCALLY = "compile on volunteer failed, retried locally"
NO_REASON = "compiled locally, distcc logged no reason"
UNFINISHED = "unfinished (the build was stopped mid-compile)"
# distcc's words when every volunteer is busy failing or backed off from
# (DISTCC_BACKOFF_PERIOD after a failure): it logs no more than this.
NO_VOLUNTEER = "failed to distribute: no volunteer usable (distcc backs off from one that failed)"
NOT_DISTRIBUTABLE = "not distributable (linking, -E or -M, conftest, several inputs)"


def _fallback_reason(error: str | None, host: str | None) -> str:
    """A fallback's reason from the last error distcc logged before it."""
    if error is not None:
        m = _CONNECT_FAILED.match(error)
        if m is not None:
            return f"failed to connect to {m.group(1)}: {m.group(2)}"
        text = _ERROR.sub(r"\1", error)
        if "contained no hosts" in text:
            return "no volunteers in DISTCC_HOSTS"
        if "mkdir" in text or "failed to lock" in text:
            return "distcc's state folder (DISTCC_DIR) is not usable"
        return text if host is None else f"{host}: {text}"
    return f"failed to distribute to {host}" if host else NO_VOLUNTEER


@dataclass
class CompileTally:
    """Where a build's compiles ran, counted from distcc's client log.

    `remote` compiles returned an object from a volunteer; `local` ones were
    compiled on the build machine (a volunteer failed or refused, or the
    compile failed remotely and was retried), each under its reason in
    `fallbacks`. `not_distributable` counts distcc's runs that were never
    candidates (links, -E, autoconf's conftest.c): not compiles, not counted
    in `local`.
    """

    remote: int = 0
    local: int = 0
    hosts: dict[str, int] = field(default_factory=dict)  # volunteer address:port -> compiles
    # distcc's complaints about distributing (not about code that does not
    # compile, such as configure probes), first few
    warnings: list[str] = field(default_factory=list)
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> local compiles
    not_distributable: int = 0
    # volunteer -> compiles it failed to take that distcc then sent to another
    retried: dict[str, int] = field(default_factory=dict)

    @property
    def compiles(self) -> int:
        return self.remote + self.local

    def __add__(self, other: CompileTally) -> CompileTally:
        return CompileTally(self.remote + other.remote, self.local + other.local,
                            _add_counts(self.hosts, other.hosts),
                            (self.warnings + other.warnings)[:MAX_WARNINGS],
                            _add_counts(self.fallbacks, other.fallbacks),
                            self.not_distributable + other.not_distributable,
                            _add_counts(self.retried, other.retried))

    def describe(self) -> str:
        """One line for the build summary, e.g. `farm: 812 of 840 compiles remote on 2
        volunteers, 28 local`."""
        return (f"farm: {self.remote} of {self.compiles} compiles remote on "
                f"{len(self.hosts)} volunteer{'s' if len(self.hosts) != 1 else ''}, "
                f"{self.local} local")

    def detail_lines(self) -> list[str]:
        """What follows `describe` at the end of a run: each volunteer's compiles,
        the compiles that fell back to local by distcc's reason, and distcc's
        runs that were never candidates."""
        lines = [f"  {host}: {n} compile{'s' if n != 1 else ''}"
                 for host, n in self.hosts.items()]  # the volunteers' order
        lines += [f"  local, {reason}: {n}"
                  for reason, n in sorted(self.fallbacks.items(), key=lambda kv: (-kv[1], kv[0]))]
        lines += [f"  {host} failed, retried on another volunteer: {n}"
                  for host, n in sorted(self.retried.items())]
        if self.not_distributable:
            lines.append(f"  {NOT_DISTRIBUTABLE}: {self.not_distributable} run"
                         f"{'s' if self.not_distributable != 1 else ''} of distcc")
        return lines

    def to_json(self) -> dict[str, object]:
        return {"remote": self.remote, "local": self.local, "hosts": dict(self.hosts),
                "fallbacks": dict(self.fallbacks),
                "not_distributable": self.not_distributable, "retried": dict(self.retried)}


def _add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out


MAX_WARNINGS = 20


def tally_compiles(log_path: Path, aliases: Mapping[str, str] | None = None,
                   volunteers: Sequence[str] = ()) -> CompileTally:
    """Count a build's remote and local compiles from its DISTCC_LOG file.

    Reads the log distcc wrote because the build phase had DISTCC_LOG set
    (iglubuild.build sets it in the work folder whenever DISTCC_HOSTS is).
    The client's own log is exact for this build, unlike the volunteers'
    counters, which other builds sharing the farm move too. A missing log
    means distcc never ran: nothing was compiled. `aliases` maps the hosts
    distcc was given to the volunteers they stand for: the farm's relays
    (iglubuild.farmnet), `127.0.0.1:port` -> the volunteer's `address:port`,
    in the counts, the reasons and the warnings. `volunteers` are listed in
    `hosts` even with no compile (a volunteer that refused everything).
    """
    aliases = aliases or {}
    tally = CompileTally(hosts={v: 0 for v in volunteers})

    def unalias(text: str) -> str:
        for local, remote in aliases.items():
            text = re.sub(re.escape(local) + r"(?!\d)", remote, text)
        return text

    open_: set[str] = set()  # pids with a distributable compile not yet placed
    # pids whose compile failed on the volunteer: the code is bad (configure
    # probes are meant to fail), and distcc's retry-locally warnings say nothing
    # about the farm
    bad_code: set[str] = set()
    last_error: dict[str, str] = {}  # pid -> distcc's last ERROR line
    reason: dict[str, str] = {}  # pid -> why its open compile went local
    placed: set[str] = set()  # pids whose run of distcc has been counted
    tried: dict[str, str] = {}  # pid -> the volunteer its open compile was last sent to

    def local(pid: str) -> None:
        tally.local += 1
        why = reason.pop(pid, NO_REASON)
        tally.fallbacks[why] = tally.fallbacks.get(why, 0) + 1

    try:
        f = log_path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return tally
    with f:
        for line in f:
            m = _LOG_LINE.match(line.rstrip("\n"))
            if m is None:
                continue
            pid, text = m.groups()
            if _COMPILE_FROM.match(text):
                if pid in open_:  # a pid reused after an unfinished compile
                    reason.setdefault(pid, UNFINISHED)
                    local(pid)
                open_.add(pid)
                placed.add(pid)
                reason.pop(pid, None)
                last_error.pop(pid, None)
                tried.pop(pid, None)
            elif (done := _COMPILED_ON.match(text)) and pid in open_:
                open_.discard(pid)
                host = done.group(1)
                if host == "localhost":
                    local(pid)
                else:
                    # "addr:port/slots,options" -> "addr:port"
                    key = host.split("/", 1)[0]
                    key = aliases.get(key, key)
                    tally.remote += 1
                    tally.hosts[key] = tally.hosts.get(key, 0) + 1
                    reason.pop(pid, None)
            elif _EXIT.match(text):
                bad_code.discard(pid)
                if pid in open_:
                    open_.discard(pid)
                    local(pid)  # failed everywhere: it was last tried here
                placed.discard(pid)
                tried.pop(pid, None)
                last_error.pop(pid, None)
                reason.pop(pid, None)
            elif _EXEC_LOCAL.match(text):
                if pid not in open_ and pid not in placed:
                    tally.not_distributable += 1
                    placed.add(pid)
                tried.pop(pid, None)
            elif (sent := _EXEC_ON.match(text)) and pid in open_:
                # distcc gives a volunteer that drops the connection up and
                # sends the compile to another one, logging no error
                host = sent.group(1).split("/", 1)[0]
                host = aliases.get(host, host)
                if pid in tried and tried[pid] != host:
                    tally.retried[tried[pid]] = tally.retried.get(tried[pid], 0) + 1
                tried[pid] = host
            else:
                if _COMPILE_FAILED.match(text):
                    bad_code.add(pid)
                    if pid in open_:
                        reason.setdefault(pid, RETRIED_LOCALLY)
                elif _RETRIED.match(text) and pid in open_:
                    reason.setdefault(pid, RETRIED_LOCALLY)
                elif (nd := _NOT_DISTRIBUTED.match(text)) and pid in open_:
                    host = nd.group(1)
                    host = aliases.get(host.split("/", 1)[0], host.split("/", 1)[0]) \
                        if host else None
                    reason.setdefault(pid, unalias(_fallback_reason(last_error.get(pid), host)))
                elif _ERROR.match(text):
                    last_error[pid] = text
                if (text.startswith(("Warning:", "ERROR:", "(dcc_build_somewhere) Warning:"))
                        and pid not in bad_code and len(tally.warnings) < MAX_WARNINGS):
                    tally.warnings.append(unalias(text))
    for pid in list(open_):  # killed mid-compile
        reason.setdefault(pid, UNFINISHED)
        local(pid)
    return tally


class CompileRecorder:
    """The post-build step of a --farm run: where each package's compiles ran.

    After a package's phases (also when one failed: a failed build's log needs
    distcc's warnings most), it notes the tally and distcc's warnings in the
    package log, and keeps it so that `summary_lines` can say at the end of
    the run how much of the work the farm did. Builds finish in the
    scheduler's worker threads, hence the lock.
    """

    name = "compile tally"
    always = True

    def __init__(self, aliases: Mapping[str, str] | None = None,
                 volunteers: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[str, CompileTally] = {}
        # The farm's relays -> the volunteers (see tally_compiles).
        self.aliases = dict(aliases or {})
        # Every volunteer of the run (address:port), named even with no compile.
        self.volunteers = list(volunteers)

    def __call__(self, built: Built) -> None:
        if "DISTCC_HOSTS" not in built.env:
            return  # a no-distcc recipe in a --farm run
        tally = tally_compiles(built.paths.compile_log, self.aliases)
        for warning in tally.warnings:
            built.note(f"distcc: {warning}")
        hosts = ", ".join(f"{host} {n}" for host, n in sorted(tally.hosts.items()))
        built.note(tally.describe() + (f" ({hosts})" if hosts else ""))
        for reason, n in sorted(tally.fallbacks.items()):
            built.note(f"farm: {n} local, {reason}")
        for host, n in sorted(tally.retried.items()):
            built.note(f"farm: {host} failed {n} compile(s), retried on another volunteer")
        with self._lock:
            self._tallies[built.package] = tally

    def tallies(self) -> dict[str, CompileTally]:
        """Each package's tally so far (a copy)."""
        with self._lock:
            return dict(self._tallies)

    def shares(self) -> dict[str, FarmShare]:
        """Each package's tally in the run record's terms (iglubuild.runrecord)."""
        from iglubuild.runrecord import FarmShare

        return {name: FarmShare(remote=t.remote, local=t.local, hosts=dict(t.hosts),
                                fallbacks=dict(t.fallbacks),
                                not_distributable=t.not_distributable,
                                retried=dict(t.retried))
                for name, t in self.tallies().items()}

    def total(self) -> CompileTally | None:
        """The run's compiles summed over its packages (every volunteer of the run
        named), or None if none went to the farm."""
        tallies = list(self.tallies().values())
        if not tallies:
            return None
        return sum(tallies, CompileTally(hosts={v: 0 for v in self.volunteers}))

    def summary_lines(self) -> list[str]:
        """Lines for the end-of-run summary: the farm's share of the compiles, each
        volunteer's compiles, the fallbacks to local by distcc's reason."""
        total = self.total()
        return [] if total is None else [total.describe(), *total.detail_lines()]

    def to_json(self) -> dict[str, object]:
        """The run's tally as `iglubuild status --json` shows it (TALLY_FILE)."""
        total = self.total()
        return {"total": total.to_json() if total is not None else None,
                "packages": {name: t.to_json() for name, t in sorted(self.tallies().items())}}

    def save(self, build_dir: Path) -> Path | None:
        """Write the run's tally to <build-dir>/TALLY_FILE (temp then rename), for
        `status --json`; a run that sent nothing to the farm leaves the last one."""
        import json
        import time

        from iglubuild.atomic import write_atomic

        if not self.tallies():
            return None
        doc = {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               **self.to_json()}
        return write_atomic(build_dir / TALLY_FILE, json.dumps(doc, indent=1) + "\n")


# The last --farm run's compile tally, in the build dir (CompileRecorder.save).
TALLY_FILE = "farm-tally.json"


def last_tally(build_dir: Path) -> dict[str, object] | None:
    """The last --farm run's tally as saved by CompileRecorder.save, or None."""
    import json

    try:
        doc = json.loads((build_dir / TALLY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
