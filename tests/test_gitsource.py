"""Git sources: real repositories made here with `git init`, real bundles, a real
bare repository served by dumb HTTP (python's http.server on 127.0.0.1).

Nothing is mocked: each test makes its own upstream repository (commits, an
annotated tag), publishes it as a mirror would (`git/<repo>.bundle`,
`git/<repo>.git`) and fetches it through `fetch_sources`, the path a build
takes.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iglubuild.errors import FetchError
from iglubuild.fetch import FetchFailed, FetchOptions, cached_path, fetch_sources
from iglubuild.gitsource import GitFetcher, archive_path
from iglubuild.plan import package_inputs
from iglubuild.recipe import LoadedRecipe, Source, load_tree
from iglubuild.settings import Settings
from iglubuild.unpack import UnpackError, prepare_source

FAST = FetchOptions(retries=1, backoff=0.01, read_timeout=5.0, connect_timeout=2.0,
                    progress=False)

# Fixed identities and dates: the tests' repositories are the same every run.
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Up Stream",
    "GIT_AUTHOR_EMAIL": "up@example.org",
    "GIT_COMMITTER_NAME": "Up Stream",
    "GIT_COMMITTER_EMAIL": "up@example.org",
    "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z",
    "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
}


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd,
                          env=GIT_ENV, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@dataclass
class Upstream:
    """A project's repository: v1.0 (annotated tag) and a later commit on main."""

    work: Path
    v1: str
    v2: str

    def bundle(self, dest: Path, *refs: str) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        git("bundle", "create", str(dest), *(refs or ("--all",)), cwd=self.work)
        return dest

    def bare(self, dest: Path) -> Path:
        """A bare copy, ready for dumb HTTP (`git update-server-info`)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "--quiet", "--bare", str(self.work), str(dest))
        git("update-server-info", cwd=dest)
        return dest


def make_upstream(root: Path, files: dict[str, str] | None = None,
                  symlinks: dict[str, str] | None = None) -> Upstream:
    work = root / "proj"
    work.mkdir(parents=True)
    git("init", "--quiet", cwd=work)
    for name, text in (files or {"README": "proj\n", "src/main.c": "int main(void){}\n"}).items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    for name, target in (symlinks or {}).items():
        os.symlink(target, work / name)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "one", cwd=work)
    git("tag", "-a", "-m", "release 1.0", "v1.0", cwd=work)
    v1 = git("rev-parse", "HEAD", cwd=work)
    (work / "NEWS").write_text("two\n")
    git("add", "NEWS", cwd=work)
    git("commit", "--quiet", "-m", "two", cwd=work)
    return Upstream(work, v1, git("rev-parse", "HEAD", cwd=work))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@dataclass
class Web:
    """python's http.server on 127.0.0.1 serving `root`; `requests` in order."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: object, **kw: object) -> _Quiet:
        return _Quiet(*args, directory=str(root), **kw)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    server.daemon_threads = True
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Web(root, f"http://127.0.0.1:{server.server_address[1]}",
                  server.requests)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def up(tmp_path: Path) -> Upstream:
    return make_upstream(tmp_path / "upstream")


def src(url: str, commit: str | None, tag: str | None = "v1.0",
        prefix: str = "proj-1.0") -> Source:
    """A validated Source as the loader makes it (archive prefix <name>-<version>)."""
    fields = {"git": url, "commit": commit, "tag": tag}
    out = Source(**{k: v for k, v in fields.items() if v is not None})
    out._archive_prefix = prefix
    return out


def settings_for(tmp_path: Path, *mirrors: str | Path, offline: bool = False,
                 cache: str = "distfiles") -> Settings:
    return Settings(build_dir=tmp_path / "build", distfiles=tmp_path / cache,
                    mirrors=tuple(str(m) for m in mirrors), offline=offline)


def fetch(settings: Settings, source: Source, package: str = "proj"):  # noqa: ANN201
    return fetch_sources([(package, source)], settings, FAST)


