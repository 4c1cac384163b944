"""Fetch stage: download sources into a distfiles cache keyed by checksum.

The cache lives in `settings.distfiles_dir`:

    by-sha256/<hex>        the verified file, named by its checksum
    by-sha512/<hex>        (sources that give a sha512 instead)
    <filename>             a readable symlink to the entry above
    .partial/              downloads in progress (never read by the build)

Keying by checksum means two recipes (or two recipe trees sharing one
distfiles folder) that name the same file share it, and a source whose URL
changes but whose content does not is not downloaded again. A file enters the
cache only by a rename after its checksum, computed while streaming, matched;
a mismatch keeps nothing. Only this stage talks to the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from iglubuild import __version__, integrity
from iglubuild.errors import FetchError, disk_full, is_disk_full
from iglubuild.settings import Settings

if TYPE_CHECKING:  # httpx and tqdm load only when something is downloaded
    import httpx
    from tqdm import tqdm

log = logging.getLogger("iglubuild.fetch")

# Checksum algorithms a recipe may give. When a source gives both, all are
# verified and the first one here names the cache entry.
ALGORITHMS = ("sha256", "sha512")
_HEX_LEN = {"sha256": 64, "sha512": 128}
_BUF = 1 << 20
_SOCKET_READ = 256 << 10  # see _widen_socket_reads
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_HEX = re.compile(r"[0-9a-f]+")
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class SourceLike(Protocol):
    """What fetch needs of a recipe source (iglubuild.recipe.Source fits)."""

    url: str | None
    sha256: str | None
    sha512: str | None
    filename: str | None
    unverified: str | None


def source_name(source: SourceLike) -> str:
    """The file name of a source in mirrors and the cache (explicit, or the URL's basename)."""
    name = getattr(source, "display_name", None) or source.filename
    if not name and source.url:
        name = urllib.parse.unquote(source.url.rstrip("/").rsplit("/", 1)[-1])
    return name or ""


def local_source(source: SourceLike) -> Path | None:
    """The path of a `file://` URL source that gives no checksum.

    The recipe model lets a file:// URL go without a checksum: it is the
    maintainer's own file, used in place rather than copied into the cache.
    """
    if source.url and source.url.startswith("file://") and not expected_sums(source):
        return _local_path(source.url)
    return None


class FetchFailed(FetchError):
    """One or more sources could not be fetched; one line per problem."""

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = problems
        first = problems[0] if problems else "fetch failed"
        super().__init__(first, hint)

    def lines(self) -> list[str]:
        return list(self.problems)


@dataclass(frozen=True)
class FetchOptions:
    """Knobs of the downloader that are not global settings."""

    parallel: int = 4  # downloads at once
    retries: int = 3  # further attempts per URL after the first one
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    backoff_cap: float = 8.0
    connect_timeout: float = 15.0
    read_timeout: float = 30.0  # longest silence tolerated in the middle of a body
    progress: bool | None = None  # None: bars only when stderr is a terminal


@dataclass
class Outcome:
    """What happened to one (package, source) pair."""

    package: str
    filename: str
    status: str  # "downloaded", "reused" or "failed"
    path: Path | None = None
    url: str | None = None
    size: int = 0
    problem: str | None = None


@dataclass
class FetchReport:
    """Every outcome of a fetch, by status."""

    downloaded: list[Outcome] = field(default_factory=list)
    reused: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_downloaded(self) -> int:
        return sum(o.size for o in self.downloaded)

    def add(self, outcome: Outcome) -> None:
        getattr(self, outcome.status).append(outcome)

    def summary(self) -> str:
        mib = self.bytes_downloaded / (1 << 20)
        return (f"downloaded {len(self.downloaded)} ({mib:.1f} MiB), "
                f"reused {len(self.reused)}, failed {len(self.failed)}")

    def raise_if_failed(self) -> None:
        if not self.failed:
            return
        problems = [f"{o.package}: {o.filename}: {o.problem}" for o in self.failed]
        hint = None
        if any("unverified" in (o.problem or "") for o in self.failed):
            names = sorted({o.package for o in self.failed if "unverified" in (o.problem or "")})
            hint = f"run `iglubuild checksum {' '.join(names)}` where the files are reachable"
        elif any("offline" in (o.problem or "") for o in self.failed):
            hint = "run `iglubuild fetch` without --offline where the files are reachable"
        raise FetchFailed(problems, hint)


# -- checksums and cache paths ----------------------------------------------


def expected_sums(source: SourceLike) -> dict[str, str]:
    """The checksums a source declares, algorithm -> lower-case hex."""
    sums = {}
    for algo in ALGORITHMS:
        value = getattr(source, algo, None)
        if value:
            sums[algo] = str(value).strip().lower()
    return sums


def _cache_key(sums: dict[str, str]) -> tuple[str, str]:
    for algo in ALGORITHMS:
        if algo in sums:
            return algo, sums[algo]
    raise ValueError("source has no checksum")


def cache_entry(distfiles: Path, algo: str, hexsum: str) -> Path:
    """Where the file with this checksum lives in the cache."""
    if len(hexsum) != _HEX_LEN[algo] or not _HEX.fullmatch(hexsum):
        raise FetchError(f"invalid {algo} checksum {hexsum!r}",
                         hint=f"a {algo} is {_HEX_LEN[algo]} hexadecimal digits")
    return distfiles / f"by-{algo}" / hexsum


def cached_path(source: SourceLike, settings: Settings) -> Path:
    """The verified cache file of a source, for the build stage.

    Raises FetchError when the source is unverified or not fetched yet, so the
    build never runs on something that did not pass the checksum.
    """
    if getattr(source, "git", None):
        from iglubuild.gitsource import cached_archive

        return cached_archive(source, settings)  # type: ignore[arg-type]
    local = local_source(source)
    if local is not None and not source.unverified:
        if not local.is_file():
            raise FetchError(f"{source.url}: no such file", hint="fix the source's file:// URL")
        return local
    if source.unverified or not expected_sums(source):
        raise FetchError(
            f"{source_name(source)}: source is unverified ({source.unverified or 'no checksum'})",
            hint="run `iglubuild checksum NAME` where the file is reachable",
        )
    algo, hexsum = _cache_key(expected_sums(source))
    path = cache_entry(settings.distfiles_dir, algo, hexsum)
    if not path.is_file():
        raise FetchError(f"{source_name(source)}: not in the distfiles cache ({path})",
                         hint="run `iglubuild fetch NAME` first")
    if not integrity.verify(path, algo, hexsum):
        integrity.drop(path)
        raise FetchError(f"{source_name(source)}: the cached file {path} changed since it was "
                         f"fetched ({algo} mismatch); dropped it",
                         hint="run `iglubuild fetch NAME` to download it again")
    return path


def _link_name(distfiles: Path, filename: str, entry: Path) -> None:
    """Point the readable name at the cache entry (atomically; never over a real file)."""
    if not filename or "/" in filename or filename.startswith("."):
        return
    link = os.path.join(distfiles, filename)
    # Entries are always distfiles/by-<algo>/<hex>: the relative target is
    # known without os.path.relpath (which costs more than the rest here).
    target = f"{entry.parent.name}/{entry.name}"
    try:
        if os.readlink(link) == target:
            return
    except FileNotFoundError:
        pass
    except OSError:
        # A real file of that name (e.g. put there by hand): leave it alone.
        return
    tmp = os.path.join(distfiles, f".{filename}.{os.getpid()}.{threading.get_ident()}.lnk")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def store(path: Path, sums: dict[str, str], filename: str, settings: Settings) -> Path:
    """Move a file whose checksums were just computed into the cache; returns the entry.

    For files downloaded by `iglubuild checksum`: once the sum is written into
    the recipe, the next fetch finds the file without downloading it again.
    """
    algo = "sha256" if "sha256" in sums else next(iter(sums))
    entry = cache_entry(settings.distfiles_dir, algo, sums[algo])
    entry.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o644)
    os.replace(path, entry)
    integrity.seal(entry, algo, sums[algo])
    _link_name(settings.distfiles_dir, filename, entry)
    return entry


