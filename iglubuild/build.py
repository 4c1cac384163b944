"""Build one package: sources and deps in, artifacts out.

For one recipe this stage makes a work folder, takes a sysroot holding only
the artifacts of the package's declared deps (an undeclared dependency must
fail the build, not quietly use whatever happens to be installed; see
iglubuild.sysroot for how sysroots are shared between builds), compiler
wrappers that pin the target and that sysroot, then runs the phases
prepare, build, check and package through an Executor, checks that nothing
in pkgdir is linked against glibc, and packs the result (iglubuild.package).

Each phase leaves a stamp in the work folder, so a failed build can be
resumed (`from_phase`) and a rerun knows where it stands. A failed build
keeps its work folder and log and names both; a successful one removes the
work folder unless asked to keep it.

Where sources come from is the fetch stage's job: `build_package` calls one
function, `prepare_source(lr, settings, workdir) -> srcdir` (the tree under
workdir/src), which unpacks the recipe's verified sources and applies its
patches.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn, Protocol

from iglubuild.elf import find_glibc_linked
from iglubuild.errors import BuildError, FetchError, IglubuildError, UsageError
from iglubuild.executor import PHASES, Executor, NetNamespace, PhaseJob
from iglubuild.package import PackageInfo, pack_all, read_metadata
from iglubuild.package import source_date_epoch as resolve_epoch
from iglubuild.plan import StateStore
from iglubuild.recipe import LoadedRecipe, RecipeTree
from iglubuild.run import DEFAULT_PATH, base_env, describe_returncode
from iglubuild.settings import Settings
from iglubuild.sysroot import Sysroot, SysrootCache, check_untouched
from iglubuild.target import Target, host_triple, load_target, sysroot_env, write_wrappers

if TYPE_CHECKING:
    from iglubuild.jobserver import Jobserver
    from iglubuild.plan import Plan

SCRIPT_PHASES = PHASES[1:]
TAIL_LINES = 30

PrepareSource = Callable[[LoadedRecipe, Settings, Path], Path]


@dataclass(frozen=True)
class WorkPaths:
    """The folders of one package's build; all under <build-dir>/work/<name>."""

    work: Path
    log: Path

    @property
    def src(self) -> Path:
        return self.work / "src"

    @property
    def pkgdir(self) -> Path:
        return self.work / "pkg"

    @property
    def bindir(self) -> Path:
        return self.work / "bin"

    @property
    def compile_log(self) -> Path:
        """distcc's client log (DISTCC_LOG) when compiles go to the farm."""
        return self.work / "distcc.log"

    @property
    def stamps(self) -> Path:
        return self.work / "stamps"

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def tmp(self) -> Path:
        return self.work / "tmp"

    def stamp(self, phase: str) -> Path:
        return self.stamps / phase


def work_paths(settings: Settings, name: str) -> WorkPaths:
    return WorkPaths(settings.work_dir / name, settings.logs_dir / f"{name}.log")


