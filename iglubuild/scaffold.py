"""Scaffold a new recipe from a source tarball URL (`iglubuild new`).

A contributor gives a name and a URL; the tarball is downloaded once (into
the distfiles cache, so the first build does not download it again), its
checksum taken from the bytes actually received, its version guessed from
the file name, and a build template chosen from what the tarball contains.
The result is a starting point: every guess is marked in a comment.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import LiteralScalarString

from iglubuild.errors import FetchError, UsageError
from iglubuild.recipe import VERSION_RE

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".tar.lz", ".tgz", ".tbz2",
                    ".txz", ".tar", ".zip")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+._-]*$")


@dataclass(frozen=True)
class Template:
    """How a kind of source tree is built; `marker` is the file that shows it."""

    kind: str
    marker: str
    makedeps: tuple[str, ...]
    build: str
    package: str


TEMPLATES: tuple[Template, ...] = (
    Template("autotools", "configure", ("bmake",),
             './configure \\\n  --prefix=/usr \\\n  --sysconfdir=/etc \\\n'
             '  --build="$HOST_TRIPLE" \\\n  --host="$TRIPLE"\nmake\n',
             'make DESTDIR="$pkgdir" install\n'),
    Template("cmake", "CMakeLists.txt", ("cmake", "samurai"),
             'cmake -G Ninja -B build \\\n  -DCMAKE_MAKE_PROGRAM=samu \\\n'
             '  -DCMAKE_BUILD_TYPE=Release \\\n  -DCMAKE_INSTALL_PREFIX=/usr \\\n'
             '  -DCMAKE_INSTALL_LIBDIR=lib \\\n  -DCMAKE_SYSTEM_NAME=Linux \\\n'
             '  -DCMAKE_C_COMPILER_TARGET="$TRIPLE"\nsamu -C build\n',
             'DESTDIR="$pkgdir" samu -C build install\n'),
    Template("meson", "meson.build", ("muon", "samurai"),
             'muon setup \\\n  -Dbuildtype=release \\\n  -Dprefix=/usr \\\n'
             '  -Dlibexecdir=lib \\\n  build\nsamu -C build\n',
             'DESTDIR="$pkgdir" muon -C build install\n'),
    Template("make", "Makefile", (),
             'make CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS"\n',
             'make DESTDIR="$pkgdir" PREFIX=/usr install\n'),
)


@dataclass(frozen=True)
class Download:
    path: Path  # the file in the distfiles cache
    sha256: str


def archive_suffix(filename: str) -> str:
    """The archive extension of a file name ('' when it is not an archive)."""
    lower = filename.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s)), "")


def guess_version(name: str, filename: str) -> str | None:
    """The version in a tarball name: curl-7.88.1.tar.gz, mksh-R59c.tgz, v1.9.4.tar.gz."""
    suffix = archive_suffix(filename)
    stem = filename[: len(filename) - len(suffix)] if suffix else filename
    for prefix in (f"{name}-", f"{name}_", name):
        if stem.lower().startswith(prefix.lower()) and len(stem) > len(prefix):
            stem = stem[len(prefix):]
            break
    stem = re.sub(r"^(v|version-|release-)(?=\d)", "", stem, flags=re.IGNORECASE)
    if re.search(r"\d", stem) and VERSION_RE.match(stem):
        return stem
    return None


def fetch_to_cache(url: str, cache: Path, filename: str) -> Download:
    """Copy or download `url` into cache/filename, hashing the bytes as they arrive.

    file:// URLs and plain paths are read from disk; http(s) goes through
    httpx. The file appears under its final name only when complete.
    """
    import httpx  # here, not at the top: every CLI start imports this module

    cache.mkdir(parents=True, exist_ok=True)
    target = cache / filename
    tmp = cache / f".{filename}.part"
    digest = hashlib.sha256()
    parsed = urlparse(url)
    try:
        if parsed.scheme in ("http", "https"):
            with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as resp:
                if resp.status_code != 200:
                    raise FetchError(f"{url}: HTTP {resp.status_code}",
                                     hint="check the URL; it must name the tarball itself")
                with tmp.open("wb") as out:
                    for chunk in resp.iter_bytes():
                        digest.update(chunk)
                        out.write(chunk)
        elif parsed.scheme in ("file", ""):
            src = Path(unquote(parsed.path) if parsed.scheme == "file" else url)
            try:
                with src.open("rb") as f, tmp.open("wb") as out:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except OSError as err:
                raise FetchError(f"{url}: {err.strerror}", hint="is the path right?") from None
        else:
            raise UsageError(f"unsupported URL scheme {parsed.scheme!r} in {url}",
                             hint="use an http://, https:// or file:// URL")
        tmp.replace(target)
    except httpx.HTTPError as err:
        raise FetchError(f"{url}: {err}", hint="is the server reachable?") from None
    finally:
        tmp.unlink(missing_ok=True)
    return Download(target, digest.hexdigest())


def archive_members(path: Path) -> list[str]:
    """Names inside a tarball or zip, without unpacking it."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                return z.namelist()
        if path.name.endswith(".tar.zst"):
            import zstandard
            with path.open("rb") as f:
                data = zstandard.ZstdDecompressor().stream_reader(f).read()
            with tarfile.open(fileobj=io.BytesIO(data)) as t:
                return t.getnames()
        with tarfile.open(path) as t:
            return t.getnames()
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise FetchError(f"{path.name} is not a readable archive: {err}",
                         hint="the URL must point at a source tarball") from None