# -- candidate URLs -----------------------------------------------------------


def candidate_urls(source: SourceLike, mirrors: Sequence[str]) -> list[tuple[str, str | None]]:
    """(url, mirror) pairs in the order they are tried: mirrors first, then the source's URL."""
    urls: list[tuple[str, str | None]] = []
    name = urllib.parse.quote(source_name(source))
    for mirror in mirrors:
        base = mirror.rstrip("/")
        if "://" not in base:  # a plain folder is a file:// mirror
            base = Path(base).absolute().as_uri()
        urls.append((f"{base}/{name}", mirror))
    if source.url:
        urls.append((source.url, None))
    return urls


def _local_path(url: str) -> Path | None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "file":
        return None
    return Path(urllib.parse.unquote(parsed.path))


# -- one download -------------------------------------------------------------


class _NotThere(Exception):
    """The URL does not have the file (404, other 4xx, missing local file): try the next."""


class _Mismatch(Exception):
    def __init__(self, expected: dict[str, str], actual: dict[str, str]) -> None:
        self.expected = expected
        self.actual = actual
        algo = next(a for a in ALGORITHMS if a in expected and expected[a] != actual[a])
        super().__init__(f"checksum mismatch: expected {algo} {expected[algo]}, "
                         f"got {actual[algo]}")