def leftovers(settings: Settings) -> list[str]:
    """What a failed fetch left in the cache, lock files aside."""
    root = settings.distfiles_dir
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not p.name.endswith(".lock") and p.name != ".partial")


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


UNREACHABLE = "http://127.0.0.1:9/nobody/proj.git"  # port 9 (discard): nothing listens


# ---------------------------------------------------------------- where it comes from


def test_bundle_mirror_gives_the_archive_and_is_reused(tmp_path: Path, up: Upstream) -> None:
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle", "v1.0")
    settings = settings_for(tmp_path, mirror.as_uri())
    source = src(UNREACHABLE, up.v1)
    report = fetch(settings, source)
    [outcome] = report.downloaded
    assert outcome.url == (mirror / "git" / "proj.bundle").as_uri()
    entry = archive_path(settings.distfiles_dir, up.v1)
    assert outcome.path == entry and entry.is_file()
    got = members(entry)
    assert {"proj-1.0/README", "proj-1.0/src/main.c"} <= set(got)
    assert "proj-1.0/NEWS" not in got  # v1's tree, not main's
    link = settings.distfiles_dir / f"proj-{up.v1[:12]}.tar"
    assert os.readlink(link) == f"by-commit/{up.v1}.tar"
    assert cached_path(source, settings) == entry
    # Cached: nothing is looked up again, even with the mirror gone.
    (mirror / "git" / "proj.bundle").unlink()
    again = fetch(settings, source)
    assert [o.status for o in again.reused] == ["reused"] and not again.downloaded
    assert leftovers(settings) == ["by-commit", f"by-commit/{up.v1}.tar", link.name]


def test_bare_repository_mirror_over_dumb_http(tmp_path: Path, up: Upstream, web: Web) -> None:
    up.bare(web.root / "git" / "proj.git")
    settings = settings_for(tmp_path, web.url)
    report = fetch(settings, src(UNREACHABLE, up.v1))
    assert report.downloaded[0].url == f"{web.url}/git/proj.git"
    # The bundle was asked for first (404), then the bare repository.
    assert web.requests[0] == "/git/proj.bundle"
    assert any(r.startswith("/git/proj.git/") for r in web.requests[1:])
    assert "proj-1.0/README" in members(archive_path(settings.distfiles_dir, up.v1))


def test_bundle_from_an_http_mirror(tmp_path: Path, up: Upstream, web: Web) -> None:
    up.bundle(web.root / "git" / "proj.bundle")
    settings = settings_for(tmp_path, web.url)
    report = fetch(settings, src(UNREACHABLE, up.v2, tag=None))
    assert report.downloaded[0].url == f"{web.url}/git/proj.bundle"
    assert web.requests == ["/git/proj.bundle"]
    assert "proj-1.0/NEWS" in members(archive_path(settings.distfiles_dir, up.v2))


def test_fallback_order_mirrors_then_upstream(tmp_path: Path, up: Upstream, web: Web) -> None:
    empty = tmp_path / "empty-mirror"
    (empty / "git").mkdir(parents=True)
    repo_only = tmp_path / "repo-mirror"
    up.bare(repo_only / "git" / "proj.git")
    up.bare(web.root / "upstream" / "proj.git")
    upstream_url = f"{web.url}/upstream/proj.git"
    # Mirrors in order: the empty one, then the one with a bare repository.
    settings = settings_for(tmp_path, empty, repo_only.as_uri())
    report = fetch(settings, src(upstream_url, up.v1))
    assert report.downloaded[0].url == (repo_only / "git" / "proj.git").as_uri()
    assert web.requests == []  # upstream was not needed
    # No mirror has it: the recipe's URL (dumb HTTP: no shallow fetch, all refs).
    settings = settings_for(tmp_path, empty, cache="other")
    report = fetch(settings, src(upstream_url, up.v1))
    assert report.downloaded[0].url == upstream_url
    assert web.requests and all(r.startswith("/upstream/proj.git/") for r in web.requests)


# ---------------------------------------------------------------- failures: exit 3, nothing kept