def pick_template(members: list[str]) -> Template | None:
    """The template whose marker file is at the top of the source tree."""
    tops = {m.split("/", 1)[0] for m in members if m}
    prefix = f"{next(iter(tops))}/" if len(tops) == 1 and any("/" in m for m in members) else ""
    present = {m[len(prefix):].rstrip("/") for m in members if m.startswith(prefix)}
    for template in TEMPLATES:
        if template.marker in present or (template.kind == "make" and (
                "makefile" in present or "GNUmakefile" in present)):
            return template
    return None


def scaffold(name: str, url: str, *, repo: str, recipes: Path, cache: Path,
             version: str | None = None) -> tuple[str, list[str]]:
    """Download `url` and return (recipe text, notes about what was guessed)."""
    if not _NAME_RE.match(name):
        raise UsageError(f"invalid package name {name!r}",
                         hint="lower-case letters, digits and + . _ - only")
    basename = unquote(urlparse(url).path.rsplit("/", 1)[-1]) or name
    guessed = version or guess_version(name, basename)
    if not guessed:
        raise UsageError(f"cannot guess the version from {basename!r}",
                         hint="pass --version VERSION")
    if not VERSION_RE.match(guessed):
        raise UsageError(f"invalid version {guessed!r}",
                         hint="letters, digits and . _ + ~ only (no '-' or spaces)")
    suffix = archive_suffix(basename)
    # A tag archive (v1.9.4.tar.gz) gets a name that says which package it is.
    filename = basename if name.lower() in basename.lower() or not suffix \
        else f"{name}-{guessed}{suffix}"
    download = fetch_to_cache(url, cache, filename)
    template = pick_template(archive_members(download.path))
    how = "given" if version else f"guessed from {basename}"
    notes: list[str] = [f"version {guessed} {how}"]

    doc = CommentedMap()
    doc["name"] = name
    doc["version"] = guessed
    doc["release"] = 1
    doc["description"] = f"TODO: describe {name}"
    doc["license"] = "LicenseRef-TODO"
    doc.yaml_add_eol_comment("TODO: SPDX expression", "license")
    doc["deps"] = CommentedSeq(["musl"] if (recipes / "linux" / "musl").is_dir() else [])
    makedeps = [d for d in (template.makedeps if template else ())]
    have = {p.parent.name for p in recipes.glob("*/*/recipe.yaml")}
    missing = [d for d in makedeps if d not in have]
    doc["makedeps"] = CommentedSeq(d for d in makedeps if d in have)
    if missing:
        doc.yaml_add_eol_comment(f"TODO: also needs {', '.join(missing)} (no recipe yet)",
                                 "makedeps")
        notes.append(f"no recipe yet for {', '.join(missing)}")
    doc["gnu"] = CommentedSeq()
    src = CommentedMap()
    src["url"] = url.replace(guessed, "{version}") if guessed in url else url
    if filename != basename:
        src["filename"] = filename  # literal: the loader expands {version} in url only
    src["sha256"] = download.sha256
    src.yaml_add_eol_comment(f"computed from the download by iglubuild new ({basename})", "sha256")
    doc["sources"] = CommentedSeq([src])
    if template:
        doc["build"] = LiteralScalarString(template.build)
        doc["package"] = LiteralScalarString(template.package)
        doc.yaml_set_comment_before_after_key(
            "build", before=f"{template.kind} template: the tarball has {template.marker}")
        notes.append(f"{template.kind} template ({template.marker} found)")
    else:
        doc["build"] = LiteralScalarString(
            "# TODO: no configure, CMakeLists.txt, meson.build or Makefile at the top of the\n"
            "# tarball; write the build commands (cwd is the unpacked source folder).\n")
        doc["package"] = LiteralScalarString(
            '# TODO: install into "$pkgdir".\ninstall -d "$pkgdir/usr"\n')
        notes.append("no known build system found; build and package are TODO")
    doc["subpackages"] = CommentedMap([
        ("dev", CommentedSeq(["usr/include", "usr/lib/pkgconfig", "usr/lib/*.a"])),
        ("doc", CommentedSeq(["usr/share/man"])),
    ])
    doc.yaml_set_start_comment(
        f"Scaffolded by `iglubuild new {name} --url {url}`.\n"
        "Source verification: sha256 computed from the downloaded file; check it against\n"
        "upstream's published checksum or signature.")
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue(), notes


def write_new(text: str, out_dir: Path, force: bool = False) -> Path:
    """Write recipe.yaml into out_dir via a temporary name."""
    target = out_dir / "recipe.yaml"
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="pass --force to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".recipe.yaml.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
