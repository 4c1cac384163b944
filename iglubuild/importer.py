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
from iglubuild.integrity import file_hash
from iglubuild.recipe import NAME_RE, VERSION_RE
from iglubuild.scaffold import archive_suffix

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
STANDARD_FUNCTIONS = ("fetch", "build", "package", "license", "backup", "check", "prepare")

_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_FUNC = re.compile(r"^([A-Za-z_][A-Za-z0-9_+-]*)\s*\(\)\s*\{\s*$")
_VAR_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_SRC_BASE = r"""["']?\$\{?pkgname\}?-\$\{?pkgver\}?"""
_SRC_DIR = _SRC_BASE + r"""["']?/?"""
_CD_SRC = re.compile(rf"^cd\s+{_SRC_DIR}$")
_BAD_GMAKE = re.compile(r"\bbad\s+--gmake\s+")
_CURL = re.compile(r"^curl\s")
_TAR_X = re.compile(r"^(b?sd)?tar\s+-?[xzjJvf]*x[xzjJvf]*\s")
_MKDIR_BUILD = re.compile(rf"""^mkdir\s+(-p\s+)?{_SRC_BASE}/(build)["']?$""")
_CP_BESIDE = re.compile(r"^cp\s+((?:\.\./)+[A-Za-z0-9_.+*-]+)\s+(\.|" + _SRC_BASE +
                        r"""["']?(/[A-Za-z0-9_./-]*)?)$""")
_CWD_FREE = re.compile(r"^(#.*|export\s+.*|[A-Za-z_][A-Za-z0-9_]*=\S*|return|:|true|"
                       r"echo\s+[^<>|;&]*)?$")
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
    # Every top-level NAME=value whose value runs nothing ($(...) or `...`), in order.
    assigns: dict[str, str] = field(default_factory=dict)


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
        simple = am is not None and "$(" not in am.group(2) and "`" not in am.group(2)
        if am and simple:
            script.assigns[am.group(1)] = _unquote(am.group(2))
        if am and simple and am.group(1) in KNOWN_VARS:
            script.variables[am.group(1)] = _unquote(am.group(2))
        elif line.strip():
            script.toplevel.append(line)
        i += 1
    if "pkgname" not in script.variables:
        raise UsageError(f"{path}: no pkgname= line",
                         hint="is this an Iglunix build.sh? it must set pkgname and pkgver")
    if not NAME_RE.match(script.variables["pkgname"]):
        raise UsageError(f"{path}: pkgname {script.variables['pkgname']!r} is not a valid "
                         "recipe name", hint="recipe names use lowercase letters, digits and "
                         "+ - . _; rename the package in build.sh first")
    return script


def _dedent(body: list[str]) -> list[str]:
    """Remove the common leading whitespace (tabs in Iglunix) from a body."""
    def indent(s: str) -> str:
        return s[: len(s) - len(s.lstrip())]
    # A stray space before a tab (glib's build()) is not indentation of its own.
    body = [re.sub(r"^ +(?=\t)", "", s) for s in body]
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


def _shell_quote(value: str) -> str:
    return value if re.match(r"^[A-Za-z0-9_.+:/@%=-]*$", value) else "'" + value.replace(
        "'", "'\\''") + "'"


def find_local(names: Iterable[str], places: Sequence[Path]) -> Path | None:
    """The first file called one of `names` in the distfiles/mirror folders."""
    for place in places:
        for name in names:
            if name and (place / name).is_file():
                return place / name
    return None


