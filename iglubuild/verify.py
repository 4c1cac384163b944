"""Prove that packages rebuild to the same bytes: `iglubuild verify`.

As Debian's reprotest and Arch's repro do, the package is built twice and the
results compared byte for byte. The first build is the build dir's own (made
by `verify` first if it is missing or outdated); the second runs in a fresh
build dir under perturbations that must not matter:

- another build path (`<build-dir>/verify/<run>/perturbed-build-path`),
- another time zone (TZ=Etc/GMT-14), locale (LANG=LC_ALL=C) and umask (0o027)
  for iglubuild itself: what the user's environment is must not reach a
  package (phases get a whitelisted environment with TZ=UTC, and builds run
  under umask 022),
- another `--jobs` (make -j and the number of packages at once),
- and the clock: it runs later (SOURCE_DATE_EPOCH is an input, not the time).

Not varied: the host name (every sandbox shows builds `iglubuild`) and the
order in which the file system lists folders (that needs disorderfs, which
iglubuild does not depend on).

The dependencies of the packages under test are not rebuilt: their state
records are copied into the fresh build dir and point at the build dir's
artifacts, so each package is judged on the same inputs. With `--world`
everything is rebuilt, dependencies included.

A mismatch names the package, each differing file and, for packages (tar
inside zstd), the differing members; with diffoscope installed its report is
written beside the record. Recipes that cannot be reproducible say why in
`unreproducible:`; verify reports them as known and they do not fail it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from iglubuild.integrity import file_hash
from iglubuild.plan import StateStore
from iglubuild.run import run, which

PERTURBED_ENV = {"TZ": "Etc/GMT-14", "LANG": "C", "LC_ALL": "C"}
PERTURBED_UMASK = 0o027
# Files of a packages folder that describe the whole folder, not one package.
NOT_COMPARED_SUFFIXES = ("-repodata", "index.json")
MAX_MEMBERS_SHOWN = 20
MAX_MEMBER_BYTES = 1 << 30  # members larger than this are compared by size only
DIFFOSCOPE_SECONDS = 600

PERTURBATIONS = (
    "build path", f"TZ={PERTURBED_ENV['TZ']}", "LANG=LC_ALL=C",
    f"iglubuild umask {PERTURBED_UMASK:04o}", "--jobs", "build time",
)
NOT_VARIED = ("host name (sandboxes fix it to 'iglubuild')",
              "file system order (needs disorderfs)")


@dataclass
class FileVerdict:
    name: str
    identical: bool
    problem: str | None = None  # "missing in the rebuild", "only in the rebuild"
    members: list[str] = field(default_factory=list)  # differing members, first few


@dataclass
class Verdict:
    package: str
    reproducible: bool
    files: list[FileVerdict] = field(default_factory=list)
    known: str | None = None  # the recipe's `unreproducible:` reason
    error: str | None = None  # the rebuild failed
    diffoscope: str | None = None  # path of diffoscope's report

    @property
    def ok(self) -> bool:
        return self.reproducible or self.known is not None

    def lines(self) -> list[str]:
        n = len(self.files)
        if self.error is not None:
            return [f"{self.package}: NOT VERIFIED: the rebuild failed: {self.error}"]
        if self.reproducible:
            return [f"{self.package}: reproducible ({n} file(s) identical)"]
        head = (f"{self.package}: differs (known: {self.known})" if self.known
                else f"{self.package}: NOT REPRODUCIBLE")
        out = [head]
        for f in self.files:
            if f.identical:
                continue
            out.append(f"  {f.name}: {f.problem or 'differs'}")
            out.extend(f"    {m}" for m in f.members)
        if self.diffoscope:
            out.append(f"  diffoscope: {self.diffoscope}")
        return out


def perturbed_jobs(jobs: int) -> int:
    """Another parallelism than the first build's."""
    return jobs + 2 if jobs <= 2 else max(1, jobs // 2)


@contextmanager
def perturbed_process() -> Iterator[None]:
    """iglubuild's own time zone, locale and umask changed for the rebuild."""
    old_umask = os.umask(PERTURBED_UMASK)
    old_env = {k: os.environ.get(k) for k in PERTURBED_ENV}
    os.environ.update(PERTURBED_ENV)
    time.tzset()
    try:
        yield
    finally:
        os.umask(old_umask)
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        time.tzset()


def seed_state(reference: Path, fresh: Path, rebuilt: Sequence[str]) -> None:
    """Copy the state records of every package not `rebuilt` into the fresh build dir."""
    src, dst = StateStore(reference), StateStore(fresh)
    dst.path("x").parent.mkdir(parents=True, exist_ok=True)
    folder = src.path("x").parent
    skip = set(rebuilt)
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if record.stem not in skip:
            shutil.copyfile(record, dst.path(record.stem))


def outputs(packages_dir: Path, names: Sequence[str], state: StateStore) -> dict[str, list[Path]]:
    """Per package, the files it wrote: its recorded artifacts and their .xbps twins."""
    found: dict[str, list[Path]] = {}
    for name in names:
        record = state.load(name)
        if record is None:
            continue
        files = [Path(a) for a in record.artifacts]
        stems = {_stem(p.name) for p in files}
        twins = [p for p in sorted(packages_dir.glob("*.xbps"))
                 if _xbps_stem(p.name) in stems]
        found[name] = [*files, *twins]
    return found


def _stem(filename: str) -> str:
    """`curl-dev-7.88.1-r1.x86_64.tar.zst` -> `curl-dev-7.88.1_1`, as its .xbps twin says it."""
    base = filename.removesuffix(".tar.zst").rsplit(".", 1)[0]  # drop the arch
    name_version, _, release = base.rpartition("-r")
    return f"{name_version}_{release}"


def _xbps_stem(filename: str) -> str:
    """`curl-dev-7.88.1_1.x86_64-musl.xbps` -> `curl-dev-7.88.1_1`."""
    return filename.removesuffix(".xbps").rsplit(".", 1)[0]


def compare(package: str, first: Sequence[Path], second: Sequence[Path]) -> Verdict:
    """Byte-for-byte comparison of the two builds' files, by file name."""
    a = {p.name: p for p in first}
    b = {p.name: p for p in second}
    files: list[FileVerdict] = []
    for name in sorted(set(a) | set(b)):
        if name not in b:
            files.append(FileVerdict(name, False, "missing in the rebuild"))
        elif name not in a:
            files.append(FileVerdict(name, False, "only in the rebuild"))
        elif file_hash(a[name]) == file_hash(b[name]):
            files.append(FileVerdict(name, True))
        else:
            files.append(FileVerdict(name, False, members=member_differences(a[name], b[name])))
    return Verdict(package, all(f.identical for f in files) and bool(files), files)


def member_differences(a: Path, b: Path) -> list[str]:
    """What differs between two packages, member by member (first MAX_MEMBERS_SHOWN)."""
    try:
        left, right = members_of(a), members_of(b)
    except (OSError, tarfile.TarError, ValueError) as exc:
        return [f"(cannot list members: {exc})"]
    out = []
    for name in sorted(set(left) | set(right)):
        if name not in right:
            out.append(f"{name}: missing in the rebuild")
        elif name not in left:
            out.append(f"{name}: only in the rebuild")
        elif left[name] != right[name]:
            what = [k for k in left[name] if left[name][k] != right[name].get(k)]
            out.append(f"{name}: {', '.join(what)} differ")
    if not out:
        out.append("(same members and contents: the container itself differs)")
    return out[:MAX_MEMBERS_SHOWN] + (
        [f"... and {len(out) - MAX_MEMBERS_SHOWN} more"] if len(out) > MAX_MEMBERS_SHOWN else [])


def members_of(path: Path) -> dict[str, dict[str, object]]:
    """Each member of a package (tar, zstd-compressed or not): type, mode, owner, content hash."""
    import zstandard

    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        if magic == b"\x28\xb5\x2f\xfd":
            reader = zstandard.ZstdDecompressor().stream_reader(f)
            tar = tarfile.open(fileobj=reader, mode="r|")
        else:
            tar = tarfile.open(fileobj=f, mode="r|*")
        out: dict[str, dict[str, object]] = {}
        with tar:
            for ti in tar:
                item: dict[str, object] = {"type": ti.type, "mode": oct(ti.mode),
                                           "owner": (ti.uid, ti.gid), "mtime": ti.mtime,
                                           "size": ti.size, "link": ti.linkname}
                if ti.isfile() and ti.size <= MAX_MEMBER_BYTES:
                    fh = tar.extractfile(ti)
                    if fh is not None:  # hashed in pieces: a member may be 1 GiB
                        h = hashlib.sha256()
                        while chunk := fh.read(1 << 20):
                            h.update(chunk)
                        item["content"] = h.hexdigest()
                out[ti.name] = item
        return out


def run_diffoscope(a: Path, b: Path, report: Path) -> Path | None:
    """diffoscope's text report of two files, if diffoscope is installed."""
    if which("diffoscope") is None:
        return None
    proc = run(["diffoscope", "--text", str(report), str(a), str(b)], check=False,
               capture=True, timeout=DIFFOSCOPE_SECONDS)
    return report if proc.returncode in (0, 1) and report.exists() else None


def write_verdicts(path: Path, verdicts: Sequence[Verdict], meta: Mapping[str, object]) -> None:
    from iglubuild.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(verdicts_json(verdicts, meta), indent=1) + "\n")


def verdicts_json(verdicts: Sequence[Verdict], meta: Mapping[str, object]) -> dict[str, object]:
    return {**meta, "ok": all(v.ok for v in verdicts),
            "perturbations": list(PERTURBATIONS), "not_varied": list(NOT_VARIED),
            "packages": [asdict(v) | {"ok": v.ok} for v in verdicts]}


def run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"


