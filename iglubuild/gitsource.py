"""Git sources: a commit fetched from a mirror or upstream, kept as a tar archive.

A recipe source `git: URL` with `commit: <40 hex>` is turned into a tar file
in the distfiles cache, so unpacking, patches and `--offline` work exactly as
for a tarball:

    by-commit/<commit>.tar    `git archive` of the commit, top folder <name>-<version>/
    <repo>-<commit12>.tar     a readable symlink to it
    .partial/                 scratch repositories and the archive being written

A commit id is a hash over the whole tree, so pinning it verifies the source
the way a sha256 verifies a tarball. Where the commit is looked for, in
order: each mirror's `git/<repo>.bundle`, then its `git/<repo>.git` (a bare
repository, file:// or dumb HTTP), then the recipe's URL (`git fetch
--depth 1 URL COMMIT` where the server allows it, else every branch and tag).
Each place gets a fresh scratch repository; the commit must be there as a
commit, the objects must pass `git fsck --full`, and a `tag:` the place knows
must point at the commit (a tag that moved is an error, not a reason to try
the next place). Only then is the archive written, under a temporary name
renamed into the cache.

The same commit always gives the same bytes: the archive depends only on the
commit's tree and time, never on which place served it. That is why
`export-subst` is switched off: its `$Format:%d$` would print the refs the
scratch repository happens to have (a shallow fetch shows "grafted").

git runs through iglubuild.run with a clean environment: no system or user
configuration, HOME in the scratch folder, no prompts, no hooks, no
submodules, local paths (file://, bundles) allowed only for mirrors, and a
timeout on every command. Transient network errors are retried as HTTP
downloads are.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from iglubuild.errors import FetchError
from iglubuild.fetch import FetchOptions, Outcome, _link_name
from iglubuild.recipe import git_repo_name
from iglubuild.run import base_env, require_tool, run
from iglubuild.settings import Settings

log = logging.getLogger("iglubuild.gitsource")

GIT_TIMEOUT = 900.0  # seconds for one git command (a full fetch of a large history)
MAX_BUNDLE = 4 << 30  # bytes: a bundle from an HTTP mirror larger than this is refused
_COMMIT = re.compile(r"[0-9a-f]{40}")
_BUF = 1 << 20

# Configuration for every git command (`-c`), on top of an empty one.
_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "init.defaultBranch=main",
    "credential.helper=",
    # A stalled transfer ends instead of hanging until the timeout.
    "http.lowSpeedLimit=1024",
    "http.lowSpeedTime=60",
    # Historic harmless warnings in real histories (zstd's old trees, xbps).
    "fsck.badFilemode=ignore",
    "fsck.gitignoreSymlink=ignore",
)

# git's own words for a server or network that may answer next time.
_TRANSIENT = re.compile(
    r"Could not resolve host|Failed to connect|Connection (?:timed out|reset|refused)"
    r"|Operation timed out|returned error: (?:5\d\d|408|429)|RPC failed|early EOF"
    r"|remote end hung up unexpectedly|gnutls_handshake|SSL_ERROR|TLS connection",
    re.IGNORECASE)


class GitSourceLike(Protocol):
    """What this module needs of a recipe source (iglubuild.recipe.Source fits)."""

    git: str | None
    commit: str | None
    tag: str | None
    unverified: str | None

    @property
    def archive_prefix(self) -> str: ...

    @property
    def display_name(self) -> str: ...


class _NotHere(Exception):
    """This place does not have the commit (or is broken): try the next one."""


class TagMoved(FetchError):
    """A place has the recipe's tag pointing at another commit than `commit:`."""


@dataclass(frozen=True)
class Location:
    """One place a commit is looked for."""

    kind: str  # "bundle" (a git bundle file) or "repo" (a repository URL)
    url: str  # file://, http(s):// or the recipe's clone URL
    mirror: str | None  # the mirror it belongs to; None for the recipe's own URL

    @property
    def path(self) -> Path | None:
        """The local path of a file:// location."""
        parsed = urllib.parse.urlsplit(self.url)
        return Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else None

    def describe(self) -> str:
        return f"{self.url} (mirror)" if self.mirror is not None else self.url