class _GaveUp(Exception):
    """Retries exhausted on connection errors, timeouts or 5xx."""


class _TooBig(Exception):
    """The body is bigger than the download limit: the partial file is dropped."""


class _TooSlow(Exception):
    """The body came slower than the minimum rate (a trickle): the partial file is kept."""


def _mib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class _Limits:
    """How big and how slow one download may be (see Settings.max_download, min_rate)."""

    max_bytes: int
    from_recipe: bool  # max_bytes is the source's own `size:`
    min_rate: int
    window: float

    @classmethod
    def of(cls, source: SourceLike, settings: Settings) -> _Limits:
        size = getattr(source, "size", None)  # getattr: recipes cached before `size:`
        if isinstance(size, int) and size > 0:
            return cls(size, True, settings.min_rate, settings.rate_window)
        return cls(settings.max_download, False, settings.min_rate, settings.rate_window)

    def too_big(self, what: str) -> _TooBig:
        if self.from_recipe:
            return _TooBig(f"{what} is bigger than the recipe's `size: {self.max_bytes}`; "
                           "dropped it (fix `size:` if upstream's file really grew)")
        return _TooBig(f"{what} is bigger than the download limit of "
                       f"{_mib(self.max_bytes)}; dropped it (raise it with --max-download "
                       "or IGLUBUILD_MAX_DOWNLOAD, or give the source a `size:`)")

    def too_slow(self, rate: float) -> _TooSlow:
        return _TooSlow(f"download slower than the minimum rate: {rate:.0f} bytes/s over "
                        f"{self.window:g} s, at least {self.min_rate} bytes/s wanted (lower it "
                        "with --min-rate or IGLUBUILD_MIN_RATE, or widen --rate-window)")


class _Restart(Exception):
    """The partial file cannot be continued: drop it and start over."""


class _Hashers:
    def __init__(self, algos: Iterable[str]) -> None:
        self.h = {a: hashlib.new(a) for a in algos}

    def update(self, data: bytes | memoryview) -> None:
        for h in self.h.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self.h.items()}


def _hash_file(path: Path, algos: Iterable[str]) -> _Hashers:
    hashers = _Hashers(algos)
    with open(path, "rb") as f:
        while chunk := f.read(_BUF):
            hashers.update(chunk)
    return hashers


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


