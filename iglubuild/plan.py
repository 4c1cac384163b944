"""The build plan: an input signature per package, and what must be (re)built and why.

A package's *input signature* is a sha256 over everything that can change its
artifact:

- ``recipe``: the bytes of its recipe.yaml;
- ``sources``: the checksum (or, for an unverified source, the URL) and file
  name of every remote source, in recipe order; for a git source its
  commit;
- ``files``: the bytes of every patch and every ``file:`` source beside the
  recipe, with their names, in recipe order;
- ``toolchain``: the executor's toolchain id (a string handed in);
- ``deps``: the signatures of its build dependencies (deps + makedeps, as the
  graph resolves them to parent recipes).

Because dependency signatures are folded in, a change anywhere reaches exactly
the changed package and everything that (transitively) builds against it.

State records
-------------
After each build the scheduler writes ``<build-dir>/state/<name>.json``
(temporary name + rename, so a record is never half-written)::

    {"format": 1, "name": "curl", "version": "7.88.1-r1",
     "result": "built" | "failed", "signature": "<sha256>",
     "inputs": {"recipe": "..", "sources": "..", "files": "..",
                "toolchain": "<toolchain id>", "deps": {"openssl": "<sig>"}},
     "finished": <unix time>, "duration": <seconds>,
     "log": "<path or null>", "artifacts": ["<path>", ...]}

A package is *up to date* when its record says ``built`` with the current
signature and every artifact it lists still exists. Otherwise it is *never
built* (no record), *failed* (the last run failed) or *outdated*, with the
reasons found by comparing the recorded inputs with the current ones. The
recorded ``duration`` is also the estimate used for priorities and the
critical path of the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iglubuild.atomic import write_atomic
from iglubuild.errors import UsageError
from iglubuild.integrity import artifact_intact

if TYPE_CHECKING:  # the recipe model and the graph load pydantic and networkx
    from iglubuild.graph import DepGraph
    from iglubuild.recipe import RecipeTree

STATE_FORMAT = 1
# 2: packages lost their libtool archives and are checked for build paths.
# 3: .xbps members in xbps-create's order.
SIGNATURE_SALT = b"iglubuild-signature-3\0"
DEFAULT_ESTIMATE = 1.0  # seconds assumed for a package never built before


class Result(StrEnum):
    """How a package's last build ended, as its state record keeps it."""

    BUILT = "built"
    FAILED = "failed"


class Status(StrEnum):
    UP_TO_DATE = "up-to-date"
    OUTDATED = "outdated"
    NEVER_BUILT = "never-built"
    FAILED = "failed"
    FORCED = "forced"