def archive_path(distfiles: Path, commit: str) -> Path:
    """Where the archive of a commit lives in the cache."""
    if not _COMMIT.fullmatch(commit):
        raise FetchError(f"invalid commit {commit!r}", hint="a commit is 40 hexadecimal digits")
    return distfiles / "by-commit" / f"{commit}.tar"


def locations(source: GitSourceLike, mirrors: Sequence[str]) -> list[Location]:
    """The places a git source is looked for, in order: mirrors first, then its URL."""
    out: list[Location] = []
    repo = urllib.parse.quote(git_repo_name(source.git or ""))
    for mirror in mirrors:
        base = mirror.rstrip("/")
        if "://" not in base:  # a plain folder is a file:// mirror
            base = Path(base).absolute().as_uri()
        if repo:
            out.append(Location("bundle", f"{base}/git/{repo}.bundle", mirror))
            out.append(Location("repo", f"{base}/git/{repo}.git", mirror))
    if source.git:
        out.append(Location("repo", source.git, None))
    return out


def _pin(source: GitSourceLike) -> str:
    """The commit of a usable git source, or FetchError saying why there is none."""
    if source.unverified or not source.commit:
        raise FetchError(
            f"{source.display_name}: source is unverified "
            f"({source.unverified or 'no commit'}); refusing to use it",
            hint="run `iglubuild checksum NAME` where the repository is reachable")
    return source.commit


def _what(source: GitSourceLike) -> str:
    commit = source.commit or "?"
    return f"commit {commit}" + (f" (tag {source.tag})" if source.tag else "")


def cached_archive(source: GitSourceLike, settings: Settings) -> Path:
    """The archive of a fetched git source, for the unpack stage (never the network)."""
    entry = archive_path(settings.distfiles_dir, _pin(source))
    if not entry.is_file():
        raise FetchError(f"{source.display_name}: {_what(source)} not in the distfiles cache "
                         f"({entry})", hint="run `iglubuild fetch NAME` first")
    return entry


# -- running git ----------------------------------------------------------------


