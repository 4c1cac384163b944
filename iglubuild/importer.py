"""Convert an Iglunix build.sh into a recipe.yaml, never losing shell code.

Iglunix describes a package as a shell script: variables (`pkgname pkgver
pkgrel deps mkdeps bad ext desc`) and functions (`fetch build package
package_dev license backup`, plus one function per sub-package). The script
is never executed here: it is read line by line, what has a certain meaning
in a recipe is translated, and everything else is carried over as a
`# TODO:` comment holding the original text, so a maintainer finishes the
port by reading the recipe alone.

Why not run the script? Its top level may download, probe the machine or
depend on cross-compile variables; a converter must be safe to run on any
file a contributor hands it.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import LiteralScalarString

from iglubuild.atomic import write_atomic
from iglubuild.errors import UsageError

# Variables the build engine gives every phase (DESIGN.md); a phase that uses
# any other variable is flagged, because the value it had in Iglunix is lost.
PHASE_VARS = frozenset({
    "pkgname", "pkgver", "pkgdir", "srcdir", "ARCH", "TRIPLE", "HOST_TRIPLE", "JOBS",
    "CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS", "CPPFLAGS", "MAKEFLAGS", "PATH", "HOME",
    "PWD", "AR", "RANLIB",
})

# Iglunix's `ext` names the sub-packages it splits off; these globs are what
# its package_dev/package_doc functions usually keep.
EXT_GLOBS: dict[str, list[str]] = {
    "dev": ["usr/include", "usr/lib/pkgconfig", "usr/lib/*.a"],
    "doc": ["usr/share/man"],
}

# Tools Iglunix keeps in its "bad" repository (GNU software it still needs).
GNU_TOOLS = frozenset({"gmake", "autoconf", "automake", "libtool", "m4", "bison",
                       "gettext", "texinfo", "gawk", "gsed", "bash", "binutils"})

KNOWN_VARS = ("pkgname", "pkgver", "pkgrel", "deps", "mkdeps", "bad", "ext", "desc")
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".tar.lz", ".tgz",
                    ".tbz2", ".txz", ".tar", ".zip")

_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_FUNC = re.compile(r"^([A-Za-z_][A-Za-z0-9_+-]*)\s*\(\)\s*\{\s*$")
_VAR_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_SRC_DIR = r"""["']?\$\{?pkgname\}?-\$\{?pkgver\}?["']?/?"""
_CD_SRC = re.compile(rf"^cd\s+{_SRC_DIR}$")
_BAD_GMAKE = re.compile(r"\bbad\s+--gmake\s+")
_CURL = re.compile(r"^curl\s")
_TAR_X = re.compile(r"^(b?sd)?tar\s+-?[xzjJvf]*x[xzjJvf]*\s")
_MV_SRC = re.compile(rf"^mv\s+\S+\s+{_SRC_DIR}$")
_MKDIR_BUILD = re.compile(rf"^mkdir\s+(-p\s+)?{_SRC_DIR[:-3]}/build[\"']?$")
_PATCH = re.compile(r"^patch\s+(-p\d\s+)?(-i\s+|<\s*)(\S+)$")
_FIND = re.compile(r"^find\s+(.+)$")
_RETURN = re.compile(r"^(return|:|true)$")
_CAT = re.compile(r"^cat\s+(\S+)$")


@dataclass
class BuildScript:
    """A build.sh split into what can be read without running it."""

    path: Path
    variables: dict[str, str] = field(default_factory=dict)
    functions: dict[str, list[str]] = field(default_factory=dict)
    toplevel: list[str] = field(default_factory=list)  # code outside functions, verbatim


@dataclass
class ImportResult:
    """The recipe text plus what the conversion could not do on its own."""

    name: str
    repo: str
    text: str
    todos: list[str]
    files: list[Path]  # files beside build.sh the recipe refers to (copied by write)
    unresolved: list[str] = field(default_factory=list)  # short: what blocks a build


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_build_sh(path: Path) -> BuildScript:
    """Split a build.sh into variables, function bodies and other top-level code.

    Iglunix scripts close every function with a `}` in column 0; bodies are
    kept line by line with their common indentation removed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}",
                         hint="give the path of an Iglunix build.sh") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a UTF-8 text file",
                         hint="give the path of an Iglunix build.sh") from None
    script = BuildScript(path=path)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _FUNC.match(line.strip()) if not line[:1].isspace() else None
        if m:
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].rstrip() != "}":
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise UsageError(f"{path}: function {m.group(1)}() is never closed",
                                 hint="Iglunix scripts end each function with `}` in column 0")
            script.functions[m.group(1)] = _dedent(body)
            i += 1
            continue
        am = _ASSIGN.match(line)
        if am and am.group(1) in KNOWN_VARS and "$(" not in am.group(2):
            script.variables[am.group(1)] = _unquote(am.group(2))
        elif line.strip():
            script.toplevel.append(line)
        i += 1
    if "pkgname" not in script.variables:
        raise UsageError(f"{path}: no pkgname= line",
                         hint="is this an Iglunix build.sh? it must set pkgname and pkgver")
    if not re.match(r"^[a-z0-9][a-z0-9+._-]*$", script.variables["pkgname"]):
        raise UsageError(f"{path}: pkgname {script.variables['pkgname']!r} is not a valid "
                         "recipe name", hint="recipe names use lowercase letters, digits and "
                         "+ - . _; rename the package in build.sh first")
    return script


def _dedent(body: list[str]) -> list[str]:
    """Remove the common leading whitespace (tabs in Iglunix) from a body."""
    def indent(s: str) -> str:
        return s[: len(s) - len(s.lstrip())]
    # A comment in column 0 (a commented-out line) does not set the indent.
    nonblank = [indent(s) for s in body if s.strip() and not s.startswith("#")]
    if not nonblank:
        return []
    common = nonblank[0]
    for ind in nonblank[1:]:
        while not ind.startswith(common):
            common = common[:-1]
    out = [s[len(common):] if s.startswith(common) else s.lstrip() for s in body]
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    # Leading tabs (nested blocks) become two spaces; tabs inside a line stay.
    return [re.sub(r"^\t+", lambda m: "  " * len(m.group(0)), s) for s in out]


def _tidy(lines: list[str]) -> list[str]:
    """Drop leading/trailing blank lines and squeeze runs of blank lines."""
    out: list[str] = []
    for line in lines:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def _logical(lines: list[str]) -> list[list[str]]:
    """Group physical lines into commands (backslash continuations joined)."""
    groups: list[list[str]] = []
    cur: list[str] = []
    for line in lines:
        cur.append(line)
        if not line.rstrip().endswith("\\"):
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    return groups


def _joined(group: list[str]) -> str:
    return " ".join(s.strip().rstrip("\\").strip() for s in group).strip()


def split_list(value: str) -> list[str]:
    """Iglunix lists are colon or space separated: "musl:libcxx" or "a b"."""
    return [p for p in re.split(r"[:\s,]+", value.strip()) if p]


_UNDERSCORE_IDIOM = re.compile(
    r"""^\$\(\s*echo\s+"?\$\{?pkgver\}?"?\s*\|\s*tr\s+['"]?\.['"]?\s+['"]?_['"]?\s*\)$""")


def derived_versions(toplevel: list[str]) -> dict[str, str]:
    """Top-level variables that are a known function of pkgver, as URL fields.

    Iglunix computes `pkg_ver=$(echo $pkgver | tr '.' '_')` for tag names
    like curl-8_5_0; the recipe URL has {version_underscore} for that.
    """
    out = {}
    for line in toplevel:
        m = _ASSIGN.match(line.strip())
        if m and _UNDERSCORE_IDIOM.match(_unquote(m.group(2))):
            out[m.group(1)] = "{version_underscore}"
    return out


def _expand(text: str, variables: dict[str, str], derived: dict[str, str] | None = None) -> str:
    """$pkgname and $pkgver as recipe text: the name, and {version}."""
    for var, field_ in (derived or {}).items():
        text = re.sub(rf"\$\{{?{var}\}}?(?![A-Za-z0-9_])", field_, text)
    text = re.sub(r"\$\{pkgver\}|\$pkgver(?![A-Za-z0-9_])", "{version}", text)
    return re.sub(r"\$\{pkgname\}|\$pkgname(?![A-Za-z0-9_])", variables.get("pkgname", ""),
                  text)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def find_local(names: Iterable[str], places: Sequence[Path]) -> Path | None:
    """The first file called one of `names` in the distfiles/mirror folders."""
    for place in places:
        for name in names:
            if name and (place / name).is_file():
                return place / name
    return None


class _Converter:
    def __init__(self, script: BuildScript, places: Sequence[Path]) -> None:
        self.s = script
        self.places = places
        self.v = script.variables
        self.name = self.v["pkgname"]
        self.todos: list[str] = []
        self.unresolved: list[str] = []
        self.gnu: list[str] = []
        self.sources: list[CommentedMap] = []
        self.patches: list[str] = []
        self.files: list[Path] = []
        self.prepare: list[str] = []
        self.main_list: list[str] = []
        self.derived = derived_versions(script.toplevel + script.functions.get("fetch", []))

    # -- helpers ---------------------------------------------------------
    def todo(self, message: str) -> str:
        self.todos.append(message)
        return f"# TODO: {message}"

    def _beside(self, ref: str) -> Path | None:
        """A file beside build.sh that a `../X` or `../../X` path names."""
        name = re.sub(r"^(\.\./)+", "", ref.strip("\"'"))
        candidate = self.s.path.parent / name
        if "/" not in name and candidate.is_file():
            return candidate
        return None

    def _add_file_source(self, path: Path) -> None:
        if path not in self.files:
            self.files.append(path)
            self.sources.append(CommentedMap([("file", path.name)]))

    def _gnu(self, tool: str) -> None:
        if tool not in self.gnu:
            self.gnu.append(tool)

    # -- phases ----------------------------------------------------------
    def phase(self, fname: str) -> list[str]:
        """Translate a build/package body into phase lines (cwd = srcdir)."""
        out: list[str] = []
        unknown: set[str] = set()
        for group in _logical(self.s.functions.get(fname, [])):
            cmd = _joined(group)
            if _CD_SRC.match(cmd):
                continue  # cwd already is the source folder
            if _BAD_GMAKE.search(cmd):
                self._gnu("gmake")
                group = [_BAD_GMAKE.sub("", s) for s in group]
                cmd = _joined(group)
            for ref in re.findall(r"(?:\.\./)+[A-Za-z0-9_.+-]+", cmd):
                beside = self._beside(ref)
                if beside is not None:
                    self._add_file_source(beside)
                    out.append(self.todo(
                        f"{fname}() uses {ref}, the file beside build.sh; it is listed as a "
                        f"`file:` source, which is copied next to the source folder "
                        f"(../{beside.name})"))
                else:
                    out.append(self.todo(
                        f"{fname}() uses {ref}, a path in Iglunix's build layout; "
                        "cwd is now the source folder"))
            for var in _VAR_REF.findall(cmd):
                if var not in PHASE_VARS and not re.search(rf"\b{var}=", "\n".join(
                        self.s.functions.get(fname, []))):
                    unknown.add(var)
            out.extend(group)
        if unknown:
            out.insert(0, self.todo(
                f"{fname}() uses {', '.join('$' + u for u in sorted(unknown))}, which iglubuild "
                f"does not set (Iglunix set it at the top of build.sh or from its cross mode)"))
        return out

    def fetch(self) -> None:
        """Sources, patches and prepare lines from fetch()."""
        in_src = False
        for group in _logical(self.s.functions.get("fetch", [])):
            cmd = _joined(group)
            original = "\n".join(group)
            if _CURL.match(cmd):
                self._curl(cmd)
                continue
            am = _ASSIGN.match(cmd)
            if am and am.group(1) in self.derived:
                self.prepare.append(f"# (from fetch(): {cmd} -- used as "
                                    f"{self.derived[am.group(1)]} in the source URL)")
                continue
            if _TAR_X.match(cmd) or _MV_SRC.match(cmd) or _MKDIR_BUILD.match(cmd):
                continue  # unpacking into the source folder is the engine's job
            if _CD_SRC.match(cmd):
                in_src = True
                continue
            pm = _PATCH.match(cmd)
            if pm:
                beside = self._beside(pm.group(3))
                if beside is not None and pm.group(1) in (None, "-p1 "):
                    self.files.append(beside)
                    self.patches.append(beside.name)
                    continue
            if cmd.startswith("#"):
                self.prepare.append(original)
                continue
            if in_src and not re.search(r"\.\./", cmd):
                if _BAD_GMAKE.search(cmd):
                    self._gnu("gmake")
                    group = [_BAD_GMAKE.sub("", s) for s in group]
                self.prepare.extend(group)
                continue
            self.prepare.append(self.todo(
                "fetch() line not translated (runs outside the source folder or uses a file "
                "beside build.sh):"))
            self.prepare.extend("# " + s for s in group)

    def _curl(self, cmd: str) -> None:
        urls = [u for u in (_unquote(t) for t in cmd.split()) if re.match(r"^[a-z]+://", u)]
        if not urls:
            self.prepare.append(self.todo(f"fetch() curl without a URL: {cmd}"))
            return
        url = urls[0]
        om = re.search(r"\s-o\s+(\S+)", cmd)
        out_name = _expand(_unquote(om.group(1)), self.v) if om else None
        expanded = _expand(url, self.v, self.derived)
        # Shell expansions the recipe cannot express (${pkgver/_/}) keep their
        # text, with braces doubled so the loader reads them literally.
        shell_exprs = re.findall(r"\$\{[^}]*\}", expanded)
        for expr in shell_exprs:
            expanded = expanded.replace(expr, expr.replace("{", "{{").replace("}", "}}"))
        src = CommentedMap([("url", expanded)])
        leftover = [v for v in _VAR_REF.findall(expanded)] + shell_exprs
        if leftover:
            what = leftover[0] if leftover[0].startswith("$") else f"${leftover[0]}"
            self.todos.append(f"source URL uses {what}, computed by the shell")
            self.unresolved.append(f"URL uses {what}")
            src.yaml_add_eol_comment(f"TODO: replace {what} (computed by the shell)", "url")
        version = self.v.get("pkgver", "")
        basename = expanded.rsplit("/", 1)[-1].replace("{version}", version).replace(
            "{version_underscore}", version.replace(".", "_"))
        names = [basename]
        pretty = None
        if out_name:
            out_real = out_name.replace("{version}", version)
            # Iglunix often saves a .tar.gz under a .tar.xz name; only trust
            # the -o name when the URL's own name says nothing about the package.
            if not basename.startswith(self.name) and basename.endswith(ARCHIVE_SUFFIXES):
                ext = next(s for s in ARCHIVE_SUFFIXES if basename.endswith(s))
                pretty = f"{self.name}-{version}{ext}"
                names.append(pretty)
            names.append(out_real)
        local = find_local(names, self.places) if not leftover else None
        # `filename` is literal (the loader expands {version} in url only).
        if pretty and (local is None or local.name == pretty):
            src["filename"] = pretty
        if local is not None:
            if local.name != basename and local.name != pretty:
                src["filename"] = local.name
            src["sha256"] = _sha256(local)
            src.yaml_add_eol_comment(f"computed from {local}", "sha256")
        else:
            src["unverified"] = "not found locally when imported; run iglubuild checksum"
        self.sources.append(src)

    def _is_subpackage_function(self, fname: str) -> bool:
        return fname not in ("fetch", "build", "package", "license", "backup", "check",
                             "prepare") and not fname.startswith("package_")

    def subpackages(self) -> CommentedMap:
        """Sub-packages from `ext` and from Iglunix's per-sub-package functions."""
        subs = CommentedMap()
        split_by_function = any(self._is_subpackage_function(f) for f in self.s.functions)
        for ext in split_list(self.v.get("ext", "")):
            if split_by_function:
                # Iglunix ignores ext when sub-package functions list the files.
                self.todos.append(f"ext={ext} ignored: sub-package functions list the files")
                continue
            globs = EXT_GLOBS.get(ext)
            body = self.s.functions.get(f"package_{ext}")
            if globs is None:
                subs[ext] = CommentedSeq()
                self.todos.append(f"sub-package {ext}: no default file list")
                subs.yaml_add_eol_comment(f"TODO: list the files of {ext}", ext)
                continue
            subs[ext] = CommentedSeq(globs)
            main = self.s.functions.get("package", [])
            if not body:
                continue
            listing = "\n".join("  " + s for s in body)
            if [s for s in body if not _CD_SRC.match(s.strip())] != \
                    [s for s in main if not _CD_SRC.match(s.strip())]:
                self.todos.append(f"package_{ext}() body not translated, default globs used")
                subs.yaml_set_comment_before_after_key(
                    ext, before=f"TODO: package_{ext}() was, default globs used instead:\n"
                    + listing, indent=2)
            else:
                # Same install as package(): the globs pick the files out of it.
                subs.yaml_set_comment_before_after_key(
                    ext, before=f"package_{ext}() repeated package():\n{listing}", indent=2)
        for fname, body in self.s.functions.items():
            if not self._is_subpackage_function(fname):
                continue
            globs: list[str] = []
            other: list[str] = []
            for line in body:
                fm = _FIND.match(line.strip())
                if fm:
                    globs.extend(fm.group(1).split())
                elif line.strip():
                    other.append(line)  # shlibs=, deps=, anything else: kept as TODO
            if fname == self.name:
                if other or globs != ["*"]:
                    self.todos.append(f"{fname}() (the main package's file list) not translated")
                    self.main_list = body
                continue  # everything left over is the main package anyway
            sub = subpackage_name(self.name, fname)
            if sub in subs:
                sub = f"{sub}_"
            subs[sub] = CommentedSeq(g for g in globs if g != "*")
            notes = []
            if f"{self.name}-{sub}" != fname:
                self.todos.append(f"Iglunix package {fname} is now {self.name}-{sub}; "
                                  f"fix packages that depend on {fname}")
                notes.append(f"Iglunix package {fname}, now {self.name}-{sub} (sub-package "
                             "names have no '-')")
            if other or not globs:
                self.todos.append(f"sub-package function {fname}() not fully translated")
                notes.append(f"TODO: {fname}() was:\n" + "\n".join("  " + s for s in body))
            if notes:
                subs.yaml_set_comment_before_after_key(sub, before="\n".join(notes), indent=2)
        return subs


def subpackage_name(pkgname: str, fname: str) -> str:
    """A recipe sub-package name for an Iglunix sub-package function.

    Recipe sub-packages are named <pkg>-<sub> and <sub> has no '-':
    llvm's `llvm-binutils` becomes `binutils`, `libcxx-dev` becomes `libcxx_dev`.
    """
    sub = fname[len(pkgname) + 1:] if fname.startswith(pkgname + "-") else fname
    sub = re.sub(r"[^a-z0-9+._]", "_", sub.lower())
    return sub if re.match(r"^[a-z0-9]", sub) else f"x{sub}"


def convert(path: Path, places: Sequence[Path] = ()) -> ImportResult:
    """Read an Iglunix build.sh and produce the text of an equivalent recipe.yaml."""
    script = parse_build_sh(path)
    c = _Converter(script, places)
    v = script.variables
    repo = path.parent.parent.name or "base"

    c.fetch()
    build = _tidy(c.phase("build"))
    package = _tidy(c.phase("package"))
    c.prepare = _tidy(c.prepare)

    self_deps: list[str] = []
    deps = split_list(v.get("deps", ""))
    if v["pkgname"] in deps:
        deps.remove(v["pkgname"])
        self_deps.append("deps")
    makedeps: list[str] = []
    for dep in split_list(v.get("mkdeps", "")):
        if dep == "bad":
            continue  # Iglunix's wrapper that puts its GNU tools on PATH
        if dep == v["pkgname"]:
            self_deps.append("makedeps")  # Iglunix: an earlier build bootstraps this one
            continue
        (c._gnu(dep) if dep in GNU_TOOLS or dep in split_list(v.get("bad", ""))
         else makedeps.append(dep))
    for tool in split_list(v.get("bad", "")):
        c._gnu(tool)

    doc = CommentedMap()
    doc["name"] = v["pkgname"]
    version = v.get("pkgver", "")
    if not version or "$" in version:
        version = version or "0"
        c.todos.append("pkgver is missing or computed; set the version")
        c.unresolved.append("version")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+~]*$", version):
        fixed = re.sub(r"[^A-Za-z0-9._+~]", "_", version).lstrip("._+~") or "0"
        c.todos.append(f"version {version!r} is not a valid recipe version; written as {fixed!r}")
        version = fixed
    doc["version"] = version
    rel = v.get("pkgrel", "1")
    doc["release"] = int(rel) if rel.isdigit() else 1
    doc["description"] = v.get("desc") or f"{v['pkgname']} (imported from Iglunix)"
    if not v.get("desc"):
        c.todos.append("no desc= in build.sh; write a description")
    doc["license"] = "LicenseRef-TODO"
    doc["deps"] = CommentedSeq(deps)
    if deps:
        # Iglunix builds in a root holding every -dev package; iglubuild's
        # sysroot holds only what the recipe names.
        c.todos.append("add <dep>-dev to makedeps for each dep whose headers the build uses")
        doc.yaml_add_eol_comment("TODO: add <dep>-dev to makedeps for headers/.pc files "
                                 "(the build sysroot holds only what is named)", "deps")
    doc["makedeps"] = CommentedSeq(makedeps)
    for kind in self_deps:
        c.todos.append(f"{v['pkgname']} listed itself in {kind} (a bootstrap); removed")
        doc.yaml_add_eol_comment(f"TODO: build.sh listed {v['pkgname']} itself here "
                                 "(bootstrapped from an earlier build); removed", kind)
    doc["gnu"] = CommentedSeq(c.gnu)
    doc["sources"] = CommentedSeq(c.sources)
    if not c.sources:
        c.todos.append("fetch() has no curl line: add the sources")
        doc.yaml_set_comment_before_after_key(
            "sources", before="TODO: fetch() downloads nothing (see prepare); add the sources")
    if c.patches:
        doc["patches"] = CommentedSeq(c.patches)
    if c.prepare:
        doc["prepare"] = LiteralScalarString("\n".join(c.prepare) + "\n")
    if build:
        doc["build"] = LiteralScalarString("\n".join(build) + "\n")
    if package:
        doc["package"] = LiteralScalarString("\n".join(package) + "\n")
    else:
        c.todos.append("no package() function: install the files into $pkgdir")
    subs = c.subpackages()
    if subs:
        doc["subpackages"] = subs
    if c.main_list:
        key = "package" if "package" in doc else "name"
        doc.yaml_set_comment_before_after_key(
            key, before=f"TODO: {v['pkgname']}() listed the main package's files (it gets "
            "whatever no sub-package claims):\n" + "\n".join("  " + s for s in c.main_list))
    backup = script.functions.get("backup", [])
    if backup and not all(_RETURN.match(s.strip()) for s in backup if s.strip()):
        c.todos.append("backup() not translated")
        doc["backup"] = CommentedSeq()
        doc.yaml_set_comment_before_after_key(
            "backup", before="TODO: backup() was:\n" + "\n".join("  " + s for s in backup))

    # The license text: Iglunix prints it from license(); recipes name it.
    lic = [s.strip() for s in script.functions.get("license", []) if s.strip()]
    lic_files = [m.group(1) for m in (_CAT.match(s) for s in lic) if m]
    c.todos.append("set the SPDX license expression")
    doc.yaml_add_eol_comment(
        "TODO: SPDX expression; license() " + (
            f"printed {', '.join(lic_files)}" if lic_files and len(lic_files) == len(
                [s for s in lic if not _CD_SRC.match(s)]) else "was: " + "; ".join(lic)),
        "license")

    for fname, body in script.functions.items():
        known = ("fetch", "build", "package", "license", "backup")
        if fname in known or fname.startswith("package_") or fname == v["pkgname"] or \
                subpackage_name(v["pkgname"], fname) in subs:
            continue
        c.todos.append(f"function {fname}() not translated")
        doc.yaml_set_comment_before_after_key(
            "name", before=f"TODO: function {fname}() not translated:\n"
            + "\n".join("  " + s for s in body))

    head = [f"Imported from Iglunix {repo}/{path.parent.name}/build.sh by `iglubuild import`."]
    head.append("Review every TODO below before building.")
    top = [s for s in script.toplevel if not s.strip().startswith("#")] or []
    top_comments = [s for s in script.toplevel if s.strip().startswith("#")]
    if top:
        c.todos.append("top-level code of build.sh not translated")
        head.append("TODO: top-level code of build.sh not translated:")
        head.extend("  " + s for s in top)
    if top_comments:
        head.append("Comments from build.sh:")
        head.extend("  " + s.strip().lstrip("#").strip() for s in top_comments)
    doc.yaml_set_start_comment("\n".join(head))

    yaml = YAML()
    yaml.width = 4096  # never fold a long URL or comment
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    unverified = sum(1 for s in c.sources if "unverified" in s)
    if unverified:
        c.unresolved.append(f"{unverified} source(s) unverified")
    return ImportResult(name=v["pkgname"], repo=repo, text=buf.getvalue(),
                        todos=c.todos, files=c.files, unresolved=c.unresolved)


def write_recipe(result: ImportResult, out_dir: Path, force: bool = False) -> Path:
    """Write recipe.yaml (and the files it names) into out_dir, atomically."""
    target = out_dir / "recipe.yaml"
    if target.exists() and not force:
        raise UsageError(f"{target} already exists",
                         hint="pass --force to overwrite it, or -o to write elsewhere")
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in result.files:
        write_atomic(out_dir / f.name, f.read_bytes())
    write_atomic(target, result.text)
    return target


def local_places(distfiles: Path, mirrors: Sequence[str]) -> list[Path]:
    """Folders where a source file may already sit: the distfiles cache and
    mirrors that are local folders (a path or a file:// URL)."""
    places = [distfiles]
    for mirror in mirrors:
        if mirror.startswith("file://"):
            places.append(Path(mirror[len("file://"):]))
        elif "://" not in mirror:
            places.append(Path(mirror))
    return [p for p in places if p.is_dir()]
