"""Scaffold a new recipe from a source tarball URL (`iglubuild new`).

A contributor gives a name and a URL; the tarball is downloaded once (into
the distfiles cache, so the first build does not download it again), its
checksum taken from the bytes actually received, its version guessed from
the file name, and a build template chosen from what the tarball contains.
The result is a starting point: every guess is marked in a comment.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import LiteralScalarString

from iglubuild.atomic import write_atomic
from iglubuild.errors import FetchError, UsageError
from iglubuild.recipe import NAME_RE, VERSION_RE
from iglubuild.settings import Settings

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".tar.lz", ".tgz", ".tbz2",
                    ".txz", ".tar", ".zip")


@dataclass(frozen=True)
class Template:
    """How a kind of source tree is built; `marker` is the file that shows it."""

    kind: str
    marker: str
    makedeps: tuple[str, ...]
    build: str
    package: str


_AUTOTOOLS = Template(
    "autotools", "configure", ("bmake",),
    './configure \\\n  --prefix=/usr \\\n  --sysconfdir=/etc \\\n'
    '  --build="$HOST_TRIPLE" \\\n  --host="$TRIPLE"\nmake\n',
    'make DESTDIR="$pkgdir" install\n')
_CONFIGURE = Template(
    "configure", "configure", ("bmake",),
    "./configure --prefix=/usr\nmake\n",
    'make DESTDIR="$pkgdir" install\n')
_CMAKE = Template(
    "cmake", "CMakeLists.txt", ("cmake", "samurai"),
    'cmake -G Ninja -B build \\\n  -DCMAKE_MAKE_PROGRAM=samu \\\n'
    '  -DCMAKE_BUILD_TYPE=Release \\\n  -DCMAKE_INSTALL_PREFIX=/usr \\\n'
    '  -DCMAKE_INSTALL_LIBDIR=lib \\\n  -DCMAKE_SYSTEM_NAME=Linux \\\n'
    '  -DCMAKE_C_COMPILER_TARGET="$TRIPLE"\nsamu -C build\n',
    'DESTDIR="$pkgdir" samu -C build install\n')
_MESON = Template(
    "meson", "meson.build", ("muon", "samurai"),
    'muon setup \\\n  -Dbuildtype=release \\\n  -Dprefix=/usr \\\n'
    '  -Dlibexecdir=lib \\\n  build\nsamu -C build\n',
    'DESTDIR="$pkgdir" muon -C build install\n')
_OPENSSL = Template(
    "openssl", "Configure", ("perl",),
    "./Configure \\\n  --prefix=/usr \\\n  --openssldir=/etc/ssl \\\n  --libdir=lib \\\n"
    "  shared \\\n  linux-x86_64\nmake\n",
    'make DESTDIR="$pkgdir" install_sw install_ssldirs\n')
_KCONFIG = Template(
    "kconfig", "Config.in", (),
    'make defconfig\nmake CC="$CC" HOSTCC="$CC"\n',
    'make CONFIG_PREFIX="$pkgdir" install\n')
_MAKE_PREFIX = Template(
    "make", "Makefile", (),
    'make CC="$CC" CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS"\n',
    'make DESTDIR="$pkgdir" PREFIX=/usr install\n')
_MAKE_INSTALL_TOP = Template(
    "make-install-top", "Makefile", (),
    'make CC="$CC" MYCFLAGS="$CFLAGS" MYLDFLAGS="$LDFLAGS" posix\n',
    'make INSTALL_TOP="$pkgdir/usr" install\n')
_BUILD_SH = Template(
    "mirbsd-build-sh", "Build.sh", (),
    'CC="$CC" TARGET_OS=Linux sh ./Build.sh -r\n',
    'install -Dm755 mksh "$pkgdir/usr/bin/mksh"\n'
    'install -Dm644 mksh.1 "$pkgdir/usr/share/man/man1/mksh.1"\n')

TEMPLATES: tuple[Template, ...] = (_AUTOTOOLS, _CONFIGURE, _CMAKE, _MESON, _OPENSSL, _KCONFIG,
                                   _MAKE_PREFIX, _MAKE_INSTALL_TOP, _BUILD_SH)


@dataclass(frozen=True)
class Choice:
    """The template picked for a tarball, the folder it applies to and why."""

    template: Template
    subdir: str  # "" for the source folder itself, else the folder below it (expat/)
    reason: str


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
    found = read_version(name, filename)
    return found[0] if found else None


def read_version(name: str, filename: str) -> tuple[str, str | None] | None:
    """(version, note) from a tarball's file name, whatever the package is called.

    The part after the package's own name is tried first (mksh-R59c -> R59c),
    then the tail after each '-' from the left (lua-5.4.4 for `lua2`).
    Underscored tag names become dotted, with a note: libexpat-R_2_5_0 -> 2.5.0.
    """
    suffix = archive_suffix(filename)
    stem = filename[: len(filename) - len(suffix)] if suffix else filename
    tails: list[str] = []
    for prefix in (f"{name}-", f"{name}_", name):
        if stem.lower().startswith(prefix.lower()) and len(stem) > len(prefix):
            tails.append(stem[len(prefix):])
            break
    tails.append(stem)
    tails.extend(stem[m.end():] for m in re.finditer(r"[-_]", stem))
    for tail in tails:
        plain = re.sub(r"^(v|version-|release-)(?=\d)", "", tail, flags=re.IGNORECASE)
        underscored = re.match(r"^(?:[A-Za-z]+_?)?(\d+(?:_\d+)+)$", plain)
        if underscored:
            dotted = underscored.group(1).replace("_", ".")
            return dotted, f"{tail} in {filename} read as version {dotted}"
        if re.match(r"^[A-Za-z]?\d", plain) and VERSION_RE.match(plain):
            return plain, None
    return None


def template_url(url: str, version: str) -> tuple[str, str | None]:
    """The URL with {version} in its file-name part only, and a note when the
    version also appears elsewhere in its path (the host is never touched)."""
    parsed = urlparse(url)
    head, _, last = parsed.path.rpartition("/")
    if version in last:
        last = last.replace(version, "{version}")
    elif version.replace(".", "_") in last:
        last = last.replace(version.replace(".", "_"), "{version_underscore}")
    path = f"{head}/{last}" if head or parsed.path.startswith("/") else last
    note = None
    if version in head:
        note = (f"the URL's path also holds {version}; write {{version}} there too if it "
                "follows the version")
    text = parsed._replace(path=path).geturl()
    return text, note


@dataclass
class _UrlSource:
    """A bare URL as fetch.Downloader sees a source (no checksum yet)."""

    url: str | None
    filename: str | None
    sha256: str | None = None
    sha512: str | None = None
    unverified: str | None = None


def fetch_to_cache(url: str, settings: Settings, filename: str) -> Download:
    """Download `url` (http(s), file:// or a path) into the distfiles cache and hash it.

    Goes through fetch.Downloader, as `checksum` does: the same limits on
    size and rate, retries, and the cache entry sealed under its sha256, so
    the first build does not download it again.
    """
    from iglubuild.fetch import Downloader, FetchOptions, store

    parsed = urlparse(url)
    if parsed.scheme == "":
        url = Path(url).resolve().as_uri()
    elif parsed.scheme not in ("http", "https", "file"):
        raise UsageError(f"unsupported URL scheme {parsed.scheme!r} in {url}",
                         hint="use an http://, https:// or file:// URL")
    downloader = Downloader(settings, FetchOptions(parallel=1))
    try:
        got = downloader.download_unverified(filename, _UrlSource(url, filename))
    finally:
        downloader.close()
    entry = store(got.path, got.sums, filename, settings)
    return Download(entry, got.sums["sha256"])


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


# Files whose text tells templates apart (autoconf or not, which install variable).
_SNIFFED = frozenset({"configure", "Configure", "Makefile", "makefile", "GNUmakefile"})


def archive_index(path: Path, limit: int = 1 << 18) -> tuple[list[str], dict[str, str]]:
    """Member names and the start of the files templates look at, in one pass
    over the archive (a .tar.gz is read once, not once per file)."""
    texts: dict[str, str] = {}
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                for n in names:
                    if n.rsplit("/", 1)[-1] in _SNIFFED and n.count("/") <= 2:
                        with z.open(n) as f:
                            texts[n] = f.read(limit).decode("latin-1")
                return names, texts
        if path.name.endswith(".tar.zst"):
            import zstandard
            with path.open("rb") as fh:
                data = zstandard.ZstdDecompressor().stream_reader(fh).read()
            tar = tarfile.open(fileobj=io.BytesIO(data))
        else:
            try:
                tar = tarfile.open(path, mode="r|*")  # streamed: one pass
            except tarfile.TarError:
                # tarfile's stream reader misreads some gzip headers
                # (mksh-R59c.tgz); the random-access reader does not.
                tar = tarfile.open(path)
        names = []
        try:
            with tar:
                for info in tar:
                    names.append(info.name)
                    if info.isfile() and info.name.rsplit("/", 1)[-1] in _SNIFFED and \
                            info.name.count("/") <= 2:
                        member = tar.extractfile(info)
                        if member is not None:
                            texts[info.name] = member.read(limit).decode("latin-1")
        except (tarfile.TarError, OSError, EOFError):
            if not names:
                raise
            # Trailing bytes after the last member (mksh-R59c.tgz) stop the
            # stream; the members before them are all there.
        return names, texts
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise FetchError(f"{path.name} is not a readable archive: {err}",
                         hint="the URL must point at a source tarball") from None


def read_member(path: Path, member: str, limit: int = 1 << 20) -> str:
    """The start of one file inside an archive, as text ('' if absent)."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                with z.open(member) as f:
                    return f.read(limit).decode("latin-1")
        if path.name.endswith(".tar.zst"):
            import zstandard
            with path.open("rb") as fh:
                data = zstandard.ZstdDecompressor().stream_reader(fh).read()
            tar = tarfile.open(fileobj=io.BytesIO(data))
        else:
            tar = tarfile.open(path)
        with tar:
            found = tar.extractfile(member)
            return found.read(limit).decode("latin-1") if found else ""
    except (KeyError, tarfile.TarError, zipfile.BadZipFile, OSError, EOFError):
        return ""


def pick_template(members: list[str], read: Callable[[str], str] | None = None) -> Choice | None:
    """The template for what the source folder (or one folder below it) holds.

    `read(member)` gives a file's text, to tell an autoconf `configure` from a
    hand-written one (cmake's calls its bootstrap) and to see which variable
    a plain Makefile installs with.
    """
    read = read or (lambda _m: "")
    tops = {m.split("/", 1)[0] for m in members if m}
    prefix = f"{next(iter(tops))}/" if len(tops) == 1 and any("/" in m for m in members) else ""
    choice = _pick_in(members, prefix, "", read)
    if choice is not None:
        return choice
    # A tag archive with the sources one level down (libexpat-R_2_5_0/expat/).
    subdirs = sorted({m[len(prefix):].split("/", 1)[0] for m in members
                      if m.startswith(prefix) and m[len(prefix):].count("/") >= 1})
    for sub in subdirs:
        choice = _pick_in(members, f"{prefix}{sub}/", sub, read)
        if choice is not None:
            return choice
    return None


def _pick_in(members: list[str], prefix: str, subdir: str,
             read: Callable[[str], str]) -> Choice | None:
    present = {m[len(prefix):].rstrip("/") for m in members if m.startswith(prefix)}
    where = f"{subdir}/" if subdir else ""

    def has(name: str) -> bool:
        return name in present

    if has("configure"):
        head = read(prefix + "configure")
        if "Guess values for system-dependent variables" in head or has("configure.ac") \
                or has("configure.in"):
            return Choice(_AUTOTOOLS, subdir, f"{where}configure is made by autoconf")
    if has("CMakeLists.txt"):
        return Choice(_CMAKE, subdir, f"the tarball has {where}CMakeLists.txt")
    if has("meson.build"):
        return Choice(_MESON, subdir, f"the tarball has {where}meson.build")
    if has("Configure") and "perl" in read(prefix + "Configure")[:200]:
        return Choice(_OPENSSL, subdir, f"{where}Configure is OpenSSL's (perl)")
    if has("configure"):
        return Choice(_CONFIGURE, subdir, f"the tarball has {where}configure (not autoconf)")
    if has("Build.sh"):
        return Choice(_BUILD_SH, subdir, f"the tarball has {where}Build.sh (MirBSD)")
    for makefile in ("Makefile", "makefile", "GNUmakefile"):
        if not has(makefile):
            continue
        if has("Config.in"):
            return Choice(_KCONFIG, subdir, f"{where}{makefile} with Config.in (kconfig)")
        text = read(prefix + makefile)
        if re.search(r"^\s*INSTALL_TOP\s*[?:]?=", text, re.M):
            return Choice(_MAKE_INSTALL_TOP, subdir, f"{where}{makefile} installs to INSTALL_TOP")
        if re.search(r"\bPREFIX\b", text):
            return Choice(_MAKE_PREFIX, subdir, f"{where}{makefile} installs to PREFIX")
        return Choice(_MAKE_PREFIX, subdir, f"the tarball has {where}{makefile}; check the "
                      "variable its install target uses")
    return None


def scaffold(name: str, url: str, *, repo: str, recipes: Path, settings: Settings,
             version: str | None = None) -> tuple[str, list[str]]:
    """Download `url` and return (recipe text, notes about what was guessed)."""
    if not NAME_RE.match(name):
        raise UsageError(f"invalid package name {name!r}",
                         hint="lower-case letters, digits and + . _ - only")
    basename = unquote(urlparse(url).path.rsplit("/", 1)[-1]) or name
    found = (version, None) if version else read_version(name, basename)
    if not found or not found[0]:
        raise UsageError(f"cannot guess the version from {basename!r}",
                         hint="pass --version VERSION")
    guessed, version_note = found
    assert guessed is not None
    if not VERSION_RE.match(guessed):
        raise UsageError(f"invalid version {guessed!r}",
                         hint="letters, digits and . _ + ~ only (no '-' or spaces)")
    suffix = archive_suffix(basename)
    stem = basename[: len(basename) - len(suffix)]
    # A tag archive (v1.9.4.tar.gz, R_2_5_0.tar.gz) gets a name that says
    # which package it is.
    tag_like = not re.match(r"^[A-Za-z][A-Za-z0-9+.]*[-_]", stem) and not stem.startswith(name)
    filename = f"{name}-{guessed}{suffix}" if suffix and tag_like else basename
    download = fetch_to_cache(url, settings, filename)
    members, texts = archive_index(download.path)
    choice = pick_template(members, lambda m: texts.get(m, ""))
    how = "given" if version else f"guessed from {basename}"
    notes: list[str] = [f"version {guessed} {how}"]
    if version_note:
        notes.append(version_note)

    doc = CommentedMap()
    doc["name"] = name
    doc["version"] = guessed
    doc.yaml_add_eol_comment(version_note or f"version {how}", "version")
    doc["release"] = 1
    doc["description"] = f"TODO: describe {name}"
    doc["license"] = "LicenseRef-TODO"
    doc.yaml_add_eol_comment("TODO: SPDX expression", "license")
    have = {p.parent.name for p in recipes.glob("*/*/recipe.yaml")}
    # Never a dependency on itself: musl is the C library, bmake the make.
    doc["deps"] = CommentedSeq(["musl"] if "musl" in have and name != "musl" else [])
    makedeps = [d for d in (choice.template.makedeps if choice else ()) if d != name]
    if choice and name in choice.template.makedeps:
        notes.append(f"{name} is its own build tool: not listed in makedeps "
                     "(bootstrap it from an earlier build)")
    missing = [d for d in makedeps if d not in have]
    doc["makedeps"] = CommentedSeq(d for d in makedeps if d in have)
    if missing:
        doc.yaml_add_eol_comment(f"TODO: also needs {', '.join(missing)} (no recipe yet)",
                                 "makedeps")
        notes.append(f"no recipe yet for {', '.join(missing)}")
    doc["gnu"] = CommentedSeq()
    src = CommentedMap()
    templated, url_note = template_url(url, guessed)
    src["url"] = templated
    if url_note:
        notes.append(url_note)
        src.yaml_add_eol_comment(url_note, "url")
    if filename != basename:
        src["filename"] = filename  # literal: the loader expands {version} in url only
    src["sha256"] = download.sha256
    src.yaml_add_eol_comment(f"computed from the download by iglubuild new ({basename})", "sha256")
    doc["sources"] = CommentedSeq([src])
    if choice:
        cd = f"cd {choice.subdir}\n" if choice.subdir else ""
        doc["build"] = LiteralScalarString(cd + choice.template.build)
        doc["package"] = LiteralScalarString(cd + choice.template.package)
        doc.yaml_set_comment_before_after_key(
            "build", before=f"{choice.template.kind} template: {choice.reason}")
        notes.append(f"{choice.template.kind} template ({choice.reason})")
    else:
        doc["build"] = LiteralScalarString(
            "# TODO: no configure, CMakeLists.txt, meson.build, Configure, Build.sh or Makefile\n"
            "# at the top of the tarball; write the build commands (cwd is the unpacked source\n"
            "# folder).\n")
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


def existing_recipe(recipes: Path, name: str) -> Path | None:
    """The recipe.yaml of `name` in any repo of the tree, if there is one."""
    found = sorted(recipes.glob(f"*/{name}/recipe.yaml")) if recipes.is_dir() else []
    return found[0] if found else None


def write_new(text: str, out_dir: Path, force: bool = False) -> Path:
    """Write recipe.yaml into out_dir via a temporary name."""
    target = out_dir / "recipe.yaml"
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="pass --force to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    return target