@dataclass
class _Git:
    """git in one scratch folder: its HOME, its repository, its allowed protocols."""

    scratch: Path
    options: FetchOptions
    cancelled: threading.Event

    @property
    def repo(self) -> Path:
        return self.scratch / "repo.git"

    def env(self, protocols: str) -> dict[str, str]:
        home = self.scratch / "home"
        home.mkdir(exist_ok=True)
        return base_env({
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_ALLOW_PROTOCOL": protocols,
        })

    def __call__(self, *args: str, local: bool = False, network: bool = False,
                 in_repo: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `git ARGS`; `local` allows file:// and bundles (mirrors only).

        `network` commands are retried on transient errors with the backoff of
        HTTP downloads. A timeout or the last failure is returned, not raised.
        """
        git = require_tool("git")
        argv = [git]
        for item in _CONFIG:
            argv += ["-c", item]
        argv += ["-c", f"protocol.file.allow={'always' if local else 'never'}"]
        if in_repo:
            argv.append(f"--git-dir={self.repo}")
        argv += args
        env = self.env("file" if local else "https:http:git")
        attempts = self.options.retries + 1 if network else 1
        proc: subprocess.CompletedProcess[str] | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(self.options.backoff_cap, self.options.backoff * 2 ** (attempt - 1))
                if self.cancelled.wait(delay * (1 + 0.25 * random.random())):
                    break
            try:
                proc = run(argv, env=env, cwd=self.scratch, capture=True, check=False,
                           timeout=GIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc = subprocess.CompletedProcess(argv, 124, "",
                                                   f"timed out after {GIT_TIMEOUT:.0f}s")
            if proc.returncode == 0 or not _TRANSIENT.search(proc.stderr or ""):
                break
            log.debug("git %s: %s (attempt %d of %d)", args[0], _last_line(proc),
                      attempt + 1, attempts)
        assert proc is not None
        return proc

    def init(self) -> None:
        proc = self("init", "--bare", "--quiet", str(self.repo), in_repo=False)
        if proc.returncode != 0:
            raise FetchError(f"git init failed: {_last_line(proc)}")
        # Same bytes from every place: no $Format:...$ expansion (see the module doc).
        (self.repo / "info").mkdir(exist_ok=True)
        (self.repo / "info" / "attributes").write_text("* -export-subst\n")

    def has_commit(self, commit: str) -> bool:
        proc = self("rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}")
        return proc.returncode == 0 and proc.stdout.strip() == commit


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    text = next((ln for ln in reversed(lines) if ln.startswith(("fatal:", "error:"))),
                lines[-1] if lines else f"exit status {proc.returncode}")
    return text.removeprefix("fatal: ").removeprefix("error: ")[:300]


def _peeled(ls_remote: str, ref: str) -> str | None:
    """The commit `ref` points to in `git ls-remote` output (peeled if annotated)."""
    plain = peeled = None
    for line in ls_remote.splitlines():
        oid, _, name = line.partition("\t")
        if name == ref:
            plain = oid.strip()
        elif name == ref + "^{}":
            peeled = oid.strip()
    return peeled or plain


# -- getting the objects from one place -----------------------------------------


class _Places:
    """Downloads bundles from HTTP mirrors (git cannot fetch a bundle over HTTP)."""

    def __init__(self, options: FetchOptions, cancelled: threading.Event) -> None:
        self.options = options
        self.cancelled = cancelled

    def bundle_file(self, loc: Location, scratch: Path) -> Path:
        local = loc.path
        if local is not None:
            if not local.is_file():
                raise _NotHere("no such file")
            return local
        if not loc.url.startswith(("http://", "https://")):
            raise _NotHere("unsupported URL scheme")
        return self._download(loc.url, scratch / "mirror.bundle")

    def _download(self, url: str, dest: Path) -> Path:
        import httpx

        last = "no attempt"
        attempts = self.options.retries + 1
        timeout = httpx.Timeout(self.options.read_timeout, connect=self.options.connect_timeout)
        for attempt in range(attempts):
            if attempt:
                delay = min(self.options.backoff_cap, self.options.backoff * 2 ** (attempt - 1))
                if self.cancelled.wait(delay):
                    break
            try:
                with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as resp:
                    if resp.status_code >= 500 or resp.status_code in (408, 429):
                        last = f"HTTP {resp.status_code}"
                        continue
                    if resp.status_code != 200:
                        raise _NotHere(f"HTTP {resp.status_code} {resp.reason_phrase}")
                    size = 0
                    with open(dest, "wb") as out:
                        for chunk in resp.iter_raw(_BUF):
                            size += len(chunk)
                            if size > MAX_BUNDLE:
                                raise _NotHere(f"bundle larger than {MAX_BUNDLE} bytes")
                            if self.cancelled.is_set():
                                raise _NotHere("interrupted")
                            out.write(chunk)
                    return dest
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise _NotHere(f"{last} (gave up after {attempts} attempts)")


def _from_bundle(git: _Git, bundle: Path, source: GitSourceLike, commit: str) -> None:
    heads = git("bundle", "list-heads", str(bundle), local=True)
    if heads.returncode != 0:
        raise _NotHere(f"not a readable bundle: {_last_line(heads)}")
    refs = [line.split(" ", 1)[1].strip() for line in heads.stdout.splitlines() if " " in line]
    if not refs:
        raise _NotHere("the bundle has no refs")
    specs = [f"+{ref}:refs/iglubuild/src/{i}" for i, ref in enumerate(refs)]
    proc = git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(bundle), *specs,
               local=True)
    if proc.returncode != 0:
        raise _NotHere(f"cannot read the bundle: {_last_line(proc)}")
    if not git.has_commit(commit):
        raise _NotHere(f"does not have commit {commit}")
    if source.tag:
        ref = f"refs/tags/{source.tag}"
        if ref in refs:
            local_ref = f"refs/iglubuild/src/{refs.index(ref)}"
            got = git("rev-parse", "--verify", "--quiet", f"{local_ref}^{{commit}}")
            _check_tag(source, commit, got.stdout.strip() or "(not a commit)")


def _check_tag(source: GitSourceLike, commit: str, points_to: str) -> None:
    if points_to != commit:
        raise TagMoved(f"tag {source.tag} points to {points_to}, not to commit {commit}")


def _from_repo(git: _Git, loc: Location, source: GitSourceLike, commit: str) -> None:
    local = loc.mirror is not None and loc.path is not None
    if local and not (loc.path and loc.path.is_dir()):
        raise _NotHere("no such repository")
    network = not local
    proc = git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--depth", "1",
               loc.url, commit, local=local, network=network)
    if proc.returncode != 0:
        why = _last_line(proc)
        if _TRANSIENT.search(proc.stderr or "") or re.search(
                r"not found|does not appear to be a git repository|not allowed", why, re.I):
            raise _NotHere(why)
        # The server does not serve a commit by id (or not shallow, as dumb HTTP):
        # every branch and tag, then look for the commit among them.
        log.debug("%s: shallow fetch of %s failed (%s); fetching all refs", loc.url, commit,
                  why)
        proc = git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", loc.url,
                   "+refs/heads/*:refs/iglubuild/src/heads/*",
                   "+refs/tags/*:refs/iglubuild/src/tags/*", local=local, network=network)
        if proc.returncode != 0:
            raise _NotHere(_last_line(proc))
    if not git.has_commit(commit):
        raise _NotHere(f"does not have commit {commit}")
    if source.tag:
        ref = f"refs/tags/{source.tag}"
        listed = git("ls-remote", loc.url, ref, f"{ref}^{{}}", local=local, network=network)
        if listed.returncode != 0:
            raise _NotHere(f"cannot list its tags: {_last_line(listed)}")
        points_to = _peeled(listed.stdout, ref)
        if points_to is not None:
            _check_tag(source, commit, points_to)


def _fsck(git: _Git, commit: str) -> None:
    """Recompute and check every object fetched; the commit must be complete."""
    git("update-ref", "refs/iglubuild/pin", commit)
    proc = git("fsck", "--full", "--no-dangling", "--no-progress")
    if proc.returncode != 0:
        raise _NotHere(f"git fsck failed: {_last_line(proc)}")


def _archive(git: _Git, commit: str, prefix: str, out: Path) -> None:
    proc = git("archive", "--format=tar", f"--prefix={prefix}/", f"--output={out}", commit)
    if proc.returncode != 0:
        raise _NotHere(f"git archive failed: {_last_line(proc)}")


# -- the fetcher ------------------------------------------------------------------


class GitFetcher:
    """Fetches git sources into the cache; also resolves tags for `iglubuild checksum`."""

    def __init__(self, settings: Settings, options: FetchOptions | None = None) -> None:
        self.settings = settings
        self.options = options or FetchOptions()
        self.distfiles = settings.distfiles_dir
        self.partial_dir = self.distfiles / ".partial"
        self.cancelled = threading.Event()
        self._places = _Places(self.options, self.cancelled)

    @contextlib.contextmanager
    def _scratch(self, commit: str) -> Iterator[_Git]:
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"git-{commit[:12]}-", dir=self.partial_dir))
        try:
            git = _Git(folder, self.options, self.cancelled)
            git.init()
            yield git
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self, commit: str) -> Iterator[None]:
        """One writer per commit across iglubuild processes sharing the cache."""
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        path = self.partial_dir / f"git-{commit}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            # Removed only once the archive exists: a run that then opens a
            # new lock file of that name finds the archive first.
            if archive_path(self.distfiles, commit).is_file():
                path.unlink(missing_ok=True)
            os.close(fd)

    def fetch(self, source: GitSourceLike) -> tuple[str, Path]:
        """Make the archive of a source's commit; returns (where from, or "" if cached; path).

        Raises FetchError naming the commit and every place looked in.
        """
        commit = _pin(source)
        entry = archive_path(self.distfiles, commit)
        if entry.is_file():
            _link_name(self.distfiles, source.display_name, entry)
            return "", entry
        if self.settings.offline:
            raise FetchError(f"{_what(source)} not in the distfiles cache and --offline is set")
        with self._lock(commit):
            if entry.is_file():  # another iglubuild made it while we waited
                return "", entry
            tried: list[str] = []
            for loc in locations(source, self.settings.mirrors):
                partial = self.partial_dir / f"git-{commit}.tar"
                try:
                    self._one(loc, source, commit, partial)
                except _NotHere as exc:
                    tried.append(f"{loc.describe()}: {exc}")
                    continue
                except TagMoved as exc:
                    raise FetchError(f"{_what(source)}: {loc.describe()}: {exc.message}",
                                     hint="if upstream moved the tag on purpose, check the "
                                          "new commit and run `iglubuild checksum --update "
                                          "NAME`") from None
                finally:
                    if not entry.is_file():
                        partial.unlink(missing_ok=True)
                _link_name(self.distfiles, source.display_name, entry)
                return loc.url, entry
        raise FetchError(f"{_what(source)} not found; looked in " + "; ".join(tried))

    def _one(self, loc: Location, source: GitSourceLike, commit: str, partial: Path) -> None:
        entry = archive_path(self.distfiles, commit)
        with self._scratch(commit) as git:
            if loc.kind == "bundle":
                _from_bundle(git, self._places.bundle_file(loc, git.scratch), source, commit)
            else:
                _from_repo(git, loc, source, commit)
            _fsck(git, commit)
            _archive(git, commit, source.archive_prefix, partial)
        os.chmod(partial, 0o644)
        entry.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, entry)

    def resolve_tag(self, source: GitSourceLike) -> tuple[str, str]:
        """The commit `source.tag` points to, and where that was read.

        Upstream is asked first (a pin should describe upstream's tag), then
        each mirror's bundle (its refs, peeled in a scratch repository) and
        bare repository.
        """
        if not source.tag:
            raise FetchError("the source has no tag: to resolve",
                             hint="add `tag:` (e.g. v{version}), or write commit: yourself")
        ref = f"refs/tags/{source.tag}"
        places = locations(source, self.settings.mirrors)
        tried: list[str] = []
        for loc in places[-1:] + places[:-1]:
            with self._scratch("resolve") as git:
                try:
                    return self._resolve_at(git, loc, ref), loc.url
                except _NotHere as exc:
                    tried.append(f"{loc.describe()}: {exc}")
        raise FetchError(f"tag {source.tag} not found; looked in " + "; ".join(tried))

    def _resolve_at(self, git: _Git, loc: Location, ref: str) -> str:
        local = loc.mirror is not None and loc.path is not None
        if loc.kind == "bundle":
            bundle = self._places.bundle_file(loc, git.scratch)
            heads = git("bundle", "list-heads", str(bundle), ref, local=True)
            if heads.returncode != 0:
                raise _NotHere(f"not a readable bundle: {_last_line(heads)}")
            if not heads.stdout.strip():
                raise _NotHere("no such tag")
            proc = git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(bundle),
                       f"+{ref}:refs/iglubuild/tag", local=True)
            if proc.returncode != 0:
                raise _NotHere(f"cannot read the bundle: {_last_line(proc)}")
            got = git("rev-parse", "--verify", "--quiet", "refs/iglubuild/tag^{commit}")
            if got.returncode != 0:
                raise _NotHere("the tag is not a commit")
            return got.stdout.strip()
        if local and not (loc.path and loc.path.is_dir()):
            raise _NotHere("no such repository")
        listed = git("ls-remote", loc.url, ref, f"{ref}^{{}}", local=local, network=not local)
        if listed.returncode != 0:
            raise _NotHere(_last_line(listed))
        commit = _peeled(listed.stdout, ref)
        if commit is None:
            raise _NotHere("no such tag")
        return commit


def fetch_git_sources(items: Iterable[tuple[str, GitSourceLike]], settings: Settings,
                      options: FetchOptions | None = None) -> list[Outcome]:
    """Fetch every (package, git source) pair; one Outcome each, failures included.

    Pairs naming the same commit share one fetch. Runs one source at a time:
    each git command is already I/O bound and the objects are few.
    """
    fetcher = GitFetcher(settings, options)
    done: dict[str, tuple[str, Path | None, str | None]] = {}  # commit -> (where, path, problem)
    out: list[Outcome] = []
    for package, source in items:
        name = source.display_name
        key = source.commit or ""
        if key and key in done:
            where, path, problem = done[key]
            if problem is None and path is not None:
                _link_name(settings.distfiles_dir, name, path)
                out.append(Outcome(package, name, "reused", path=path))
            else:
                out.append(Outcome(package, name, "failed", problem=problem))
            continue
        start = time.monotonic()
        try:
            where, path = fetcher.fetch(source)
        except FetchError as exc:
            if key:
                done[key] = ("", None, exc.message)
            out.append(Outcome(package, name, "failed", problem=exc.message))
            continue
        done[key] = (where, path, None)
        if where:
            log.debug("%s: %s from %s in %.1fs", package, name, where, time.monotonic() - start)
            out.append(Outcome(package, name, "downloaded", path=path, url=where,
                               size=path.stat().st_size))
        else:
            out.append(Outcome(package, name, "reused", path=path))
    return out