# --- signatures ---------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """The hashed inputs of one package; `signature` folds them into one sha256."""

    recipe: str
    sources: str
    files: str
    toolchain: str
    deps: Mapping[str, str]

    @property
    def signature(self) -> str:
        return _sha(_canonical(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "sources": self.sources,
            "files": self.files,
            "toolchain": self.toolchain,
            "deps": dict(sorted(self.deps.items())),
        }


def _canonical(data: Any) -> bytes:
    return SIGNATURE_SALT + json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        # The recipe loader reports missing files; here a missing file just
        # gives a signature no artifact can have, so the package is rebuilt
        # and the build stage names the file.
        return "missing"


def package_inputs(loaded: Any, toolchain_id: str, dep_signatures: Mapping[str, str]) -> Inputs:
    """Hash one package's own inputs; `dep_signatures` are its build deps' signatures."""
    recipe = loaded.recipe
    remote: list[list[str]] = []
    files: list[list[str]] = []
    for src in recipe.sources:
        if getattr(src, "file", None):
            files.append(["file", src.file, _file_digest(loaded.dir / src.file)])
            continue
        if getattr(src, "git", None):
            # A commit id pins the tree as a checksum pins a tarball (a new
            # clone URL for the same commit changes nothing); without one
            # (unverified, fetch refuses it) the URL is all we know.
            commit = getattr(src, "commit", None)
            remote.append(["", f"git:{commit}" if commit else "url:" + str(src.git)])
            continue
        if getattr(src, "sha512", None):
            checksum = "sha512:" + src.sha512
        elif getattr(src, "sha256", None):
            checksum = "sha256:" + src.sha256
        else:
            # No checksum (fetch refuses it anyway): the URL is all we know.
            checksum = "url:" + str(src.url)
        remote.append([str(getattr(src, "filename", None) or ""), checksum])
    for patch in recipe.patches:
        files.append(["patch", patch, _file_digest(loaded.dir / patch)])
    # The loader decoded recipe.yaml as strict UTF-8, so re-encoding the text
    # gives back the file's exact bytes without reading it a second time.
    text = getattr(loaded, "text", None)
    return Inputs(
        recipe=_sha(text.encode("utf-8")) if text is not None else _file_digest(loaded.path),
        sources=_sha(_canonical(remote)),
        files=_sha(_canonical(files)),
        toolchain=toolchain_id,
        deps=dict(dep_signatures),
    )


# --- state records ------------------------------------------------------------


@dataclass
class Record:
    """The outcome of a package's last build, as stored under <build-dir>/state/."""

    name: str
    result: Result
    signature: str
    inputs: dict[str, Any]
    version: str = ""
    finished: float = 0.0
    duration: float = 0.0
    log: str | None = None
    artifacts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "version": self.version,
            "result": self.result,
            "signature": self.signature,
            "inputs": self.inputs,
            "finished": self.finished,
            "duration": self.duration,
            "log": self.log,
            "artifacts": self.artifacts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(
            name=str(data["name"]),
            result=Result(data["result"]),
            signature=str(data["signature"]),
            inputs=dict(data.get("inputs") or {}),
            version=str(data.get("version") or ""),
            finished=float(data.get("finished") or 0.0),
            duration=float(data.get("duration") or 0.0),
            log=data.get("log"),
            artifacts=[str(a) for a in data.get("artifacts") or []],
        )


class StateStore:
    """The per-package records in <build-dir>/state/, one JSON file each."""

    def __init__(self, build_dir: Path) -> None:
        self.dir = Path(build_dir) / "state"

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def load(self, name: str) -> Record | None:
        """The record of `name`, or None if there is none or it is unreadable."""
        try:
            data = json.loads(self.path(name).read_bytes())
            if data.get("format") != STATE_FORMAT:
                return None
            return Record.from_json(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # A corrupt record only costs a rebuild.
            return None

    def artifact(self, package: str, recipe: str) -> Path | None:
        """The recorded artifact of `package` (`recipe` itself or a sub-package like
        `zlib-dev`), or None if `recipe` has no successful build with one.

        This is how a builder finds its dependencies' artifacts for the
        sysroot: records are written the moment a dependency finishes, before
        any dependent starts. Artifact names follow
        `<package>-<version>-r<release>.<arch>.tar.zst`.
        """
        record = self.load(recipe)
        if record is None or record.result is not Result.BUILT:
            return None
        prefix = f"{package}-{record.version}."
        for path in record.artifacts:
            if os.path.basename(path).startswith(prefix) and os.path.exists(path):
                return Path(path)
        return None

    def write(self, record: Record) -> None:
        """Write a record atomically: temporary file in the same folder, then rename.

        No fsync: the scheduler writes records between dispatching builds, and
        after a power loss a record that did not reach the disk (or reads as
        garbage) only costs a rebuild of that package, since `load` treats
        it as missing.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(record.name),
                     json.dumps(record.to_json(), indent=1, sort_keys=True) + "\n")


# --- the plan -----------------------------------------------------------------


@dataclass
class PackagePlan:
    """One package in the plan: its signature, status and the reasons for it."""

    name: str
    version: str
    inputs: Inputs
    signature: str
    status: Status
    reasons: list[str]
    build_deps: tuple[str, ...]
    record: Record | None
    estimate: float  # expected build time in seconds (last duration, or a default)

    @property
    def needs_build(self) -> bool:
        return self.status is not Status.UP_TO_DATE

    def describe(self) -> str:
        """`outdated (recipe changed, dependency zlib changed)` and the like."""
        text = str(self.status)
        return f"{text} ({', '.join(self.reasons)})" if self.reasons else text

    def new_record(self, result: Result, *, duration: float, log: str | None = None,
                   artifacts: Iterable[str] = ()) -> Record:
        """The record to store after building this package."""
        return Record(
            name=self.name, result=result, signature=self.signature,
            inputs=self.inputs.to_json(), version=self.version, finished=time.time(),
            duration=duration, log=log, artifacts=[str(a) for a in artifacts],
        )


@dataclass
class Plan:
    """Every package of a closure in build order, with what must be built and why."""

    packages: dict[str, PackagePlan]  # in dependency order
    toolchain_id: str

    @property
    def order(self) -> list[str]:
        return list(self.packages)

    def to_build(self) -> list[str]:
        """Packages that need building, in dependency order."""
        return [n for n, p in self.packages.items() if p.needs_build]

    def up_to_date(self) -> list[str]:
        return [n for n, p in self.packages.items() if not p.needs_build]

    def build_edges(self) -> dict[str, list[str]]:
        """For each package to build, its build deps that are also to be built."""
        todo = set(self.to_build())
        return {n: [d for d in self.packages[n].build_deps if d in todo] for n in self.to_build()}

    def waves(self) -> list[list[str]]:
        """Packages to build grouped by depth: wave k only needs waves < k (for --dry-run)."""
        depth: dict[str, int] = {}
        edges = self.build_edges()
        for name in self.to_build():
            depth[name] = 1 + max((depth[d] for d in edges[name]), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name in self.to_build():
            waves[depth[name]].append(name)
        return waves

    def remaining_paths(self, estimates: Mapping[str, float] | None = None) -> dict[str, float]:
        """For each package to build: its time plus the longest chain of dependents after it.

        This is the scheduler's priority: starting the package that heads the
        longest remaining chain first keeps the critical path moving.
        """
        est = estimates or {n: p.estimate for n, p in self.packages.items()}
        edges = self.build_edges()
        dependents: dict[str, list[str]] = {n: [] for n in edges}
        for name, deps in edges.items():
            for dep in deps:
                dependents[dep].append(name)
        remaining: dict[str, float] = {}
        for name in reversed(list(edges)):
            tail = max((remaining[d] for d in dependents[name]), default=0.0)
            remaining[name] = est.get(name, DEFAULT_ESTIMATE) + tail
        return remaining

    def critical_path(
        self, estimates: Mapping[str, float] | None = None
    ) -> tuple[list[str], float]:
        """The longest chain (by estimated time) through the packages to build."""
        est = estimates or {n: p.estimate for n, p in self.packages.items()}
        return longest_path(self.build_edges(), est)

    def describe_dry_run(self) -> list[str]:
        """Lines for `--dry-run`: the waves, then the critical path."""
        waves = self.waves()
        lines = [f"build plan: {len(self.packages)} package(s) in {len(waves)} wave(s)"]
        for i, wave in enumerate(waves):
            lines.append(f"wave {i + 1}: " + " ".join(wave))
        path, seconds = self.critical_path()
        if path:
            lines.append(f"critical path ({len(path)} packages, {seconds:.0f} s estimated): "
                         + " -> ".join(path))
        up = len(self.up_to_date())
        lines.append(f"{len(self.to_build())} to build, {up} up to date")
        return lines


def longest_path(
    edges: Mapping[str, Sequence[str]], weights: Mapping[str, float]
) -> tuple[list[str], float]:
    """Heaviest dependency chain of a DAG given as node -> deps, in dependency order.

    `edges` must list every node after its deps (a topological order).
    """
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for name, deps in edges.items():
        parent = max(deps, key=lambda d: best[d], default=None)
        best[name] = weights.get(name, DEFAULT_ESTIMATE) + (best[parent] if parent else 0.0)
        prev[name] = parent
    if not best:
        return [], 0.0
    last = max(best, key=lambda n: best[n])
    total = best[last]
    end: str | None = last
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = prev[end]
    return path[::-1], total


def _reasons(old: Mapping[str, Any], new: Inputs) -> list[str]:
    """Which inputs differ between a record and now, in words."""
    reasons = []
    if old.get("recipe") != new.recipe:
        reasons.append("recipe changed")
    if old.get("sources") != new.sources:
        reasons.append("sources changed")
    if old.get("files") != new.files:
        reasons.append("patches/files changed")
    if old.get("toolchain") != new.toolchain:
        reasons.append("toolchain changed")
    old_deps = old.get("deps") or {}
    for dep in sorted(set(old_deps) | set(new.deps)):
        if dep not in old_deps:
            reasons.append(f"new dependency {dep}")
        elif dep not in new.deps:
            reasons.append(f"dependency {dep} dropped")
        elif old_deps[dep] != new.deps[dep]:
            reasons.append(f"dependency {dep} changed")
    return reasons


def make_plan(
    tree: RecipeTree,
    graph: DepGraph,
    toolchain_id: str,
    state: StateStore,
    names: Iterable[str] | None = None,
    force: Iterable[str] = (),
) -> Plan:
    """Plan the closure of `names` (every recipe if None) against the state records.

    `force` names packages to rebuild although they are up to date (their
    dependents are not forced: their inputs did not change).
    """
    order = graph.order(list(names) if names is not None else None)
    # A sub-package name ("curl-dev") forces the recipe that makes it.
    providers = graph.providers
    forced = {providers[n][0] if n in providers else n for n in force}
    unknown = sorted(forced - set(order))
    if unknown:
        raise UsageError(f"cannot force {', '.join(unknown)}: not in this build",
                         hint="--force takes names of packages the command would build")
    packages: dict[str, PackagePlan] = {}
    for name in order:
        loaded = tree.recipes[name]
        deps = tuple(sorted(set(graph.build_deps(name))))
        inputs = package_inputs(loaded, toolchain_id, {d: packages[d].signature for d in deps})
        signature = inputs.signature
        record = state.load(name)
        status, reasons = _status(record, inputs, signature)
        if status is Status.UP_TO_DATE and name in forced:
            status, reasons = Status.FORCED, ["--force"]
        recipe = loaded.recipe
        packages[name] = PackagePlan(
            name=name,
            version=f"{recipe.version}-r{recipe.release}",
            inputs=inputs,
            signature=signature,
            status=status,
            reasons=reasons,
            build_deps=deps,
            record=record,
            estimate=record.duration if record and record.duration > 0 else DEFAULT_ESTIMATE,
        )
    return Plan(packages=packages, toolchain_id=toolchain_id)


def _status(record: Record | None, inputs: Inputs, signature: str) -> tuple[Status, list[str]]:
    if record is None:
        return Status.NEVER_BUILT, []
    if record.result is not Result.BUILT:
        reasons = ["last build failed" + (f", log {record.log}" if record.log else "")]
        if record.signature != signature:
            reasons += [r + " since" for r in _reasons(record.inputs, inputs)]
        return Status.FAILED, reasons
    if record.signature != signature:
        return Status.OUTDATED, _reasons(record.inputs, inputs) or ["signature format changed"]
    missing = [a for a in record.artifacts if not os.path.exists(a)]
    if missing:
        return Status.OUTDATED, [f"artifact missing: {missing[0]}"]
    # The .xbps twins too: the repository index is made from them.
    from iglubuild.package import xbps_twin  # here: zstandard is not needed before

    twins = [t for a in record.artifacts if (t := xbps_twin(Path(a))) is not None and t.exists()]
    altered = [str(a) for a in [*map(Path, record.artifacts), *twins] if not artifact_intact(a)]
    if altered:
        return Status.OUTDATED, [f"artifact changed since it was packed: {altered[0]}"]
    return Status.UP_TO_DATE, []