def test_unknown_commit_names_recipe_commit_and_every_place(tmp_path: Path, up: Upstream,
                                                            web: Web) -> None:
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")
    up.bare(mirror / "git" / "proj.git")
    up.bare(web.root / "upstream" / "proj.git")
    settings = settings_for(tmp_path, mirror)
    nobody = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(FetchFailed) as info:
        fetch(settings, src(f"{web.url}/upstream/proj.git", nobody))
    [line] = info.value.lines()
    assert line.startswith(f"proj: proj-{nobody[:12]}.tar: commit {nobody} (tag v1.0) not found")
    for place in (mirror / "git" / "proj.bundle", mirror / "git" / "proj.git"):
        assert f"{place.as_uri()} (mirror)" in line
    assert f"{web.url}/upstream/proj.git:" in line
    assert info.value.exit_code == 3
    assert leftovers(settings) == []


def test_moved_tag_is_an_error(tmp_path: Path, up: Upstream) -> None:
    mirror = tmp_path / "mirror"
    git("tag", "-f", "-a", "-m", "moved", "v1.0", up.v2, cwd=up.work)  # upstream moved it
    up.bundle(mirror / "git" / "proj.bundle")
    up.bare(mirror / "git" / "proj.git")
    settings = settings_for(tmp_path, mirror)
    with pytest.raises(FetchFailed) as info:
        fetch(settings, src(UNREACHABLE, up.v1))
    [line] = info.value.lines()
    assert f"tag v1.0 points to {up.v2}, not to commit {up.v1}" in line
    assert "proj.bundle" in line  # where: the first place that has the tag
    assert leftovers(settings) == []
    # The bare repository says the same (ls-remote, peeled).
    (mirror / "git" / "proj.bundle").unlink()
    with pytest.raises(FetchFailed, match=f"proj.git .mirror.: tag v1.0 points to {up.v2}"):
        fetch(settings, src(UNREACHABLE, up.v1))
    # Without a tag the commit alone is the pin: it is still there, so it is used.
    assert fetch(settings, src(UNREACHABLE, up.v1, tag=None)).downloaded


def test_corrupt_bundle_falls_through_and_fails_cleanly(tmp_path: Path, up: Upstream) -> None:
    mirror = tmp_path / "mirror"
    bundle = up.bundle(mirror / "git" / "proj.bundle")
    data = bytearray(bundle.read_bytes())
    cut = data.index(b"PACK")
    data[cut + 40:] = os.urandom(len(data) - cut - 40)  # header intact, pack garbage
    bundle.write_bytes(bytes(data))
    settings = settings_for(tmp_path, mirror)
    with pytest.raises(FetchFailed) as info:
        fetch(settings, src(UNREACHABLE, up.v1))
    [line] = info.value.lines()
    assert f"{bundle.as_uri()} (mirror): cannot read the bundle" in line
    assert leftovers(settings) == []
    # A bundle that is not one at all.
    bundle.write_text("this is not a bundle\n")
    with pytest.raises(FetchFailed, match="not a readable bundle"):
        fetch(settings, src(UNREACHABLE, up.v1))
    # The next place (a bare repository in the same mirror) serves it.
    up.bare(mirror / "git" / "proj.git")
    report = fetch(settings, src(UNREACHABLE, up.v1))
    assert report.downloaded[0].url == (mirror / "git" / "proj.git").as_uri()


def test_offline_uses_only_the_cache(tmp_path: Path, up: Upstream) -> None:
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")
    source = src(UNREACHABLE, up.v1)
    offline = settings_for(tmp_path, mirror, offline=True)
    with pytest.raises(FetchFailed, match="not in the distfiles cache and --offline is set") \
            as info:
        fetch(offline, source)
    assert "without --offline" in (info.value.hint or "")
    assert leftovers(offline) == []
    fetch(settings_for(tmp_path, mirror), source)
    assert fetch(offline, source).reused
    with pytest.raises(FetchError, match="not in the distfiles cache"):
        cached_path(src(UNREACHABLE, up.v2), offline)