@dataclass
class _Job:
    """One file to download (several (package, source) pairs may share it)."""

    package: str
    source: SourceLike
    sums: dict[str, str]  # expected; empty when the sum is what we want to learn
    entry: Path | None
    partial: Path
    algos: tuple[str, ...] = ()  # computed while streaming (defaults to those of sums)
    actual: dict[str, str] = field(default_factory=dict)  # filled by a good download

    def __post_init__(self) -> None:
        if not self.algos:
            self.algos = tuple(self.sums)


@dataclass(frozen=True)
class Downloaded:
    """A file downloaded without a known checksum (for `iglubuild checksum`)."""

    url: str
    size: int
    sums: dict[str, str]  # algorithm -> hex, computed while streaming
    path: Path  # a temporary file in the distfiles folder; `store` or unlink it


class Downloader:
    """Downloads files into the cache through one shared httpx client.

    Thread-safe: `fetch_sources` runs `download` from a bounded pool. Also used
    by `iglubuild checksum`, which downloads without knowing the sum first.
    """

    def __init__(self, settings: Settings, options: FetchOptions) -> None:
        self.settings = settings
        self.options = options
        self.distfiles = settings.distfiles_dir
        self.partial_dir = self.distfiles / ".partial"
        self.requests = 0  # HTTP requests sent; tests use it to check retries are bounded
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        show = options.progress if options.progress is not None else sys.stderr.isatty()
        self.show_progress = bool(show)
        self._slots = list(range(options.parallel, 0, -1))
        # Set on Ctrl-C: running downloads stop at their next chunk and keep
        # their partial file, so the next run resumes them.
        self.cancelled = threading.Event()

    # The client is made on first use so a fully cached fetch never builds one.
    @property
    def client(self) -> httpx.Client:
        import httpx

        with self._lock:
            if self._client is None:
                _widen_socket_reads()
                n = max(1, self.options.parallel)
                self._client = httpx.Client(
                    http1=True,
                    http2=False,
                    follow_redirects=True,
                    timeout=httpx.Timeout(self.options.read_timeout,
                                          connect=self.options.connect_timeout),
                    limits=httpx.Limits(max_connections=2 * n, max_keepalive_connections=n),
                    headers={"User-Agent": f"iglubuild/{__version__}",
                             "Accept-Encoding": "identity"},
                )
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- progress bars --

    @contextlib.contextmanager
    def _bar(self, desc: str, total: int | None, initial: int = 0) -> Iterator[tqdm | None]:
        if not self.show_progress:
            yield None
            return
        from tqdm import tqdm

        with self._lock:
            slot = self._slots.pop() if self._slots else 1
        bar = tqdm(total=total, initial=initial, desc=desc[:30], unit="B", unit_scale=True,
                   unit_divisor=1024, position=slot, leave=False, file=sys.stderr,
                   miniters=1, mininterval=0.2)
        try:
            yield bar
        finally:
            bar.close()
            with self._lock:
                self._slots.append(slot)

    # -- the download of one file, from the first URL that has it --

    def download(self, job: _Job) -> tuple[str, int]:
        """Fill job.entry from the candidate URLs; returns (url, size).

        Raises FetchError naming every URL tried and what went wrong there.
        """
        if job.entry is None:
            raise ValueError("download() needs a cache entry; see download_unverified()")
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        job.entry.parent.mkdir(parents=True, exist_ok=True)
        with self._file_lock(job.partial) as done:
            if job.entry.is_file():  # another iglubuild fetched it while we waited
                done()
                return "", job.entry.stat().st_size
            url, size = self._from_candidates(job)
            os.chmod(job.partial, 0o644)
            os.replace(job.partial, job.entry)
            algo, hexsum = _cache_key(job.sums)
            integrity.seal(job.entry, algo, hexsum)
            done()
            return url, size

    def download_unverified(self, package: str, source: SourceLike,
                            algos: Sequence[str] = ("sha256",)) -> Downloaded:
        """Download a source whose checksum is not known yet, computing `algos`.

        Nothing can be verified, so the source's own URL is tried first and
        mirrors only after it (a checksum should describe upstream's file).
        The file stays in a temporary place until the caller decides (see
        `store`): `iglubuild checksum` writes the sum first, then caches it.
        """
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        partial = self.partial_dir / f"checksum-{os.getpid()}-{threading.get_ident()}"
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        job = _Job(package, source, {}, None, partial, algos=tuple(algos))
        try:
            url, size = self._from_candidates(job, upstream_first=True)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        return Downloaded(url, size, dict(job.actual), partial)

    def _from_candidates(self, job: _Job, *, upstream_first: bool = False) -> tuple[str, int]:
        tried: list[str] = []
        candidates = candidate_urls(job.source, self.settings.mirrors)
        if upstream_first:
            candidates = candidates[-1:] + candidates[:-1] if job.source.url else candidates
        for url, mirror in candidates:
            where = f"{url} (mirror {mirror})" if mirror else url
            try:
                return url, self._fetch_url(url, job)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                error = disk_full(job.partial.parent)  # free space before the cleanup
                with contextlib.suppress(FileNotFoundError):
                    job.partial.unlink()  # give the space back: it cannot be resumed anyway
                raise error from exc
            except _TooBig as exc:
                with contextlib.suppress(FileNotFoundError):
                    job.partial.unlink()  # never keep the start of an endless body
                tried.append(f"{where}: {exc}")
            except (_NotThere, _Mismatch, _GaveUp, _TooSlow) as exc:
                tried.append(f"{where}: {exc}")
        if not tried:
            tried.append("no URL to try (no url and no mirror)")
        raise FetchError("; ".join(tried))

    @contextlib.contextmanager
    def _file_lock(self, partial: Path) -> Iterator[Callable[[], None]]:
        """Hold `<partial>.lock` so two iglubuild runs never write the same partial file.

        The second run waits, then finds the cache entry. The lock file is
        removed only once the entry exists (call the yielded `done`): after a
        failure it stays, or a third run could lock a new file of the same
        name while the second still writes.
        """
        lock_path = partial.with_name(partial.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        finished = False

        def done() -> None:
            nonlocal finished
            finished = True

        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield done
        finally:
            if finished:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
            os.close(fd)

    def _fetch_url(self, url: str, job: _Job) -> int:
        local = _local_path(url)
        if local is not None:
            return self._copy_local(local, job)
        if not url.startswith(("http://", "https://")):
            raise _NotThere(f"unsupported URL scheme in {url!r}")
        return self._fetch_http(url, job)

    def _copy_local(self, path: Path, job: _Job) -> int:
        """A file:// URL: copy while hashing, like a download, so the same checks hold."""
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise _NotThere("no such file") from exc
        hashers = _Hashers(job.algos)
        size = 0
        limits = _Limits.of(job.source, self.settings)
        with src, open(job.partial, "wb") as out, \
                self._bar(source_name(job.source), os.fstat(src.fileno()).st_size) as bar:
            while chunk := src.read(_BUF):
                if size + len(chunk) > limits.max_bytes:  # file:///dev/zero
                    raise limits.too_big("the file")
                out.write(chunk)
                hashers.update(chunk)
                size += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        self._verify(hashers, job, resumed=False)
        return size

    def _verify(self, hashers: _Hashers, job: _Job, *, resumed: bool) -> None:
        actual = hashers.hexdigests()
        if all(actual[a] == v for a, v in job.sums.items()):
            job.actual = actual
            return
        with contextlib.suppress(FileNotFoundError):
            job.partial.unlink()
        if resumed:
            # The kept part may come from another URL or a changed file.
            raise _Restart("checksum mismatch after resuming")
        raise _Mismatch(job.sums, actual)

    def _backoff(self, attempt: int) -> None:
        delay = min(self.options.backoff_cap, self.options.backoff * (2 ** attempt))
        if self.cancelled.wait(delay * (1 + 0.25 * random.random())):
            raise _Cancelled()

    def _fetch_http(self, url: str, job: _Job) -> int:
        import httpx

        last = "no attempt"
        attempts = self.options.retries + 1
        allow_range = True
        for attempt in range(attempts):
            if attempt:
                self._backoff(attempt - 1)
            offset = job.partial.stat().st_size if job.partial.exists() else 0
            if not allow_range and offset:
                job.partial.unlink()
                offset = 0
            try:
                return self._one_request(url, job, offset)
            except _Restart as exc:
                log.debug("%s: %s; starting over", url, exc)
                last = str(exc)
                allow_range = False
            except _RetryableStatus as exc:
                log.debug("%s: %s (attempt %d of %d)", url, exc, attempt + 1, attempts)
                last = str(exc)
            except (httpx.UnsupportedProtocol, httpx.TooManyRedirects, httpx.InvalidURL) as exc:
                # Retrying cannot help (e.g. a redirect to ftp:// or a loop).
                raise _NotThere(f"{type(exc).__name__}: {exc}") from exc
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
                log.debug("%s: %s (attempt %d of %d)", url, last, attempt + 1, attempts)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.debug("%s: %s (attempt %d of %d)", url, last, attempt + 1, attempts)
        raise _GaveUp(f"{last} (gave up after {attempts} attempts)")

    def _one_request(self, url: str, job: _Job, offset: int) -> int:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._lock:
            self.requests += 1
        with self.client.stream("GET", url, headers=headers) as resp:
            status = resp.status_code
            if status == 416 and offset:
                # The kept part may already be the whole file.
                m = _UNSATISFIED_RANGE.match(resp.headers.get("content-range", ""))
                if m is not None and int(m.group(1)) == offset:
                    self._verify(_hash_file(job.partial, job.algos), job, resumed=True)
                    return offset
                raise _Restart("server refused the range (416)")
            if status >= 500 or status in (408, 429):
                raise _RetryableStatus(f"HTTP {status} {resp.reason_phrase}")
            if status >= 400:
                raise _NotThere(f"HTTP {status} {resp.reason_phrase}")
            if status == 206:
                cr = _parse_content_range(resp.headers.get("content-range"))
                if not offset or cr is None or cr[0] != offset:
                    raise _Restart(f"inconsistent partial response "
                                   f"(Content-Range {resp.headers.get('content-range')!r} "
                                   f"for offset {offset})")
                hashers = _hash_file(job.partial, job.algos)
                mode = "ab"
                total: int | None = cr[2]
                resumed = True
                log.debug("%s: resuming at byte %d", url, offset)
            elif status == 200:
                # No Range support (or none asked): the body is the whole file.
                hashers = _Hashers(job.algos)
                mode = "wb"
                offset = 0
                length = resp.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                resumed = False
            else:
                raise _NotThere(f"unexpected HTTP {status} {resp.reason_phrase}")
            limits = _Limits.of(job.source, self.settings)
            if total is not None and total > limits.max_bytes:
                raise limits.too_big(f"the announced size ({total} bytes)")
            size = offset
            with open(job.partial, mode) as out, \
                    self._bar(source_name(job.source), total, initial=offset) as bar:
                size += _stream(resp, out, hashers, bar, self.cancelled, limits, offset)
        if self.cancelled.is_set():
            # The body may have ended only because the client was closed.
            raise _Cancelled()
        self._verify(hashers, job, resumed=resumed)
        return size


class _RetryableStatus(Exception):
    """5xx, 408 or 429: the server may answer next time."""


class _Cancelled(Exception):
    """The user interrupted the fetch."""


def _stream(resp: httpx.Response, out: IO[bytes], hashers: _Hashers, bar: tqdm | None,
            cancelled: threading.Event, limits: _Limits, offset: int = 0) -> int:
    """Body to file and hashers in one pass; returns the byte count.

    Stops a body that grows past `limits.max_bytes` (counting the `offset`
    bytes already kept) and one that, over any `limits.window` seconds,
    brings less than `limits.min_rate` bytes a second: the read timeout
    alone only catches silence, not a byte every few seconds.
    """
    n = 0
    write = out.write
    update = hashers.update
    room = limits.max_bytes - offset
    window_start = time.monotonic()
    window_bytes = 0
    for chunk in resp.iter_raw():
        if cancelled.is_set():
            raise _Cancelled()
        n += len(chunk)
        if n > room:
            raise limits.too_big("the body")
        write(chunk)
        update(chunk)
        if bar is not None:
            bar.update(len(chunk))
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= limits.window:
            if window_bytes / elapsed < limits.min_rate:
                raise limits.too_slow(window_bytes / elapsed)
            window_start, window_bytes = time.monotonic(), 0
    return n


def _widen_socket_reads() -> None:
    """Let httpcore read the socket up to 256 KiB at a time instead of 64 KiB.

    Every read goes through httpcore and h11 in Python, which copy it several
    times; at 64 KiB that per-read cost was about a third of fetch's CPU per
    byte, and on a 2-core machine the download rate follows CPU.
    bench/fetch_throughput.py, 1 GiB in 4 files against curl: 64 KiB gave 2.8
    CPU-s per GiB and 0.72 of curl; 256 KiB gives 2.0 and 1.0, with peak RSS
    44 MiB instead of 38 (1 MiB reads were no faster and took 70 MiB).
    `READ_NUM_BYTES` is the knob httpcore has for this (encode/httpcore#135
    raised it from 4 KiB for the same reason). It is a class attribute, so
    this sets it for the process; fetch is iglubuild's only user of httpx. A
    read returns what the socket has, so small responses are not delayed.
    """
    import httpcore

    conn = httpcore.HTTP11Connection
    current = getattr(conn, "READ_NUM_BYTES", None)
    if isinstance(current, int):  # a later httpcore may drop the knob: then only slower
        conn.READ_NUM_BYTES = max(current, _SOCKET_READ)


# -- the stage ----------------------------------------------------------------


def fetch_sources(
    items: Iterable[tuple[str, SourceLike]],
    settings: Settings,
    options: FetchOptions | None = None,
    *,
    check: bool = True,
) -> FetchReport:
    """Make every (package, source) pair available in the distfiles cache.

    Sources without a URL (`file:` sources beside the recipe) are skipped;
    git sources are fetched by iglubuild.gitsource into by-commit/.
    Files already cached are reused without touching the network; the rest
    download in parallel. With `check` (the default) any failure raises
    FetchFailed listing all of them, after the other downloads finished.
    """
    options = options or FetchOptions()
    start = time.monotonic()
    report = FetchReport()
    distfiles = settings.distfiles_dir
    # Pairs naming a file already named by an earlier pair wait for its outcome.
    sharing: dict[Path, list[tuple[str, SourceLike]]] = {}
    primary: dict[Path, Outcome] = {}
    to_download: list[_Job] = []
    git_items: list[tuple[str, SourceLike]] = []  # fetched by iglubuild.gitsource
    for package, source in items:
        if getattr(source, "git", None):
            git_items.append((package, source))
            continue
        if not getattr(source, "url", None):
            continue
        sums = expected_sums(source)
        local = local_source(source)
        if local is not None and not source.unverified:
            if local.is_file():
                report.add(Outcome(package, source_name(source), "reused", path=local))
            else:
                report.add(Outcome(package, source_name(source), "failed",
                                   problem=f"{source.url}: no such file"))
            continue
        if source.unverified or not sums:
            reason = source.unverified or "no checksum"
            report.add(Outcome(package, source_name(source), "failed",
                               problem=f"source is unverified ({reason}); refusing to use it"))
            continue
        try:
            algo, hexsum = _cache_key(sums)
            entry = cache_entry(distfiles, algo, hexsum)
        except FetchError as exc:
            report.add(Outcome(package, source_name(source), "failed", problem=exc.message))
            continue
        if entry in sharing:
            sharing[entry].append((package, source))
            continue
        sharing[entry] = []
        altered = False
        if os.path.isfile(entry):
            # Verified on use (see iglubuild/integrity.py): a changed file is
            # dropped and fetched again, never reused.
            if integrity.verify(entry, algo, hexsum):
                _link_name(distfiles, source_name(source), entry)
                primary[entry] = Outcome(package, source_name(source), "reused", path=entry)
                continue
            integrity.drop(entry)
            altered = True
            if not settings.offline:  # offline, the failure below says it
                log.warning("%s: cached file %s changed since it was fetched; dropped it, "
                            "downloading again", source_name(source), entry)
        if settings.offline:
            what = ("the cached file changed since it was fetched (dropped it)" if altered
                    else "not in the distfiles cache")
            primary[entry] = Outcome(
                package, source_name(source), "failed",
                problem=f"{what} and --offline is set ({algo} {hexsum})")
        else:
            to_download.append(_Job(package, source, sums, entry,
                                    distfiles / ".partial" / f"{algo}-{hexsum}"))
    if to_download:
        for job, outcome in zip(to_download, _download_all(to_download, settings, options),
                                strict=True):
            assert job.entry is not None  # set for every job that downloads
            primary[job.entry] = outcome
    for entry, outcome in primary.items():
        report.add(outcome)
        for package, source in sharing[entry]:
            if outcome.status == "failed":
                report.add(Outcome(package, source_name(source), "failed",
                                   problem=outcome.problem))
            else:
                _link_name(distfiles, source_name(source), entry)
                report.add(Outcome(package, source_name(source), "reused", path=entry))
    if git_items:
        from iglubuild.gitsource import fetch_git_sources

        for outcome in fetch_git_sources(git_items, settings, options):  # type: ignore[arg-type]
            report.add(outcome)
    report.seconds = time.monotonic() - start
    if check:
        report.raise_if_failed()
    return report


def _download_all(jobs: list[_Job], settings: Settings,
                  options: FetchOptions) -> list[Outcome]:
    from tqdm import tqdm

    downloader = Downloader(settings, options)
    overall = tqdm(total=len(jobs), desc="fetch", unit="file", position=0, leave=False,
                   file=sys.stderr, disable=not downloader.show_progress)

    def one(job: _Job) -> Outcome:
        try:
            url, size = downloader.download(job)
        except FetchError as exc:
            return Outcome(job.package, source_name(job.source), "failed", problem=exc.message)
        finally:
            overall.update(1)
        assert job.entry is not None
        _link_name(settings.distfiles_dir, source_name(job.source), job.entry)
        return Outcome(job.package, source_name(job.source), "downloaded" if url else "reused",
                       path=job.entry, url=url or None, size=size if url else 0)

    pool = ThreadPoolExecutor(max_workers=max(1, min(options.parallel, len(jobs))),
                              thread_name_prefix="fetch")
    try:
        futures = [pool.submit(one, job) for job in jobs]
        # Wait in short slices: a thread blocked on a lock does not see
        # Ctrl-C until it wakes, and the user should not wait for the network.
        while wait(futures, timeout=0.2).not_done:
            pass
        return [f.result() for f in futures]
    except BaseException:
        # Ctrl-C: stop queued jobs, make running ones give up at their next
        # chunk (closing the client wakes those waiting on the network).
        downloader.cancelled.set()
        pool.shutdown(wait=False, cancel_futures=True)
        downloader.close()
        raise
    finally:
        pool.shutdown(wait=True)
        overall.close()
        downloader.close()