class PhaseFailed(BuildError):
    """A phase of a package failed; carries the log tail and where to look."""

    def __init__(self, package: str, phase: str, reason: str, paths: WorkPaths,
                 tail: list[str]) -> None:
        super().__init__(
            f"{package}: {phase} failed ({reason})",
            hint=f"the work folder is kept; after a fix, resume with --from {phase}"
            if phase in PHASES else f"see {paths.log}",
            log=paths.log, work_dir=paths.work, tail=tail,
        )
        self.package = package
        self.phase = phase

    def lines(self) -> list[str]:
        return [
            self.message,
            f"last {len(self.tail)} lines of {self.log}:",
            *(f"  | {line}" for line in self.tail),
            f"log: {self.log}",
            f"work folder: {self.work_dir}",
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def sysroot_packages(lr: LoadedRecipe, target: Target) -> list[str]:
    """The packages this recipe declares for its sysroot.

    The C library (from the target definition) plus deps and makedeps,
    sub-packages included as named (`zlib-dev`). The sysroot also gets the
    run-time deps these packages declare (their artifacts' metadata), and
    nothing else.
    """
    r = lr.recipe
    names = [*target.implicit_deps_for(r.name), *r.deps, *r.makedeps]
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Built:
    """What a post-build step sees once the phases are over.

    `sysroot` and `sysroots` are the sysroot the phases used and the cache it
    came from; `env` is the phase environment; `note(text)` writes a line into
    the package log; `phases_ok` is False when a step runs after a failed phase.
    """

    package: str
    paths: WorkPaths
    env: Mapping[str, str]
    sysroot: Sysroot
    sysroots: SysrootCache
    note: Callable[[str], None]
    phases_ok: bool = True
    options: frozenset[str] = frozenset()  # the recipe's `options`


class PostBuildStep(Protocol):
    """One check or record after the phases; raises an IglubuildError to fail the build.

    `name` is the step a failure is reported in. Steps with `always` are
    records (the farm's compile tally): they run first, also after a failed
    phase; the others are checks and run, in order, only after good phases.
    """

    @property
    def name(self) -> str: ...

    @property
    def always(self) -> bool: ...

    def __call__(self, built: Built) -> None: ...


@dataclass(frozen=True)
class _Step:
    name: str
    run: Callable[[Built], None]
    always: bool = False

    def __call__(self, built: Built) -> None:
        self.run(built)


def _sysroot_untouched(built: Built) -> None:
    """The shared sysroot must leave the build as it came (phases see it read-only)."""
    check_untouched(built.sysroot, built.sysroots, built.package)


def _no_glibc(built: Built) -> None:
    """Nothing in $pkgdir may be linked against the host's glibc."""
    bad = find_glibc_linked(built.paths.pkgdir)
    if bad:
        for rel, reason in bad:
            built.note(f"linked against glibc: {rel} ({reason})")
        _fail_package(built, f"{len(bad)} file(s) linked against glibc, "
                             f"first {bad[0][0]}: {bad[0][1]}")


def _fail_package(built: Built, message: str) -> NoReturn:
    """Fail a check of $pkgdir as the package phase: it runs again on the next build."""
    built.paths.stamp("package").unlink(missing_ok=True)
    raise PhaseFailed(built.package, "package", message, built.paths, tail_of(built.paths.log))


def _drop_libtool_archives(built: Built) -> None:
    """Remove libtool archives (`*.la`) from $pkgdir, as xbps-src does by default.

    A .la names where its library's dependencies were found, which in a
    build here is the sysroot: libtool then links the next package with a
    RUNPATH into this machine's sysroot folder (libarchive's bsdtar did) and
    the .la itself carries the path (curl's did). pkg-config files and the
    linker's own search do the same work without them. `keep-libtool-archives`
    in a recipe's options keeps them.
    """
    if "keep-libtool-archives" in built.options:
        return
    pkgdir = built.paths.pkgdir
    for path in sorted(pkgdir.rglob("*.la")):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            built.note(f"removed libtool archive {path.relative_to(pkgdir)} "
                       "(options: [keep-libtool-archives] keeps them)")


# Bytes read per piece when a package's files are searched for build paths.
_SCAN_PIECE = 1 << 20


def _files_naming(root: Path, needles: Sequence[bytes]) -> Iterator[tuple[str, bytes]]:
    """(path relative to `root`, needle) for each regular file holding one of `needles`."""
    overlap = max(len(n) for n in needles) - 1
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        tail = b""
        with path.open("rb") as f:
            while piece := f.read(_SCAN_PIECE):
                window = tail + piece
                hit = next((n for n in needles if n in window), None)
                if hit is not None:
                    yield str(path.relative_to(root)), hit
                    break
                tail = window[-overlap:] if overlap else b""


def _no_build_paths(built: Built) -> None:
    """Nothing in $pkgdir may name this machine's sysroot or work folder.

    Such a path is a RUNPATH the target cannot use, a -L that breaks the next
    build against this package, and a package whose bytes change with the
    build folder (`iglubuild verify`); abuild refuses the same. The check
    reads every file once; a hit fails the package phase naming the file.
    """
    needles = [str(built.sysroot.path).encode(), str(built.paths.work).encode()]
    found = list(_files_naming(built.paths.pkgdir, needles))
    if not found:
        return
    names = {needles[0]: "sysroot", needles[1]: "work folder"}
    for rel, needle in found:
        built.note(f"names the build's {names[needle]} ({needle.decode()}): {rel}")
    rel, needle = found[0]
    _fail_package(built, f"{len(found)} file(s) name the build's {names[needle]}, first {rel}; "
                         f"remove the path in package: (e.g. sed -i \"s|$SYSROOT||g\" FILE)")


# Run in this order after every build; callers add their own after these
# (the farm's compile tally: iglubuild.distcc.CompileRecorder).
POST_BUILD_STEPS: tuple[PostBuildStep, ...] = (
    _Step("sysroot check", _sysroot_untouched),
    _Step("glibc check", _no_glibc),
    _Step("libtool archives", _drop_libtool_archives),
    _Step("build path check", _no_build_paths),
)


@dataclass(frozen=True)
class BuildJob:
    """One package build: the recipe and everything the build of it depends on.

    `dep_artifacts` are the artifacts of `sysroot_packages(recipe, target)`,
    found by the scheduler; an artifact of any other package is refused.
    `signature` is the input signature recorded in the metadata and in the
    work folder (a work folder from other inputs is discarded). `from_phase`
    resumes a kept work folder at that phase; `jobs` is the make -j of this
    package (default: the machine's CPUs); `epoch` is SOURCE_DATE_EPOCH.
    `launcher` goes in front of every compile (the distcc farm: `["distcc"]`,
    ignored for recipes with the `no-distcc` option) and `extra_env` adds
    variables to the phase environment (e.g. DISTCC_HOSTS, the jobserver's
    MAKEFLAGS); both come from the caller, never from iglubuild's own
    environment. `on_phase(name, phase)` is called as each step starts
    (progress display). `sysroots` is where sysroots are shared (default
    `<build-dir>/sysroots`). `steps` run after the phases, in order.
    `netns` is the distcc farm's network namespace (iglubuild.farmnet), which
    phases that send compiles to the farm join; every other phase, and every
    phase when it is None, has no network.
    """

    recipe: LoadedRecipe
    settings: Settings
    executor: Executor
    dep_artifacts: Sequence[Path]
    signature: str
    target: Target | None = None
    from_phase: str | None = None
    keep_work: bool = False
    jobs: int | None = None
    epoch: int | None = None
    prepare_source: PrepareSource | None = None
    launcher: Sequence[str] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    on_phase: Callable[[str, str], None] | None = None
    sysroots: SysrootCache | None = None
    steps: Sequence[PostBuildStep] = POST_BUILD_STEPS
    netns: NetNamespace | None = None


def build_package(job: BuildJob) -> list[Path]:
    """Build one package and return its artifacts (main package first, then sub-packages).

    When DISTCC_HOSTS sends compiles to the farm, distcc logs to the work
    folder (DISTCC_LOG), where a post-build step can count them.
    """
    lr = job.recipe
    settings = job.settings
    executor = job.executor
    target = job.target or load_target()
    recipe = lr.recipe
    paths = work_paths(settings, recipe.name)
    epoch = resolve_epoch(job.epoch)
    jobs = job.jobs or os.cpu_count() or 1
    if "no-parallel" in recipe.options:
        jobs = 1
    launcher = job.launcher
    extra_env = dict(job.extra_env)
    if "no-distcc" in recipe.options:
        launcher = ()
        # Nor the farm's variables: they would put the phases in the farm's network.
        extra_env = {k: v for k, v in extra_env.items() if not k.startswith("DISTCC_")}
    from_phase = job.from_phase
    if from_phase is not None and from_phase not in PHASES:
        raise UsageError(f"unknown phase {from_phase!r}", hint="phases: " + ", ".join(PHASES))

    paths.log.parent.mkdir(parents=True, exist_ok=True)
    with paths.log.open("ab") as log:
        _note(log, f"{recipe.name} {recipe.version}-r{recipe.release}: build starts "
                   f"(signature {job.signature[:16] or '-'}, executor {executor.name})")
        current = "setup"

        def step(name: str) -> str:
            if job.on_phase is not None:
                job.on_phase(recipe.name, name)
            return name

        try:
            _prepare_work(paths, job.signature, from_phase)
            current = step("sysroot")
            _check_declared(lr, target, job.dep_artifacts)
            cache = job.sysroots or SysrootCache(settings.build_dir / "sysroots")
            with cache.use(job.dep_artifacts, lambda text: _note(log, text)) as sysroot:
                env = phase_env(lr, target, paths, sysroot.path, jobs, epoch, launcher)
                env.update(extra_env)
                if "DISTCC_HOSTS" in env:
                    # distcc's client log says where each compile ran; in the
                    # work folder, which every executor lets the phases write.
                    env["DISTCC_LOG"] = str(paths.compile_log)
                if "no-parallel" in recipe.options:
                    env["MAKEFLAGS"] = "-j1"  # not even a shared jobserver's slots
                built = Built(recipe.name, paths, env, sysroot, cache,
                              lambda text: _note(log, text), phases_ok=False,
                              options=frozenset(recipe.options))
                current = step("unpack")
                srcdir = _unpack(lr, settings, paths,
                                 job.prepare_source or default_prepare_source(), log)
                env["srcdir"] = str(srcdir)
                try:
                    for phase in SCRIPT_PHASES:
                        # Progress hears only of phases that have something to run.
                        current = step(phase) if recipe.phases[phase] else phase
                        _run_phase(lr, phase, executor, env, srcdir, paths, sysroot.path, log,
                                   job.netns)
                    built = replace(built, phases_ok=True)
                finally:
                    # Records come first and also after a failed phase.
                    for after in job.steps:
                        if after.always:
                            after(built)
                for after in job.steps:
                    if not after.always:
                        current = after.name
                        after(built)
            current = step("pack")
            info = PackageInfo(
                name=recipe.name, version=recipe.version, release=recipe.release,
                arch=target.arch, description=recipe.description, license=recipe.license,
                homepage=recipe.homepage, deps=tuple(recipe.deps), backup=tuple(recipe.backup),
                base=recipe.name, signature=job.signature,
            )
            artifacts = pack_all(paths.pkgdir, info, recipe.subpackages,
                                 settings.packages_dir(target.arch), epoch)
        except (PhaseFailed, FetchError):
            raise  # a source missing from the cache is a fetch problem (exit 3), said as is
        except IglubuildError as exc:
            _note(log, f"{current} failed: {exc.message}")
            raise _failure(recipe.name, current, exc.message, paths) from exc
        except OSError as exc:
            _note(log, f"{current} failed: {exc}")
            raise _failure(recipe.name, current, str(exc), paths) from exc
        for artifact in artifacts:
            _note(log, f"wrote {artifact}")
        _note(log, "build done")
    if not job.keep_work:
        shutil.rmtree(paths.work, ignore_errors=True)
    return artifacts


class Engine:
    """The build stage as the scheduler sees it: `build_one(name) -> artifacts`.

    Binds what is the same for every package of a run (settings, executor,
    recipe tree, plan signatures, the shared jobserver, the post-build steps)
    and finds each package's dependency artifacts in the state records, which
    the scheduler writes the moment a dependency finishes. For
    iglubuild.session:

        def make_builder(ctx: BuildContext) -> Builder:
            engine = Engine(settings, executor, tree, ctx.plan,
                            jobserver=ctx.jobserver, on_phase=ctx.on_phase)
            return Builder(engine.build_one, [executor.terminate])
    """

    def __init__(self, settings: Settings, executor: Executor, tree: RecipeTree, plan: Plan,
                 *, jobserver: Jobserver | None = None,
                 on_phase: Callable[[str, str], None] | None = None,
                 target: Target | None = None, keep_work: bool = False,
                 from_phase: str | None = None, launcher: Sequence[str] = (),
                 extra_env: Mapping[str, str] | None = None,
                 steps: Sequence[PostBuildStep] = (),
                 netns: NetNamespace | None = None) -> None:
        self.settings = settings
        self.executor = executor
        self.tree = tree
        self.plan = plan
        self.state = StateStore(settings.build_dir)
        self.providers = tree.providers()
        self.target = target or load_target()
        self.on_phase = on_phase
        self.keep_work = keep_work
        self.from_phase = from_phase
        self.launcher = tuple(launcher)
        self.extra_env = dict(extra_env or {})
        self.steps = (*POST_BUILD_STEPS, *steps)
        self.netns = netns
        if jobserver is not None:
            # make in every phase joins the run's one jobserver (see iglubuild.jobserver).
            self.extra_env.update(jobserver.env())
            executor.pass_fds = tuple(jobserver.pass_fds)

    def dep_artifacts(self, lr: LoadedRecipe) -> list[Path]:
        """The artifacts of this recipe's sysroot, from the state records.

        The declared deps and makedeps, then the run-time deps those
        artifacts declare in their metadata, transitively.
        """
        found: dict[str, Path] = {}
        todo = list(sysroot_packages(lr, self.target))
        while todo:
            package = todo.pop(0)
            if package in found:
                continue
            recipe = self.providers.get(package, (package, None))[0]
            artifact = self.state.artifact(package, recipe)
            if artifact is None:
                raise BuildError(
                    f"{lr.name}: dependency {package} has no built artifact",
                    hint=f"{recipe} must be built before {lr.name}; if it is the C library, "
                         "the graph needs the implicit edges of toolchain/target.toml",
                )
            found[package] = artifact
            todo.extend(read_metadata(artifact).get("deps", []))
        return list(found.values())

    def build_one(self, name: str) -> list[Path]:
        lr = self.tree.recipes[name]
        return build_package(BuildJob(
            lr, self.settings, self.executor, self.dep_artifacts(lr),
            self.plan.packages[name].signature, target=self.target,
            from_phase=self.from_phase, keep_work=self.keep_work,
            jobs=self.settings.jobs, launcher=self.launcher, extra_env=self.extra_env,
            on_phase=self.on_phase, steps=self.steps, netns=self.netns,
        ))


def phase_env(lr: LoadedRecipe, target: Target, paths: WorkPaths, sysroot: Path, jobs: int,
              epoch: int, launcher: Sequence[str] = ()) -> dict[str, str]:
    """The whitelisted environment every phase of this package sees.

    The variables Iglunix scripts use, compilers that are wrappers pinning
    the target and this package's sysroot, pkg-config confined to the
    sysroot, and HOME/TMPDIR inside the work folder.
    """
    r = lr.recipe
    env = base_env({
        "PATH": f"{paths.bindir}:{DEFAULT_PATH}",
        "HOME": str(paths.home),
        "TMPDIR": str(paths.tmp),
        "pkgname": r.name,
        "pkgver": r.version,
        "pkgrel": str(r.release),
        "pkgdir": str(paths.pkgdir),
        "srcdir": str(paths.src),
        "ARCH": target.arch,
        "TRIPLE": target.triple,
        "HOST_TRIPLE": host_triple(),
        "JOBS": str(jobs),
        "MAKEFLAGS": f"-j{jobs}",
        "CFLAGS": target.cflags,
        "CXXFLAGS": target.cxxflags,
        "LDFLAGS": target.ldflags,
        "SOURCE_DATE_EPOCH": str(epoch),
        # Not the machine's /etc/localtime: `date` in a build (busybox's
        # banner) says the same whatever the time zone of the build machine.
        "TZ": "UTC",
    })
    env.update(write_wrappers(target, sysroot, paths.bindir, launcher, work=paths.work))
    env.update(sysroot_env(sysroot))
    _write_iglunix_shims(paths.bindir)
    return env


def _write_iglunix_shims(bindir: Path) -> None:
    """`bad` as Iglunix's iglupkg defines it, for imported scripts.

    Iglunix marks each use of a GNU tool with `bad --gmake gmake ...`; iglupkg
    runs the command as is (`bad` drops its flag). Debian's make already
    provides `gmake`. Which GNU tools a recipe needs is recorded in `gnu`; the
    host executor cannot hide the others (a chroot without them can).
    """
    path = bindir / "bad"
    path.write_text('#!/bin/sh\nshift\nexec "$@"\n', encoding="utf-8")
    path.chmod(0o755)


def default_prepare_source() -> PrepareSource:
    """The fetch stage's unpacker: (recipe, settings, workdir) -> srcdir under workdir/src."""
    from iglubuild.unpack import prepare_source

    return prepare_source


# ---------------------------------------------------------------- steps


def _note(log: IO[bytes], text: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    log.write(f"==> [{stamp}] {text}\n".encode())
    log.flush()


def _prepare_work(paths: WorkPaths, signature: str, from_phase: str | None) -> None:
    """Start fresh, or resume a kept work folder built from the same inputs.

    Without `from_phase` a work folder is reused only if its signature
    matches (then finished phases are skipped); with `from_phase` the user
    asked to resume, so that phase and the ones after it run again.
    """
    sig_file = paths.work / "signature"
    resumable = paths.stamp("unpack").exists()
    if from_phase is None:
        if resumable and sig_file.exists() and sig_file.read_text() == signature:
            return
        resumable = False
    if not resumable:
        shutil.rmtree(paths.work, ignore_errors=True)
    for sub in (paths.stamps, paths.home, paths.tmp):
        sub.mkdir(parents=True, exist_ok=True)
    sig_file.write_text(signature)
    if from_phase is not None:
        for phase in PHASES[PHASES.index(from_phase):]:
            paths.stamp(phase).unlink(missing_ok=True)


def _check_declared(lr: LoadedRecipe, target: Target, dep_artifacts: Sequence[Path]) -> None:
    """Refuse any artifact that is not a declared dep or one of their run-time deps.

    Allowed are the recipe's deps and makedeps and, through the artifacts'
    own metadata, their run-time deps (a library's headers may include its
    deps' headers; `zlib-dev` brings `zlib`).
    """
    metas = [read_metadata(artifact) for artifact in dep_artifacts]
    deps_of = {m["name"]: list(m.get("deps", [])) for m in metas}
    allowed: set[str] = set()
    todo = list(sysroot_packages(lr, target))
    while todo:
        name = todo.pop()
        if name not in allowed:
            allowed.add(name)
            todo.extend(deps_of.get(name, []))
    for meta in metas:
        if meta["name"] not in allowed:
            raise BuildError(
                f"{lr.name}: {meta['name']} is not a declared dependency",
                hint="add it to deps or makedeps in the recipe",
            )


def _unpack(lr: LoadedRecipe, settings: Settings, paths: WorkPaths,
            prepare_source: PrepareSource, log: IO[bytes]) -> Path:
    record = paths.work / "srcdir"
    if paths.stamp("unpack").exists() and record.exists():
        return Path(record.read_text())
    t0 = time.monotonic()
    srcdir = prepare_source(lr, settings, paths.work)
    record.write_text(str(srcdir))
    paths.stamp("unpack").touch()
    _note(log, f"unpack done in {time.monotonic() - t0:.1f}s: {srcdir}")
    return srcdir


def _run_phase(lr: LoadedRecipe, phase: str, executor: Executor, env: dict[str, str],
               srcdir: Path, paths: WorkPaths, sysroot: Path, log: IO[bytes],
               netns: NetNamespace | None = None) -> None:
    recipe = lr.recipe
    if paths.stamp(phase).exists():
        _note(log, f"{phase}: done before, skipped")
        return
    script = recipe.phases[phase]
    if phase == "package":
        # pkgdir always starts empty: a rerun must not keep files of an older try.
        shutil.rmtree(paths.pkgdir, ignore_errors=True)
        paths.pkgdir.mkdir(parents=True)
    if phase == "check" and "no-check" in recipe.options:
        _note(log, "check: skipped (no-check)")
        script = None
    if script:
        _note(log, f"{phase} starts")
        t0 = time.monotonic()
        job = PhaseJob(
            package=recipe.name, phase=phase, script=script, cwd=srcdir, env=dict(env),
            # The sysroot is shared by builds with the same deps: read-only.
            # distcc's state folder (--farm) must be writable in a sandbox too:
            # without it distcc cannot lock a volunteer and compiles locally.
            writable=(paths.work, *_distcc_dir(env)), readonly=(sysroot,),
            # Builds have no network, except that compiles sent to the distcc
            # farm must reach its volunteers (--farm sets DISTCC_HOSTS): those
            # phases join the farm's namespace, which reaches them and nothing else.
            netns=netns if "DISTCC_HOSTS" in env else None,
        )
        rc = executor.run_phase(job, log)
        if rc != 0:
            _note(log, f"{phase} failed: {describe_returncode(rc)}")
            raise PhaseFailed(recipe.name, phase, describe_returncode(rc), paths,
                              tail_of(paths.log))
        _note(log, f"{phase} done in {time.monotonic() - t0:.1f}s")
    paths.stamp(phase).touch()


def _distcc_dir(env: Mapping[str, str]) -> tuple[Path, ...]:
    """DISTCC_DIR when the phase sends compiles to the farm and it is an existing folder."""
    folder = env.get("DISTCC_DIR")
    return (Path(folder),) if folder and Path(folder).is_dir() else ()


def _failure(name: str, phase: str, reason: str, paths: WorkPaths) -> PhaseFailed:
    return PhaseFailed(name, phase, reason, paths, tail_of(paths.log))


def tail_of(log: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of a log (reads only its end)."""
    try:
        with log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]