def test_unverified_git_source_is_refused(tmp_path: Path) -> None:
    source = Source(git="https://example.org/proj.git", tag="v1", unverified="no commit yet")
    with pytest.raises(FetchFailed, match="unverified"):
        fetch(settings_for(tmp_path), source)


# ---------------------------------------------------------------- the archive


def test_same_commit_same_bytes_from_every_place(tmp_path: Path, web: Web) -> None:
    # export-subst would print the refs the scratch repository happens to have.
    up = make_upstream(tmp_path / "upstream", files={
        "version.txt": "$Format:%H%d$\n", ".gitattributes": "version.txt export-subst\n",
        "run.sh": "#!/bin/sh\n"})
    os.chmod(up.work / "run.sh", 0o755)
    git("add", "-A", cwd=up.work)
    git("commit", "--quiet", "-m", "exec bit", cwd=up.work)
    commit = git("rev-parse", "HEAD", cwd=up.work)
    m1 = tmp_path / "m1"
    up.bundle(m1 / "git" / "proj.bundle")
    m2 = tmp_path / "m2"
    up.bare(m2 / "git" / "proj.git")  # file:// allows a shallow fetch of the commit
    up.bare(web.root / "git" / "proj.git")  # dumb HTTP: the whole history
    blobs = []
    for i, mirror in enumerate((m1, m2.as_uri(), web.url)):
        settings = settings_for(tmp_path, mirror, cache=f"cache{i}")
        fetch(settings, src(UNREACHABLE, commit, tag=None))
        blobs.append(archive_path(settings.distfiles_dir, commit).read_bytes())
    assert blobs[0] == blobs[1] == blobs[2]
    path = archive_path(settings.distfiles_dir, commit)
    with tarfile.open(path) as tar:
        assert tar.getmember("proj-1.0/run.sh").mode & 0o111
        text = tar.extractfile("proj-1.0/version.txt").read()  # type: ignore[union-attr]
    assert text == b"$Format:%H%d$\n"


def write_recipe(root: Path, name: str, body: str) -> Path:
    folder = root / "base" / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def load(root: Path, name: str) -> LoadedRecipe:
    return load_tree(root).recipes[name]


def test_symlink_out_of_the_tree_is_refused_by_the_unpacker(tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "upstream", files={"README": "x\n"},
                       symlinks={"passwd": "../../../../etc/passwd", "ok": "README"})
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "proj", f"""
        name: proj
        version: "1.0"
        sources:
          - git: https://example.org/proj.git
            commit: {up.v1}
        """)
    lr = load(recipes, "proj")
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build",
                        distfiles=tmp_path / "distfiles", mirrors=(str(mirror),))
    fetch_sources([("proj", lr.recipe.sources[0])], settings, FAST)
    work = tmp_path / "work"
    with pytest.raises(UnpackError, match="'proj-1.0/passwd' is a symlink pointing outside"):
        prepare_source(lr, settings, work)
    assert not (work / "src").exists()


def test_unpacked_folder_is_named_for_the_recipe(tmp_path: Path, up: Upstream) -> None:
    """Two recipes on one commit share the cached archive; each gets its own folder."""
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")
    recipes = tmp_path / "recipes"
    for name, version in (("proj", "1.0"), ("proj-fork", "7")):
        write_recipe(recipes, name, f"""
            name: {name}
            version: "{version}"
            sources:
              - git: https://example.org/proj.git
                tag: v1.0
                commit: {up.v1}
            """)
    tree = load_tree(recipes)
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build",
                        distfiles=tmp_path / "distfiles", mirrors=(str(mirror),))
    report = fetch_sources([(n, tree[n].recipe.sources[0]) for n in ("proj", "proj-fork")],
                           settings, FAST)
    assert [o.status for o in report.downloaded + report.reused] == ["downloaded", "reused"]
    srcdir = prepare_source(tree["proj-fork"], settings, tmp_path / "work")
    assert srcdir.name == "proj-fork-7" and (srcdir / "README").read_text() == "proj\n"