def resolve(value: str, assigns: dict[str, str], depth: int = 0) -> str | None:
    """`value` with top-level variables substituted; None when shell is needed.

    `pkgver=$_pkgver.2` after `_pkgver=2.75` is 2.75.2; `$(...)`, `${x%.*}`
    and variables never assigned at the top level cannot be resolved here.
    """
    if depth > 10 or "$(" in value or "`" in value:
        return None
    out = value
    for m in reversed(list(re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                                      value))):
        var = m.group(1) or m.group(2)
        if var not in assigns:
            return None
        sub = resolve(assigns[var], assigns, depth + 1)
        if sub is None:
            return None
        out = out[:m.start()] + sub + out[m.end():]
    return None if "$" in out else out


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
        self.copied: list[Path] = []  # `cp ../X .` in fetch(): file sources unless patches
        self.prepare: list[str] = []
        self.main_list: list[str] = []
        self.fetched: list[str] = []  # names curl saved, expanded: what tar -x may unpack
        self.derived = derived_versions(script.toplevel + script.functions.get("fetch", []))
        raw = self.v.get("pkgver", "")
        self.version = resolve(raw, script.assigns) if raw else None
        self.used_assigns: set[str] = set()  # top-level variables translated somewhere
        # Iglunix names its sub-package functions in subpkgs= (llvm, libedit).
        listed = resolve(script.assigns["subpkgs"], script.assigns) \
            if "subpkgs" in script.assigns else None
        self.listed_subpackages = set(split_list(listed or ""))
        if listed is not None:
            self.used_assigns.add("subpkgs")
            self.used_assigns.update(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)",
                                                script.assigns["subpkgs"]))
        self.helpers = [f for f in script.functions if self._is_helper(f)]
        self.used_helpers: set[str] = set()

    # -- helpers ---------------------------------------------------------
    def todo(self, message: str) -> str:
        self.todos.append(message)
        return f"# TODO: {message}"

    def _is_helper(self, fname: str) -> bool:
        """A shell function other functions call (`_clear_vendor_checksums`), not a
        sub-package: named with a leading `_`, or called at a command's start."""
        if fname in STANDARD_FUNCTIONS or fname.startswith("package_") or fname == self.name:
            return False
        if fname.startswith("_"):
            return True
        if fname in self.listed_subpackages:
            return False
        return any(self._calls(body, fname) for other, body in self.s.functions.items()
                   if other != fname)

    def _calls(self, lines: list[str], helper: str) -> bool:
        """Whether a line runs `helper` as a command (not `-DX="llvm;lld"`)."""
        call = re.compile(rf"(^|[;&|(]\s+|&&\s*|\|\|\s*|\bthen\s+|\bdo\s+)"
                          rf"{re.escape(helper)}(\s|$)")
        return any(call.search(s.strip()) for s in lines if not s.strip().startswith("#"))

    def _helper_defs(self, lines: list[str]) -> list[str]:
        """Definitions of the helper functions `lines` call, to put before them."""
        out: list[str] = []
        for helper in self.helpers:
            if self._calls(lines, helper):
                self.used_helpers.add(helper)
                out.append(f"{helper}() {{  # a helper function of build.sh")
                out.extend("  " + s if s.strip() else s for s in self.s.functions[helper])
                out.append("}")
        return out

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
        if not any(s.get("file") == path.name for s in self.sources):
            self.sources.append(CommentedMap([("file", path.name)]))

    def _gnu(self, tool: str) -> None:
        if tool not in self.gnu and tool != self.name:
            self.gnu.append(tool)

    def _strip_bad_gmake(self, group: list[str]) -> list[str]:
        if any(_BAD_GMAKE.search(s) for s in group):
            self._gnu("gmake")
            return [_BAD_GMAKE.sub("", s) for s in group]
        return group

    def _toplevel_vars(self, fname: str, cmd: str, assigned: str) -> tuple[list[str], set[str]]:
        """Assignments to put before a phase for the top-level variables it uses,
        and the variables nobody sets."""
        lines: list[str] = []
        unknown: set[str] = set()
        for var in _VAR_REF.findall(cmd):
            if var in PHASE_VARS or re.search(rf"\b{var}=", assigned):
                continue
            value = resolve(f"${var}", self.s.assigns) if var in self.s.assigns else None
            if value is not None:
                line = f"{var}={_shell_quote(value)}  # from the top of build.sh"
                if line not in lines:
                    lines.append(line)
                self.used_assigns.add(var)
            else:
                unknown.add(var)
        return lines, unknown

    # -- phases ----------------------------------------------------------
    def phase(self, fname: str) -> list[str]:
        """Translate a build/package/check body into phase lines (cwd = srcdir).

        Iglunix runs each function in the folder that holds the source folder
        and most start with `cd $pkgname-$pkgver`; a phase here starts in the
        source folder, so that first cd is dropped, and commands that ran
        before it (or in a function without it) run in `..`, where `file:`
        sources are copied, and are flagged.
        """
        body = self.s.functions.get(fname, [])
        groups = _logical(body)
        out: list[str] = []
        unknown: set[str] = set()
        prelude: list[str] = []
        assigned = "\n".join(body)
        in_src = False
        depth = 0  # folders below the source folder after `cd build` and the like
        has_cd = any(_CD_SRC.match(_joined(g)) for g in groups)
        for group in groups:
            cmd = _joined(group)
            if not cmd:
                out.append("")
                continue
            if cmd.startswith("#"):
                out.extend(group)  # commented-out code stays a comment, nothing else
                continue
            if _CD_SRC.match(cmd):
                if in_src or out and any(s.strip() == "cd .." for s in out):
                    out.append('cd "$srcdir"')  # back into the source folder
                in_src = True
                continue
            if not in_src and not _CWD_FREE.match(cmd) and not any(
                    s.strip() == "cd .." for s in out):
                where = "before its `cd $pkgname-$pkgver`" if has_cd else \
                    "without a `cd $pkgname-$pkgver`"
                out.append(self.todo(
                    f"{fname}() runs `{cmd[:60]}` {where}: in Iglunix that was the folder "
                    "holding the source folder; here it is `..`, where `file:` sources are "
                    "copied; check the files it uses are sources"))
                out.append("cd ..")
            group = self._strip_bad_gmake(group)
            cmd = _joined(group)
            cd = re.match(r"^cd\s+([^;&|$\s]+)$", cmd)
            if cd and in_src:
                parts = [p for p in cd.group(1).split("/") if p not in ("", ".")]
                depth = 0 if cd.group(1).startswith("/") else \
                    depth + sum(-1 if p == ".." else 1 for p in parts)
            for ref in re.findall(r"(?:\.\./)+[A-Za-z0-9_.+-]+", cmd):
                if ref.count("../") <= depth:
                    continue  # still inside the source folder (cd build; cmake ../llvm)
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
            lines, missing = self._toplevel_vars(fname, cmd, assigned)
            prelude.extend(s for s in lines if s not in prelude)
            unknown |= missing
            out.extend(group)
        out = self._helper_defs(out) + out
        if unknown:
            out.insert(0, self.todo(
                f"{fname}() uses {', '.join('$' + u for u in sorted(unknown))}, which iglubuild "
                f"does not set (Iglunix set it at the top of build.sh or from its cross mode)"))
        return prelude + out

    def fetch(self) -> None:
        """Sources, patches and prepare lines from fetch()."""
        body = self.s.functions.get("fetch", [])
        in_src = False
        assigned = "\n".join(body)
        prelude: list[str] = []
        unknown: set[str] = set()
        for group in _logical(body):
            cmd = _joined(group)
            original = "\n".join(group)
            if not cmd:
                self.prepare.append("")
                continue
            if cmd.startswith("#"):
                self.prepare.extend(group)  # commented-out code stays a comment
                continue
            if _CURL.match(cmd):
                self._curl(cmd)
                continue
            am = _ASSIGN.match(cmd)
            if am and am.group(1) in self.derived:
                self.prepare.append(f"# (from fetch(): {cmd} -- used as "
                                    f"{self.derived[am.group(1)]} in the source URL)")
                continue
            if _TAR_X.match(cmd) and not in_src:
                if re.search(r"\s-C\s*\S", cmd):
                    self.prepare.append(self.todo(
                        "fetch() unpacks an extra source into the source tree; the engine "
                        "unpacks every archive beside the source folder (in ..): move it "
                        "where this line put it (e.g. `mv ../NAME subprojects/NAME`):"))
                    self.prepare.extend("# " + s for s in group)
                elif self._unpacks_fetched(cmd):
                    pass  # the engine unpacks every archive source beside the source folder
                else:
                    self.prepare.append(self.todo(
                        "fetch() unpacks a file that is not a source here:"))
                    self.prepare.extend("# " + s for s in group)
                continue
            mv = re.match(r"^mv\s+\S+\s+(\S+)$", cmd)
            if mv and not in_src and _expand(_unquote(mv.group(1)).rstrip("/"), self.v) == \
                    f"{self.name}-{{version}}":
                continue  # the engine names the source folder itself
            mk = _MKDIR_BUILD.match(cmd)
            if mk and not in_src:
                self.prepare.append(f"mkdir {mk.group(1) or ''}{mk.group(2)}".replace("  ", " "))
                continue
            if _CD_SRC.match(cmd):
                in_src = True
                continue
            cp = _CP_BESIDE.match(cmd)
            if cp and not in_src:
                found = self._glob_beside(cp.group(1))
                if found:
                    self.copied.extend(f for f in found if f not in self.copied)
                    if cp.group(2) != ".":  # cp ../X $pkgname-$pkgver[/sub]: into the source
                        sub = (cp.group(3) or "").strip("/") or "."
                        self.prepare.extend(f"cp ../{f.name} {sub}" for f in found)
                    continue
                self.prepare.append(self.todo(
                    f"fetch() copies {cp.group(1)}, but nothing by that name is beside "
                    "build.sh: add it to the recipe folder as a `file:` source:"))
                self.prepare.extend("# " + s for s in original.splitlines())
                continue
            pm = _PATCH.match(cmd)
            if pm and in_src:
                beside = self._beside(pm.group(3))
                if beside is not None and pm.group(1) in (None, "-p1 "):
                    if beside not in self.files:
                        self.files.append(beside)
                    self.patches.append(beside.name)
                    continue
            if in_src:
                group = self._strip_bad_gmake(group)
                cmd = _joined(group)
                refs = re.findall(r"(?:\.\./)+[A-Za-z0-9_.+-]+", cmd)
                beside_refs = [(r, self._beside(r)) for r in refs]
                if all(b is not None for _, b in beside_refs):
                    # ../X and ../../X both name a file beside build.sh, which is
                    # a `file:` source here, copied beside the source folder.
                    for ref, b in beside_refs:
                        assert b is not None
                        self._add_file_source(b)
                        group = [s.replace(ref, f"../{b.name}") for s in group]
                    lines, missing = self._toplevel_vars("fetch", cmd, assigned)
                    prelude.extend(s for s in lines if s not in prelude)
                    unknown |= missing
                    self.prepare.extend(group)
                    continue
                why = "names a file that is not beside build.sh"
                if pm:
                    name = pm.group(3).rsplit("/", 1)[-1]
                    self.prepare.append(self.todo(
                        f"fetch() applies {name}, which is not beside build.sh: add it to "
                        "the recipe folder and list it in patches (or drop this line):"))
                    self.prepare.extend("# " + s for s in original.splitlines())
                    continue
            else:
                why = "runs outside the source folder"
            self.prepare.append(self.todo(f"fetch() line not translated ({why}):"))
            self.prepare.extend("# " + s for s in original.splitlines())
        for f in self.copied:
            if f.name not in self.patches:
                self._add_file_source(f)
        if unknown:
            prelude.insert(0, self.todo(
                f"fetch() uses {', '.join('$' + u for u in sorted(unknown))}, which iglubuild "
                "does not set (Iglunix set it at the top of build.sh or from its cross mode)"))
        self.prepare = prelude + self.prepare
        self.prepare = self._helper_defs(self.prepare) + self.prepare

    def _glob_beside(self, ref: str) -> list[Path]:
        name = re.sub(r"^(\.\./)+", "", ref)
        if "/" in name:
            return []
        return sorted(p for p in self.s.path.parent.glob(name) if p.is_file())

    def _unpacks_fetched(self, cmd: str) -> bool:
        words = [_expand(_unquote(w), self.v, self.derived) for w in cmd.split()[2:]]
        return any(w in self.fetched for w in words) or (
            len(self.fetched) == 1 and any(archive_suffix(w) for w in words))

    def _curl(self, cmd: str) -> None:
        urls = [u for u in (_unquote(t) for t in cmd.split()) if re.match(r"^[a-z]+://", u)]
        if not urls:
            self.prepare.append(self.todo(f"fetch() curl without a URL: {cmd}"))
            return
        url = urls[0]
        first = not any("url" in s for s in self.sources)
        om = re.search(r"\s-o\s+(\S+)", cmd)
        out_name = _expand(_unquote(om.group(1)), self.v) if om else None
        before_fields = _expand(url, self.v, self.derived)
        expanded = self._url_fields(before_fields)
        self.fetched.append(out_name or expanded.rsplit("/", 1)[-1])
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
        version = self.version or ""
        if first and version and not leftover and "{version" not in expanded and \
                expanded == before_fields:
            literal = re.findall(r"(?<![\d.])\d+(?:[._]\d+)+(?![\d])", expanded)
            if literal and version not in literal:
                msg = (f"the URL fetches version {literal[-1]} but pkgver is {version}; "
                       "make them agree (the URL was kept as build.sh had it)")
                self.todos.append(msg)
                self.unresolved.append(f"URL version {literal[-1]} != {version}")
                src.yaml_add_eol_comment("TODO: " + msg, "url")
        basename = expanded.rsplit("/", 1)[-1].replace("{version}", version).replace(
            "{version_underscore}", version.replace(".", "_"))
        basename = basename.replace("{version_minor}", ".".join(version.split(".")[:2]))
        names = [basename]
        pretty = None
        if out_name:
            out_real = out_name.replace("{version}", version)
            # Iglunix often saves a .tar.gz under a .tar.xz name; only trust
            # the -o name when the URL's own name says nothing about the package.
            ext = archive_suffix(basename)
            if not basename.startswith(self.name) and ext:
                if first:
                    pretty = f"{self.name}-{version}{ext}"
                elif out_real != basename:
                    # An extra source (foot's fcft): its own -o name, with the
                    # URL's archive type.
                    stem = out_real[: len(out_real) - len(archive_suffix(out_real))] \
                        if archive_suffix(out_real) else out_real
                    pretty = f"{stem}-{basename}" if not basename[:1].isalpha() else \
                        f"{stem}{ext}"
                if pretty:
                    names.append(pretty)
            names.append(out_real)
        taken = {s.get("filename") or str(s.get("url", "")).rsplit("/", 1)[-1]
                 for s in self.sources}
        if pretty in taken:
            pretty = f"{len(self.sources)}-{pretty}"
        local = find_local(names, self.places) if not leftover else None
        # `filename` is literal (the loader expands {version} in url only).
        if pretty and (local is None or local.name == pretty):
            src["filename"] = pretty
        if local is not None:
            if local.name != basename and local.name != pretty:
                src["filename"] = local.name
            src["sha256"] = file_hash(local)
            src.yaml_add_eol_comment(f"computed from {local}", "sha256")
        else:
            src["unverified"] = "not found locally when imported; run iglubuild checksum"
        self.sources.append(src)

    def _url_fields(self, url: str) -> str:
        """Top-level variables in a URL: {version_minor}/{version_major} when
        that is what they hold, else their literal value."""
        version = self.version or ""
        parts = version.split(".")
        for m in reversed(list(re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|"
                                           r"\$([A-Za-z_][A-Za-z0-9_]*)", url))):
            var = m.group(1) or m.group(2)
            if var not in self.s.assigns or var in ("pkgname", "pkgver"):
                continue
            value = resolve(f"${var}", self.s.assigns)
            if value is None:
                continue
            self.used_assigns.add(var)
            if version and value == ".".join(parts[:2]) and len(parts) > 2:
                value = "{version_minor}"
            elif version and value == parts[0] and len(parts) > 1:
                value = "{version_major}"
            url = url[:m.start()] + value + url[m.end():]
        return url

    def _is_subpackage_function(self, fname: str) -> bool:
        return fname not in STANDARD_FUNCTIONS and not fname.startswith("package_") \
            and fname not in self.helpers

    def subpackages(self) -> CommentedMap:
        """Sub-packages from `ext` and from Iglunix's per-sub-package functions."""
        subs = CommentedMap()
        split_by_function = any(self._is_subpackage_function(f) for f in self.s.functions)
        for ext in split_list(self.v.get("ext", "")):
            if split_by_function:
                # Iglunix ignores ext when sub-package functions list the files.
                self.todos.append(f"ext={ext} ignored: sub-package functions list the files")
                continue
            ext_globs = EXT_GLOBS.get(ext)
            body = self.s.functions.get(f"package_{ext}")
            if ext_globs is None:
                subs[ext] = CommentedSeq()
                self.todos.append(f"sub-package {ext}: no default file list")
                subs.yaml_add_eol_comment(f"TODO: list the files of {ext}", ext)
                continue
            subs[ext] = CommentedSeq(ext_globs)
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
            sub_deps = [d for line in other
                        if (m := re.match(r"^deps=(.*)$", line.strip()))
                        for d in split_list(_unquote(m.group(1)))]
            if sub_deps:
                # The recipe format has no per-sub-package deps: say which
                # ones Iglunix declared, so they are not lost.
                self.todos.append(f"sub-package {sub} needs {', '.join(sub_deps)} "
                                  "(Iglunix deps= of a sub-package; recipes have no "
                                  "sub-package deps yet)")
                notes.append(f"TODO: {self.name}-{sub} needs {', '.join(sub_deps)} at run time; "
                             "recipes have no sub-package deps yet")
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
    check = _tidy(c.phase("check"))
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
    raw_version = v.get("pkgver", "")
    version_note = None
    if c.version is None:
        # Written as build.sh had it (or empty), which lint refuses: a guess
        # here would build the wrong thing without a word.
        version = raw_version or "unset"
        version_note = ("TODO: could not resolve the version " + (
            f"(build.sh: pkgver={raw_version})" if raw_version else "(no pkgver= in build.sh)")
            + "; lint refuses this until it is set")
        c.todos.append(version_note[6:])
        c.unresolved.append("version")
        version = f"{version} (unresolved)" if VERSION_RE.match(version) else version
    else:
        version = c.version
        if version != raw_version:
            version_note = f"pkgver={raw_version} in build.sh"
            for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", raw_version):
                c.used_assigns.add(var)
        if not VERSION_RE.match(version):
            fixed = re.sub(r"[^A-Za-z0-9._+~]", "_", version).lstrip("._+~") or "0"
            c.todos.append(f"version {version!r} is not a valid recipe version; "
                           f"written as {fixed!r}")
            version_note = f"TODO: build.sh had version {version!r}, not a valid recipe version"
            version = fixed
    doc["version"] = version
    if version_note:
        doc.yaml_add_eol_comment(version_note, "version")
    rel = v.get("pkgrel", "1")
    doc["release"] = int(rel) if rel.isdigit() else 1
    doc["description"] = v.get("desc") or f"{v['pkgname']} (imported from Iglunix)"
    if not v.get("desc"):
        c.todos.append("no desc= in build.sh; write a description")
        doc.yaml_add_eol_comment("TODO: no desc= in build.sh; write a description",
                                 "description")
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
    if check:
        doc["check"] = LiteralScalarString("\n".join(check) + "\n")
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
        known = ("fetch", "build", "package", "license", "backup", "check")
        if fname in known or fname.startswith("package_") or fname == v["pkgname"] or \
                fname in c.used_helpers or (fname not in c.helpers and
                                            subpackage_name(v["pkgname"], fname) in subs):
            continue
        if fname in c.helpers:
            c.todos.append(f"helper function {fname}() is not called by any phase")
            doc.yaml_set_comment_before_after_key(
                "name", before=f"TODO: helper function {fname}() is not called by any phase "
                "(kept here):\n" + "\n".join("  " + s for s in body))
            continue
        c.todos.append(f"function {fname}() not translated")
        doc.yaml_set_comment_before_after_key(
            "name", before=f"TODO: function {fname}() not translated:\n"
            + "\n".join("  " + s for s in body))

    head = [f"Imported from Iglunix {repo}/{path.parent.name}/build.sh by `iglubuild import`."]
    head.append("Review every TODO below before building.")
    def _translated(line: str) -> bool:
        m = _ASSIGN.match(line)
        return m is not None and (m.group(1) in script.assigns or m.group(1) in c.derived)
    top = [s for s in script.toplevel if not s.strip().startswith("#") and not _translated(s)]
    top_comments = [s for s in script.toplevel if s.strip().startswith("#")]
    assign_lines = {m.group(1): line.strip() for line in script.toplevel
                    if (m := _ASSIGN.match(line)) and _translated(line)}
    used = [line for k, line in assign_lines.items() if k in c.used_assigns or (
        k in c.derived and any(c.derived[k] in str(src.get("url", "")) for src in c.sources))]
    unused = [line for line in assign_lines.values() if line not in used]
    if used:
        head.append("Top-level variables of build.sh, resolved where they are used: "
                    + "; ".join(used))
    if unused:
        c.todos.append("top-level assignments of build.sh used nowhere")
        head.append("TODO: top-level assignments of build.sh not used by any phase: "
                    + "; ".join(unused))
    if top:
        c.todos.append("top-level code of build.sh not translated")
        head.append("TODO: top-level code of build.sh not translated:")
        head.extend("  " + s for s in top)
    if top_comments:
        head.append("Comments from build.sh:")
        head.extend(("  " + s.strip().lstrip("#").strip()).rstrip() for s in top_comments)
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