# ---------------------------------------------------------------- the recipe model


def test_git_source_without_commit_is_refused_at_its_line(cli, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "proj", """
        name: proj
        version: "1.0"
        sources:
          # upstream tags every release
          - git: https://example.org/proj.git
            tag: v{version}
        """)
    result = cli("--recipes", str(recipes), "lint")
    assert result.code == 2
    assert (f"{recipes}/base/proj/recipe.yaml:5:5: a git source needs commit: (40 hex digits); "
            "a tag or branch alone is not a pin (hint: run `iglubuild checksum proj`") \
        in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(("source", "message"), [
    ("- git: https://example.org/p.git\n    url: https://example.org/p.tar.gz",
     "exactly one of url, file or git"),
    ("- git: file:///srv/p.git\n    commit: " + "a" * 40, "file:// is for mirrors only"),
    ("- git: https://example.org/p.git\n    commit: abc123", "commit must be 40 lowercase hex"),
    ("- git: https://example.org/p.git\n    commit: " + "A" * 40,
     "commit must be 40 lowercase hex"),
    ("- url: https://example.org/p.tar.gz\n    sha256: " + "a" * 64 + "\n    commit: "
     + "a" * 40, "commit and tag belong to git sources"),
    ("- git: https://example.org/p.git\n    commit: " + "a" * 40 + "\n    sha256: " + "a" * 64,
     "pinned by commit: it takes no sha256"),
    ("- git: https://example.org/p.git\n    commit: " + "a" * 40 + "\n    tag: v{nope}",
     "cannot expand tag"),
    ("- git: https://example.org/p.git\n    comit: " + "a" * 40, "did you mean 'commit'"),
    ("- git: https://example.org/p.git\n    commit: " + "a" * 40 + "\n    tag: '-v1 x'",
     "invalid tag '-v1 x': not a git ref name"),
    ("- git: https://example.org/p.git\n    commit: " + "a" * 40 + "\n    tag: v1..2",
     "not a git ref name"),
])
def test_bad_git_sources(cli, tmp_path: Path, source: str, message: str) -> None:
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "proj", "name: proj\nversion: '1.0'\nsources:\n  " + source + "\n")
    result = cli("--recipes", str(recipes), "lint")
    assert result.code == 2 and message in result.err, result.err
    assert any(f"recipe.yaml:{n}:" in result.err for n in (4, 5, 6))


def test_tag_expands_version_and_schema_shows_git(cli, tmp_path: Path) -> None:
    import json

    recipes = tmp_path / "recipes"
    write_recipe(recipes, "proj", f"""
        name: proj
        version: "1.2"
        sources:
          - git: https://example.org/proj.git
            tag: v{{version}}
            commit: {"b" * 40}
        """)
    [source] = load(recipes, "proj").recipe.sources
    assert source.tag == "v1.2" and source.archive_prefix == "proj-1.2"
    # The parsed-recipe cache keeps the expanded tag and the archive prefix.
    cache = tmp_path / "recipes.pickle"
    for _ in range(2):
        [cached] = load_tree(recipes, cache).recipes["proj"].recipe.sources
        assert (cached.tag, cached.archive_prefix) == ("v1.2", "proj-1.2")
    assert source.display_name == "proj-bbbbbbbbbbbb.tar"
    result = cli("schema")
    schema = json.loads(result.out)["$defs"]["Source"]
    assert {"git", "commit", "tag"} <= set(schema["properties"])
    assert schema["properties"]["commit"]["pattern"] == "^[0-9a-f]{40}$"
    assert {"required": ["git"]} in schema["oneOf"]


def test_signature_follows_the_commit_not_the_url(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    sigs = {}
    for key, url, commit in (("a", "https://one.example/p.git", "a" * 40),
                             ("b", "https://two.example/p.git", "a" * 40),
                             ("c", "https://one.example/p.git", "c" * 40)):
        path = write_recipe(recipes, "proj", f"""
            name: proj
            version: "1.0"
            sources:
              - git: {url}
                commit: {commit}
            """)
        lr = load(recipes, "proj")
        # The recipe bytes are hashed too; compare only the sources part.
        sigs[key] = package_inputs(lr, "tc", {}).sources
        path.unlink()
    assert sigs["a"] == sigs["b"] != sigs["c"]


# ---------------------------------------------------------------- the command line


def test_fetch_and_status_cli(cli, tmp_path: Path, up: Upstream, web: Web) -> None:
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")
    recipes = tmp_path / "recipes"
    # Upstream answers 404 (no repository there): an answer, not retried.
    write_recipe(recipes, "proj", f"""
        name: proj
        version: "1.0"
        sources:
          - git: {web.url}/gone/proj.git
            tag: v1.0
            commit: {up.v1}
        """)
    common = ("--recipes", str(recipes), "--mirror", mirror.as_uri(),
              "--distfiles", str(tmp_path / "distfiles"))
    result = cli(*common, "fetch", "--list")
    assert result.code == 0, result.err
    assert f"downloaded\tproj\tproj-{up.v1[:12]}.tar" in result.out
    result = cli(*common, "--offline", "fetch", "--list")
    assert result.code == 0 and f"reused\tproj\tproj-{up.v1[:12]}.tar" in result.out
    result = cli(*common, "status")
    assert result.code == 0 and "never built" in result.out
    result = cli(*common, "world", "--dry-run")
    assert result.code == 0 and "proj" in result.out + result.err
    # A commit nobody has: exit 3, one line, no traceback.
    other = "f" * 40
    (recipes / "base" / "proj" / "recipe.yaml").write_text(
        (recipes / "base" / "proj" / "recipe.yaml").read_text().replace(up.v1, other))
    result = cli(*common, "fetch")
    assert result.code == 3
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"commit {other} (tag v1.0) not found; looked in" in errors[0]
    assert "Traceback" not in result.err


def test_checksum_writes_the_commit_of_the_tag_keeping_comments(cli, tmp_path: Path,
                                                                up: Upstream,
                                                                web: Web) -> None:
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")  # v1.0 is annotated: it must be peeled
    gone = f"{web.url}/gone/proj.git"  # upstream is asked first: 404
    recipes = tmp_path / "recipes"
    path = write_recipe(recipes, "proj", f"""
        # proj, from upstream's git
        name: proj
        version: "1.0"
        sources:
          # the release tag
          - git: {gone}   # upstream
            tag: v{{version}}  # signed by upstream
        build: |
          true
        """)
    common = ("--recipes", str(recipes), "--mirror", str(mirror),
              "--distfiles", str(tmp_path / "distfiles"))
    result = cli(*common, "checksum", "proj")
    assert result.code == 0, result.err
    assert f"commit {up.v1} (tag v1.0 from {(mirror / 'git' / 'proj.bundle').as_uri()})" \
        in result.err
    text = path.read_text()
    assert text == textwrap.dedent(f"""\
        # proj, from upstream's git
        name: proj
        version: "1.0"
        sources:
          # the release tag
          - git: {gone}   # upstream
            tag: v{{version}}  # signed by upstream
            commit: {up.v1}
        build: |
          true
        """)
    # The commit went into the cache: the next fetch needs no mirror.
    assert archive_path(tmp_path / "distfiles", up.v1).is_file()
    result = cli(*common, "checksum", "proj")
    assert result.code == 0 and "commit verified" in result.err and path.read_text() == text
    # A recipe whose commit is not the tag's: refused, then replaced with --update.
    path.write_text(text.replace(up.v1, up.v2))
    result = cli(*common, "checksum", "proj")
    assert result.code == 3 and "commit mismatch" in result.err
    assert "--update" in result.err
    result = cli(*common, "checksum", "--update", "proj")
    assert result.code == 0 and path.read_text() == text


def test_checksum_reads_the_tag_from_a_bare_repository(tmp_path: Path, up: Upstream,
                                                       web: Web) -> None:
    up.bare(web.root / "git" / "proj.git")
    settings = settings_for(tmp_path, web.url)
    commit, where = GitFetcher(settings, FAST).resolve_tag(src(UNREACHABLE, None))
    assert (commit, where) == (up.v1, f"{web.url}/git/proj.git")
    with pytest.raises(FetchError, match="tag v9 not found; looked in"):
        GitFetcher(settings, FAST).resolve_tag(src(UNREACHABLE, None, tag="v9"))


# ---------------------------------------------------------------- end to end: a real build

HELLO_C = r"""
/* No C library in the sysroot of this test: talk to the kernel directly. */
static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c)
                      : "rcx", "r11", "memory");
    return ret;
}
void _start(void) {
    static const char msg[] = "hello from git\n";
    sys3(1, 1, (long)msg, sizeof msg - 1);
    sys3(60, 0, 0, 0);
    for (;;) {}
}
"""


def test_recipe_with_a_git_source_builds_a_binary(tmp_path: Path, web: Web) -> None:
    """A C project in a git repository, served by dumb HTTP as upstream, built by
    the host executor with the target's clang; the package holds the binary."""
    from dataclasses import replace

    from iglubuild.build import BuildJob, build_package
    from iglubuild.executors.host import HostExecutor
    from iglubuild.package import install_artifact, read_metadata
    from iglubuild.target import load_target

    up = make_upstream(tmp_path / "upstream", files={
        "hello.c": HELLO_C,
        "Makefile": "hello: hello.c\n\t$(CC) $(CFLAGS) -static -nostdlib -ffreestanding "
                    "-fno-stack-protector -o hello hello.c\n"})
    up.bare(web.root / "upstream" / "hello.git")
    recipes = tmp_path / "recipes"
    write_recipe(recipes, "hello", f"""
        name: hello
        version: "1.0"
        sources:
          - git: {web.url}/upstream/hello.git
            tag: v{{version}}
            commit: {up.v1}
        build: |
          test "$(basename "$PWD")" = hello-1.0
          make CC="$CC" CFLAGS="$CFLAGS"
        package: |
          install -D -m755 hello "$pkgdir/usr/bin/hello"
        """)
    settings = Settings(recipes=recipes, build_dir=tmp_path / "build",
                        distfiles=tmp_path / "distfiles", jobs=1)
    lr = load(recipes, "hello")
    report = fetch_sources([("hello", lr.recipe.sources[0])], settings, FAST)
    assert report.downloaded[0].url == f"{web.url}/upstream/hello.git"
    executor = HostExecutor()
    executor.check()
    target = replace(load_target(), implicit_build_deps=())
    [artifact] = build_package(BuildJob(lr, settings, executor, [], "sig", target=target,
                                        epoch=1_700_000_000))
    files = {f["path"] for f in read_metadata(artifact)["files"]}
    assert "usr/bin/hello" in files
    root = tmp_path / "root"
    install_artifact(artifact, root)
    proc = subprocess.run([root / "usr/bin/hello"], capture_output=True, text=True, check=True)
    assert proc.stdout == "hello from git\n"


def test_new_scaffolds_a_recipe_from_a_git_tag(cli, tmp_path: Path, web: Web) -> None:
    up = make_upstream(tmp_path / "upstream", files={
        "Makefile": "all:\n\ttrue\n", "proj.c": "int main(void) { return 0; }\n"})
    up.bare(web.root / "git" / "proj.git")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    common = ("--recipes", str(recipes), "--mirror", web.url,
              "--distfiles", str(tmp_path / "distfiles"))
    result = cli(*common, "new", "proj", "--git", f"{web.url}/gone/proj.git", "--tag", "v1.0")
    assert result.code == 0, result.err
    assert "version 1.0 guessed from the tag v1.0" in result.out
    assert f"tag v1.0 is commit {up.v1}" in result.out
    [source] = load(recipes, "proj").recipe.sources  # it loads: lint-clean
    assert (source.git, source.tag, source.commit) == (f"{web.url}/gone/proj.git", "v1.0", up.v1)
    text = (recipes / "base" / "proj" / "recipe.yaml").read_text()
    assert "tag: v{version}" in text and "make template" not in text
    assert "make CC=" in text  # the Makefile template, from the tree of the commit
    assert archive_path(tmp_path / "distfiles", up.v1).is_file()
    result = cli(*common, "new", "other", "--git", f"{web.url}/gone/proj.git")
    assert result.code == 2 and "--git needs --tag" in result.err
    result = cli(*common, "new", "other", "--git", "file:///x/proj.git", "--tag", "v1")
    assert result.code == 2 and "invalid git URL" in result.err


# ---------------------------------------------------------------- retries, as for HTTP downloads


def test_transient_errors_are_retried(tmp_path: Path, up: Upstream) -> None:
    """A 500 from an HTTP mirror is retried, for a bundle (httpx) and for a bare
    repository over dumb HTTP (git's own requests); a 404 is an answer."""
    from tests.fault_server import Fault, FaultServer

    bundle = up.bundle(tmp_path / "proj.bundle")
    bare = up.bare(tmp_path / "proj.git")
    with FaultServer() as srv:
        srv.add("/a/git/proj.bundle", bundle, Fault("status", times=1, status=500))
        for path in bare.rglob("*"):
            if path.is_file():
                srv.add(f"/b/git/proj.git/{path.relative_to(bare)}", path)
        srv.faults["/b/git/proj.git/info/refs"] = Fault("status", times=1, status=503)
        options = FetchOptions(retries=2, backoff=0.01, progress=False)
        settings = settings_for(tmp_path, srv.url("/a"), cache="c1")
        report = fetch_sources([("proj", src(UNREACHABLE, up.v1))], settings, options)
        assert report.downloaded[0].url == srv.url("/a/git/proj.bundle")
        assert [s for p, _, s in srv.requests if p == "/a/git/proj.bundle"] == [500, 200]
        settings = settings_for(tmp_path, srv.url("/b"), cache="c2")
        report = fetch_sources([("proj", src(UNREACHABLE, up.v1))], settings, options)
        assert report.downloaded[0].url == srv.url("/b/git/proj.git")
        refs = [s for p, _, s in srv.requests if p == "/b/git/proj.git/info/refs"]
        assert refs[:2] == [503, 200]
        assert [s for p, _, s in srv.requests if p == "/b/git/proj.bundle"] == [404]


def test_users_git_configuration_and_environment_are_not_used(
        tmp_path: Path, up: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile ~/.gitconfig, a global config and GIT_* variables change nothing."""
    home = tmp_path / "home"
    home.mkdir()
    evil = "[url \"http://127.0.0.1:9/\"]\n\tinsteadOf = /\n[core]\n\tbare = false\n" \
           "[fetch]\n\tfsckObjects = true\n[fsck]\n\tbadFilemode = error\n"
    (home / ".gitconfig").write_text(evil)
    (tmp_path / "global").write_text(evil)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "global"))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'url.http://127.0.0.1:9/.insteadof'='/'")
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")
    settings = settings_for(tmp_path, mirror)
    report = fetch(settings, src(UNREACHABLE, up.v1))
    assert report.downloaded[0].url == (mirror / "git" / "proj.bundle").as_uri()


def test_two_fetches_of_one_commit_at_once(tmp_path: Path, up: Upstream) -> None:
    """Two fetchers sharing a cache (two iglubuild runs): one writes, one waits and reuses."""
    mirror = tmp_path / "mirror"
    up.bundle(mirror / "git" / "proj.bundle")
    settings = settings_for(tmp_path, mirror)
    results: list[tuple[str, Path]] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(GitFetcher(settings, FAST).fetch(src(UNREACHABLE, up.v1)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(bool(where) for where, _ in results) == [False, True]
    assert {path for _, path in results} == {archive_path(settings.distfiles_dir, up.v1)}
    assert not list((settings.distfiles_dir / ".partial").iterdir())
