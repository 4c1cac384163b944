"""Where a recipe is parsed: recipe.yaml -> validated Recipe, errors as file:line:column.

Loading is two-speed. The fast path parses with ruamel's C loader and
validates with pydantic; most trees are valid, and 2,000 recipes parse in well
under a second that way. Only when something is wrong (or when a later stage
needs the position of a value) is the file parsed again with the round-trip
loader, whose nodes know their line and column. A parsed-recipe cache keyed by
file content skips both for files that did not change.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import pickle
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iglubuild.atomic import write_atomic
from iglubuild.errors import Problem, RecipeError

if TYPE_CHECKING:
    # ruamel is imported where YAML is read: a run served from the parsed-recipe
    # cache reads none, and the CLI's start-up should not pay for the parser.
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

RECIPE_FILE = "recipe.yaml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+._-]*$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~]*$")
HEX_RE = re.compile(r"^[0-9a-f]+$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
URL_SCHEMES = ("http://", "https://", "ftp://", "file://")
GIT_SCHEMES = ("https://", "http://", "git://")
KNOWN_OPTIONS = ("no-check", "no-distcc", "no-parallel", "keep-libtool-archives")
SUBPACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+._]*$")
MAX_VALUE_LENGTH = 65536
URL_FIELDS = ("name", "version", "version_underscore", "version_major", "version_minor")

def git_repo_name(url: str) -> str:
    """The repository's name in a clone URL: https://github.com/iglunix/init.git -> init.

    Mirrors hold a git source as git/<repo name>.bundle or git/<repo name>.git.
    """
    last = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    name = last.removesuffix(".git")
    return name if NAME_RE.match(name.lower()) and "://" not in name else ""


def _check_name(value: str, what: str = "package name") -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"invalid {what} {value!r}: use lowercase letters, digits and + - . _, "
            "starting with a letter or digit"
        )
    return value


def _check_option(value: str) -> str:
    if value not in KNOWN_OPTIONS:
        raise ValueError(f"unknown option {value!r}{_did_you_mean(value, KNOWN_OPTIONS)}")
    return value


Name = Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_check_name)]
OptionName = Annotated[StrictStr, AfterValidator(_check_option)]


# What the validators below enforce, for editors reading `iglubuild schema`:
# exactly one of url, file and git; a git source pinned by commit (or marked
# unverified, like a url source without a checksum).
_SOURCE_SCHEMA: dict[str, Any] = {
    "oneOf": [{"required": ["url"]}, {"required": ["file"]}, {"required": ["git"]}],
    "if": {"required": ["git"]},
    "then": {"anyOf": [{"required": ["commit"]}, {"required": ["unverified"]}],
             "not": {"anyOf": [{"required": ["sha256"]}, {"required": ["sha512"]},
                               {"required": ["filename"]}]}},
    "else": {"not": {"anyOf": [{"required": ["commit"]}, {"required": ["tag"]}]}},
}


class Source(BaseModel):
    """One source: a remote `url` with a checksum, a `git` repository pinned by
    `commit`, or a `file` beside the recipe."""

    # defer_build: the validators are made on the first validation, not at import;
    # a run served from the parsed-recipe cache only unpickles and never pays for them.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True,
                              json_schema_extra=_SOURCE_SCHEMA)

    url: StrictStr | None = None
    file: StrictStr | None = None
    sha256: StrictStr | None = None
    sha512: StrictStr | None = None
    filename: StrictStr | None = Field(
        default=None, description="name in mirrors and the cache, if not the URL's basename"
    )
    unverified: StrictStr | None = Field(
        default=None,
        description="why no checksum (or commit) is given yet; fetch refuses such a source",
    )
    size: StrictInt | None = Field(
        default=None, ge=1, description="exact size in bytes; a bigger download is cut off"
    )
    git: StrictStr | None = Field(
        default=None,
        description="a git clone URL (https, http or git); the source is the tree at `commit`",
    )
    commit: StrictStr | None = Field(
        default=None,
        description="the 40-hex commit id a git source is pinned to (`iglubuild checksum` "
                    "writes it from `tag`)",
        json_schema_extra={"pattern": "^[0-9a-f]{40}$"},
    )
    tag: StrictStr | None = Field(
        default=None,
        description="the upstream tag of `commit` (may use {version}); checked on fetch, "
                    "resolved by `iglubuild checksum`",
    )
    # The archive of a git source unpacks to <name>-<version>/ of its recipe;
    # the loader sets it (as it expands URLs), fetch reads it.
    _archive_prefix: str = PrivateAttr(default="")

    @field_validator("sha256", "sha512")
    @classmethod
    def _checksum(cls, v: str | None, info: ValidationInfo) -> str | None:
        digits = {"sha256": 64, "sha512": 128}[str(info.field_name)]
        if v is not None and not (len(v) == digits and HEX_RE.match(v)):
            raise ValueError(f"{info.field_name} must be {digits} lowercase hex digits, "
                             f"got {len(v)} characters")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(URL_SCHEMES):
            raise ValueError(f"unsupported URL {v!r}: expected http, https, ftp or file")
        return v

    @field_validator("git")
    @classmethod
    def _git(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(GIT_SCHEMES):
            raise ValueError(f"unsupported git URL {v!r}: expected https, http or git "
                             "(file:// is for mirrors only)")
        if v is not None and not git_repo_name(v):
            raise ValueError(f"git URL {v!r} names no repository")
        return v

    @field_validator("commit")
    @classmethod
    def _commit(cls, v: str | None) -> str | None:
        if v is not None and not (len(v) == 40 and HEX_RE.match(v)):
            raise ValueError(f"commit must be 40 lowercase hex digits (the full commit id), "
                             f"got {v!r}")
        return v

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        # What `git check-ref-format` refuses, so a tag is always one ref name.
        if v is not None and (not v or v.startswith(("-", "/", ".")) or v.endswith(
                (".", "/", ".lock")) or ".." in v or "//" in v or "@{" in v
                or re.search(r"[\x00-\x20\x7f~^:?*\[\\]", v)):
            raise ValueError(f"invalid tag {v!r}: not a git ref name")
        return v

    @field_validator("filename", "file")
    @classmethod
    def _plain_name(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and (v.startswith("/") or ".." in v.split("/") or not v):
            raise ValueError(f"{v!r} must be a relative path inside the recipe folder")
        if v is not None and info.field_name == "filename" and ("/" in v or v.startswith(".")):
            # It names a file in mirrors, the cache and beside srcdir: one plain name.
            raise ValueError(f"filename {v!r} must be a plain file name (no '/', not "
                             "starting with '.')")
        return v

    @model_validator(mode="after")
    def _kind(self) -> Source:
        if sum(x is not None for x in (self.url, self.file, self.git)) != 1:
            raise ValueError("a source needs exactly one of url, file or git")
        if self.git is None and (self.commit is not None or self.tag is not None):
            raise ValueError("commit and tag belong to git sources (git: URL)")
        if self.git is not None:
            if self.sha256 or self.sha512 or self.filename:
                raise ValueError("a git source is pinned by commit: it takes no sha256, "
                                 "sha512 or filename")
            # A git source without commit is reported by _content_checks,
            # which knows the recipe's name for the hint.
            return self
        if self.url is not None and not self.url.startswith("file://"):
            if not (self.sha256 or self.sha512 or self.unverified):
                raise ValueError(
                    "a remote source needs sha256 or sha512 "
                    "(run `iglubuild checksum NAME`, or mark it `unverified: why`)"
                )
        return self

    @property
    def is_remote(self) -> bool:
        return self.url is not None or self.git is not None

    @property
    def archive_prefix(self) -> str:
        """The top folder of a git source's archive: <name>-<version> of its recipe."""
        return self._archive_prefix or (git_repo_name(self.git) if self.git else "")

    @property
    def display_name(self) -> str:
        """The file name used in mirrors and the distfiles cache."""
        if self.git:
            # The archive written from the commit (a readable link in the cache).
            short = f"-{self.commit[:12]}" if self.commit else ""
            return f"{git_repo_name(self.git)}{short}.tar"
        if self.filename:
            return self.filename
        if self.url:
            return self.url.rstrip("/").rsplit("/", 1)[-1]
        return self.file or ""


class Recipe(BaseModel):
    """A validated recipe. Field meanings are in DESIGN.md's recipe format."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: Name
    version: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    release: StrictInt = 1
    description: StrictStr = ""
    license: StrictStr = ""
    homepage: StrictStr = ""
    deps: list[Name] = []
    makedeps: list[Name] = []
    gnu: list[Name] = []
    sources: list[Source] = []
    patches: list[StrictStr] = []
    options: list[OptionName] = []
    prepare: StrictStr | None = None
    build: StrictStr | None = None
    check: StrictStr | None = None
    package: StrictStr | None = None
    subpackages: dict[StrictStr, list[StrictStr]] = {}
    backup: list[StrictStr] = []
    # Why this recipe is not built here (cmake: its C++ runtime comes from
    # llvm, which has no source here). `world` leaves it and what needs it
    # out and says why; `pkg` refuses it.
    left_out: Annotated[StrictStr, Field(min_length=1, max_length=500)] | None = None
    # Why this package cannot rebuild to the same bytes; `iglubuild verify`
    # then reports a difference as known instead of failing.
    unreproducible: Annotated[StrictStr, Field(min_length=1, max_length=500)] | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not VERSION_RE.match(v):
            raise ValueError(
                f"invalid version {v!r}: no spaces or '-'; use letters, digits and . _ + ~"
            )
        return v

    @field_validator("release")
    @classmethod
    def _release(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"release must be a positive integer, got {v}")
        return v

    @field_validator("subpackages")
    @classmethod
    def _subpackages(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for sub in v:
            if not SUBPACKAGE_RE.match(sub):
                raise ValueError(f"invalid sub-package name {sub!r}: lowercase, digits, + . _")
        return v

    @property
    def phases(self) -> dict[str, str | None]:
        return {
            "prepare": self.prepare,
            "build": self.build,
            "check": self.check,
            "package": self.package,
        }

    def subpackage_names(self) -> list[str]:
        return [f"{self.name}-{sub}" for sub in self.subpackages]


@dataclass
class LoadedRecipe:
    """A recipe together with where it came from."""

    recipe: Recipe
    path: Path  # .../recipes/<repo>/<name>/recipe.yaml
    text: str
    repo: str

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.recipe.name

    def locate(self, loc: tuple[str | int, ...]) -> tuple[int, int]:
        """1-based (line, column) of the value at `loc`, e.g. ("deps", 2)."""
        return locate(self.text, loc)

    def problem(self, loc: tuple[str | int, ...], message: str, hint: str | None = None) -> Problem:
        line, col = self.locate(loc)
        return Problem(str(self.path), line, col, message, hint)


@dataclass
class RecipeTree:
    """Every recipe under the recipe folder, by name."""

    root: Path
    recipes: dict[str, LoadedRecipe] = field(default_factory=dict)
    unverified: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    def __iter__(self) -> Iterator[LoadedRecipe]:
        return iter(self.recipes.values())

    def __contains__(self, name: object) -> bool:
        return name in self.recipes

    def __getitem__(self, name: str) -> LoadedRecipe:
        return self.recipes[name]

    def providers(self) -> dict[str, tuple[str, str | None]]:
        """Package name -> (recipe name, sub-package or None), sub-packages included."""
        out: dict[str, tuple[str, str | None]] = {}
        for lr in self:
            for sub in lr.recipe.subpackages:
                out.setdefault(f"{lr.name}-{sub}", (lr.name, sub))
        for lr in self:
            out[lr.name] = (lr.name, None)
        return out


# --- YAML ------------------------------------------------------------------

def _fast_yaml() -> YAML:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=False)


def _rt_yaml() -> YAML:
    from ruamel.yaml import YAML

    return YAML(typ="rt")


def _to_plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    return node


def locate(text: str, loc: Iterable[str | int]) -> tuple[int, int]:
    """1-based (line, column) of the node at `loc` in YAML `text`.

    The deepest existing node is used: a missing key points at its parent
    mapping, an extra key at the key itself.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError

    try:
        node = _rt_yaml().load(text)
    except YAMLError:
        return (1, 1)
    line, col = 0, 0
    for step in loc:
        if isinstance(node, CommentedMap) and step in node:
            if isinstance(node[step], CommentedMap | CommentedSeq):
                line, col = node.lc.key(step)
            else:
                line, col = node.lc.value(step)
            node = node[step]
        elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
            line, col = node.lc.item(step)
            node = node[step]
        else:
            break
    return (line + 1, col + 1)


def locate_key(text: str, loc: tuple[str | int, ...]) -> tuple[int, int]:
    """1-based position of the key at the end of `loc` (for unknown or duplicate keys)."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError

    try:
        node = _rt_yaml().load(text)
    except YAMLError:
        return (1, 1)
    parent: Any = node
    for step in loc[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return locate(text, loc[:-1])
    last = loc[-1]
    if isinstance(parent, CommentedMap) and last in parent:
        line, col = parent.lc.key(last)
        return (line + 1, col + 1)
    return locate(text, loc)


def _mark_problem(path: Path, exc: MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    hint = None
    if "'\\t'" in problem or "\\t" in problem:
        problem = "tab character: YAML indentation must use spaces"
        hint = "replace tabs with spaces"
    elif "duplicate key" in problem:
        hint = "each key may appear once; remove or merge the repeated one"
    else:
        hint = "check indentation and quoting near this position"
    return Problem(str(path), line, col, f"invalid YAML: {problem}", hint)


def _decode(path: Path, data: bytes) -> tuple[str | None, Problem | None]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, Problem(str(path), line, col, "not UTF-8 text",
                             "recipes must be UTF-8 encoded YAML")
    bad = _CONTROL_RE.search(text)
    if bad is not None:
        index = bad.start()
        text_before = text[:index]
        line = text_before.count("\n") + 1
        col = index - (text_before.rfind("\n") + 1) + 1
        return None, Problem(str(path), line, col,
                             f"control character {bad.group()!r} in recipe",
                             "recipes are plain text; is this a binary file?")
    return text, None


# A recipe is a few dozen nodes and a few levels deep. These bound what YAML
# can make of a small file: aliases expand (a "billion laughs" of 10 nested
# 9-fold aliases is 3.4e9 nodes from 400 bytes, and lint walked them for
# minutes), and deep nesting crashes the C composer (100 000 `[` segfault).
MAX_YAML_NODES = 100_000
MAX_YAML_CHARS = 4 << 20  # the text of every value, aliases expanded
MAX_YAML_DEPTH = 32


def _shape_problem(path: Path, text: str) -> Problem | None:
    """Check the expanded size and nesting depth from the event stream, before
    anything is built: each anchor's expanded size is known when it closes, so
    an alias costs what it stands for and a bomb is refused at its first rung."""
    from ruamel.yaml.events import (
        AliasEvent,
        CollectionEndEvent,
        CollectionStartEvent,
        ScalarEvent,
    )

    sizes: dict[str, int] = {}
    chars: dict[str, int] = {}  # anchor -> characters of its values, expanded
    stack: list[list[Any]] = []  # [anchor, expanded size so far, characters] per collection
    total_chars = 0
    for ev in _fast_yaml().parse(text):
        if isinstance(ev, CollectionStartEvent):
            stack.append([ev.anchor, 1, 0])
            if len(stack) > MAX_YAML_DEPTH:
                mark = ev.start_mark
                return Problem(str(path), mark.line + 1, mark.column + 1,
                               f"YAML nested deeper than {MAX_YAML_DEPTH} levels",
                               "a recipe is a flat mapping of lists and strings")
            continue
        if isinstance(ev, AliasEvent):
            n, c = sizes.get(ev.anchor, 1), chars.get(ev.anchor, 0)
            total_chars += c  # an alias's text counts again each time it is used
        elif isinstance(ev, ScalarEvent):
            n, c = 1, len(ev.value)
            total_chars += c
            if ev.anchor:
                sizes[ev.anchor], chars[ev.anchor] = n, c
        elif isinstance(ev, CollectionEndEvent) and stack:
            anchor, n, c = stack.pop()
            if anchor:
                sizes[anchor], chars[anchor] = n, c
        else:
            continue
        if stack:
            stack[-1][1] += n
            stack[-1][2] += c
        mark = ev.start_mark
        if n > MAX_YAML_NODES or (stack and stack[-1][1] > MAX_YAML_NODES):
            return Problem(str(path), mark.line + 1, mark.column + 1,
                           f"YAML expands to more than {MAX_YAML_NODES} values "
                           "(aliases of aliases?)",
                           "write the values out; a recipe needs no alias bombs")
        if total_chars > MAX_YAML_CHARS:
            return Problem(str(path), mark.line + 1, mark.column + 1,
                           f"YAML expands to more than {MAX_YAML_CHARS >> 20} MiB of text "
                           "(a long value used through many aliases?)",
                           "write the values out; a recipe is a few KiB")
    return None


def _parse(path: Path, text: str) -> tuple[Any, list[Problem]]:
    """Parse with the fast loader; on error, describe it with a position."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        shape = _shape_problem(path, text)
        if shape is not None:
            return None, [shape]
        data = _fast_yaml().load(text)
    except MarkedYAMLError as exc:
        return None, [_mark_problem(path, exc)]
    except YAMLError as exc:
        return None, [Problem(str(path), 1, 1, f"invalid YAML: {exc}", None)]
    except RecursionError:
        return None, [Problem(str(path), 1, 1, "YAML nested too deeply", None)]
    except ValueError:  # a scalar YAML reads as a number that is none, e.g. `-_`
        return None, [_not_a_number_problem(path, text)]
    return data, []


def _not_a_number_problem(path: Path, text: str) -> Problem:
    """Where ruamel's number constructor gave up: YAML 1.2 reads `-_`, `._` or
    `0x_` as a number (underscores are digit separators) with no digit in it."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    yaml = _fast_yaml()
    stack: list[Any] = [yaml.compose(text)]
    found: list[Any] = []
    while stack:
        node = stack.pop()
        if isinstance(node, ScalarNode) and str(node.tag).endswith((":int", ":float")):
            try:
                yaml.constructor.construct_object(node)
            except ValueError:
                found.append(node)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            stack.extend(item for pair in node.value for item in pair)
    line = col = 1
    value = "a value"
    if found:
        first = min(found, key=lambda n: n.start_mark.index)
        line, col = first.start_mark.line + 1, first.start_mark.column + 1
        value = repr(first.value)
    return Problem(str(path), line, col, f"YAML reads {value} as a number, and it is none",
                   "quote it to keep it a string: '...'")


# --- validation --------------------------------------------------------------

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_FIELD_HINTS = {
    "deps": "expected a list of package names, e.g. deps: [openssl, zlib-ng]",
    "makedeps": "expected a list of package names, e.g. makedeps: [bmake]",
    "gnu": "expected a list of tool names, e.g. gnu: [gmake]",
    "sources": "expected a list of {url, sha256}, {git, commit} or {file} entries",
    "patches": "expected a list of patch file names beside the recipe",
    "options": "expected a list, e.g. options: [no-check]",
    "subpackages": "expected a mapping of sub-package name to a list of globs",
    "backup": "expected a list of paths, e.g. backup: [etc/foo.conf]",
    "version": "quote it if YAML reads it as a number: version: '1.10'",
    "release": "a positive integer, e.g. release: 1",
    "sha256": "quote checksums that YAML could read as a number: sha256: '0123...'",
    "sha512": "quote checksums that YAML could read as a number: sha512: '0123...'",
    "commit": "the full commit id, as `git rev-parse TAG^{commit}` prints it (quote it)",
}

_ALL_FIELDS = tuple(Recipe.model_fields)
_SOURCE_FIELDS = tuple(Source.model_fields)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "nothing (null)"
    return type(value).__name__


def _pydantic_problems(path: Path, text: str, exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        top = str(loc[0]) if loc else ""
        last = loc[-1] if loc else ""
        hint = _FIELD_HINTS.get(last) if isinstance(last, str) and last in _FIELD_HINTS \
            else _FIELD_HINTS.get(top)
        if kind == "extra_forbidden":
            key = str(loc[-1])
            choices = _SOURCE_FIELDS if "sources" in loc[:-1] else _ALL_FIELDS
            line, col = locate_key(text, loc)
            where = "source" if "sources" in loc[:-1] else "recipe"
            message = f"unknown {where} key {key!r}{_did_you_mean(key, choices)}"
            problems.append(Problem(str(path), line, col, message,
                                    "known keys: " + ", ".join(choices)))
            continue
        line, col = locate(text, loc)
        dotted = ".".join(str(p) for p in loc) or "recipe"
        if kind == "missing":
            message = f"missing required key {loc[-1]!r}"
        elif kind in _TYPE_WORDS:
            message = (f"{dotted}: expected {_TYPE_WORDS[kind]}, "
                       f"got {_type_name(err.get('input'))}")
        elif kind in ("string_too_long", "too_long"):
            message = f"{dotted}: value too long"
        elif kind in ("string_too_short", "too_short"):
            message = f"{dotted}: must not be empty"
        elif kind == "value_error":
            message = f"{dotted}: {err['msg'].removeprefix('Value error, ')}"
            hint = None
        else:
            message = f"{dotted}: {err['msg']}"
        problems.append(Problem(str(path), line, col, message, hint))
    return problems


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Accept what YAML turns into numbers where a string is meant (version: 590)."""
    out = dict(data)
    version = out.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        out["version"] = str(version)
    return out


def _expand(template: str, recipe: Recipe) -> str:
    parts = recipe.version.split(".")
    fields = {
        "name": recipe.name,
        "version": recipe.version,
        "version_underscore": recipe.version.replace(".", "_"),
        "version_major": parts[0],
        "version_minor": ".".join(parts[:2]),
    }
    return template.format(**fields)


def _context_checks(lr: LoadedRecipe, folder_name: str) -> list[Problem]:
    """Checks that need the file's place on disk (never cached)."""
    r = lr.recipe
    problems = []
    if r.name != folder_name:
        problems.append(lr.problem(("name",), f"name {r.name!r} does not match its folder "
                                   f"{folder_name!r}", f"rename the folder or set name: "
                                   f"{folder_name}"))
    for i, src in enumerate(r.sources):
        if src.file is None:
            continue
        outside = outside_problem(lr, ("sources", i, "file"), "file", src.file)
        if outside is not None:
            problems.append(outside)
        elif not (lr.dir / src.file).is_file():
            problems.append(lr.problem(("sources", i, "file"),
                                       f"file {src.file!r} not found beside the recipe",
                                       f"expected {lr.dir / src.file}"))
    for i, patch in enumerate(r.patches):
        outside = outside_problem(lr, ("patches", i), "patch", patch)
        if outside is not None:
            problems.append(outside)
        elif not (lr.dir / patch).is_file():
            problems.append(lr.problem(("patches", i), f"patch {patch!r} not found beside the "
                                       "recipe", f"expected {lr.dir / patch}"))
    for i, path in enumerate(r.backup):
        parts = path.split("/")
        if path.startswith("/") or ".." in parts or not path.strip("/"):
            problems.append(lr.problem(("backup", i), f"backup path {path!r} must be relative "
                                       "to the package root, without '..'",
                                       "e.g. backup: [etc/foo.conf]"))
    return problems


def inside_recipe_dir(folder: Path, rel: str) -> Path | None:
    """`folder/rel` with every symlink resolved, or None if that lands outside `folder`.

    Recipe-side paths (`file:`, `patches:`) name files beside the recipe; a
    symlink there to /etc/shadow, `../../x.patch` or an absolute path would
    copy a host file into the build.
    """
    base = folder.resolve()
    target = (folder / rel).resolve()
    return target if target.is_relative_to(base) else None


def outside_problem(lr: LoadedRecipe, loc: tuple[str | int, ...], what: str,
                    rel: str) -> Problem | None:
    """A problem if the recipe-side path `rel` resolves outside the recipe folder."""
    if inside_recipe_dir(lr.dir, rel) is not None:
        return None
    where = (lr.dir / rel).resolve()
    return lr.problem(loc, f"{what} {rel!r} is outside the recipe folder (it resolves to "
                      f"{where})", "keep the file itself beside the recipe, not a link "
                      "or a path out of its folder")


def _git_checks(lr: LoadedRecipe, i: int, src: Source) -> tuple[Source, list[Problem]]:
    """A git source is pinned by its commit; expands {version} in its tag."""
    r = lr.recipe
    problems = []
    if src.commit is None and src.unverified is None:
        problems.append(lr.problem(
            ("sources", i),
            "a git source needs commit: (40 hex digits); a tag or branch alone is not a pin",
            f"run `iglubuild checksum {r.name}` to write the commit of its tag"))
    tag = src.tag
    if tag is not None:
        try:
            tag = _expand(tag, r)
        except (KeyError, IndexError, ValueError) as exc:
            problems.append(lr.problem(
                ("sources", i, "tag"), f"cannot expand tag {src.tag!r}: unknown field {exc}",
                "known fields: " + ", ".join("{" + f + "}" for f in URL_FIELDS)))
            tag = src.tag
    out = src.model_copy(update={"tag": tag})
    out._archive_prefix = f"{r.name}-{r.version}"
    return out, problems


def _content_checks(lr: LoadedRecipe) -> tuple[Recipe, list[Problem]]:
    """Checks that depend on the file's content only; expands source URLs."""
    r = lr.recipe
    problems = []
    sources = []
    for i, src in enumerate(r.sources):
        if src.git is not None:
            src, git_problems = _git_checks(lr, i, src)
            problems.extend(git_problems)
            sources.append(src)
            continue
        if src.url is None:
            sources.append(src)
            continue
        try:
            url = _expand(src.url, r)
        except (KeyError, IndexError, ValueError) as exc:
            problems.append(lr.problem(
                ("sources", i, "url"),
                f"cannot expand URL {src.url!r}: unknown field {exc}",
                "known fields: " + ", ".join("{" + f + "}" for f in URL_FIELDS)
                + "; write {{ and }} for literal braces"))
            sources.append(src)
            continue
        sources.append(src.model_copy(update={"url": url}))
    for i, dep in enumerate(r.deps):
        if dep == r.name:
            problems.append(lr.problem(("deps", i), f"{r.name} depends on itself",
                                       "remove it from deps"))
    for i, dep in enumerate(r.makedeps):
        if dep == r.name:
            problems.append(lr.problem(("makedeps", i), f"{r.name} depends on itself",
                                       "remove it from makedeps"))
    return r.model_copy(update={"sources": sources}), problems


def parse_recipe_text(path: Path, text: str) -> tuple[Recipe | None, list[Problem]]:
    """Validate one recipe's text; returns the recipe (URLs expanded) or its problems."""
    data, problems = _parse(path, text)
    if problems:
        return None, problems
    if data is None:
        return None, [Problem(str(path), 1, 1, "empty recipe",
                              "a recipe needs at least name and version")]
    if not isinstance(data, dict):
        return None, [Problem(str(path), 1, 1,
                              f"a recipe must be a mapping of keys, got {_type_name(data)}",
                              "start with `name: ...` on the first line")]
    for key in data:
        if not isinstance(key, str):
            line, col = (1, 1)
            return None, [Problem(str(path), line, col, f"key {key!r} must be a string", None)]
    too_long = _long_values(data)
    if too_long:
        return None, [Problem(str(path), *locate(text, loc),
                              f"{'.'.join(map(str, loc))}: value longer than "
                              f"{MAX_VALUE_LENGTH} characters", "is this really a recipe?")
                      for loc in too_long]
    try:
        recipe = Recipe.model_validate(_normalise(_to_plain(data)))
    except ValidationError as exc:
        return None, _pydantic_problems(path, text, exc)
    lr = LoadedRecipe(recipe, path, text, "")
    recipe, problems = _content_checks(lr)
    return (None if problems else recipe), problems


def _long_values(data: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(data, str) and len(data) > MAX_VALUE_LENGTH:
        out.append(loc)
    elif isinstance(data, dict):
        for k, v in data.items():
            out.extend(_long_values(v, loc + (k,)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(_long_values(v, loc + (i,)))
    return out


# --- the tree ------------------------------------------------------------------

class _Cache:
    """Parsed recipes keyed by the sha256 of their text (validated content only)."""

    VERSION = 5  # 2: git sources; 3: size: and path checks; 4: left_out; 5: unreproducible

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, Recipe] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                with path.open("rb") as fh:
                    version, entries = pickle.load(fh)
                if version == self.VERSION:
                    self.entries = entries
            except Exception:  # noqa: BLE001 - a broken cache is simply rebuilt
                self.entries = {}

    def get(self, key: str) -> Recipe | None:
        return self.entries.get(key)

    def put(self, key: str, recipe: Recipe) -> None:
        self.entries[key] = recipe
        self.dirty = True

    def save(self, used: set[str]) -> None:
        if self.path is None or not (self.dirty or used != set(self.entries)):
            return
        keep = {k: v for k, v in self.entries.items() if k in used}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, pickle.dumps((self.VERSION, keep),
                                             protocol=pickle.HIGHEST_PROTOCOL))


def find_recipe_files(root: Path) -> list[Path]:
    """recipes/<repo>/<name>/recipe.yaml files, sorted."""
    if not root.is_dir():
        return []
    found = []
    for repo in sorted(os.scandir(root), key=lambda e: e.name):
        if not repo.is_dir() or repo.name.startswith("."):
            continue
        for pkg in sorted(os.scandir(repo.path), key=lambda e: e.name):
            candidate = Path(pkg.path) / RECIPE_FILE
            if pkg.is_dir() and candidate.is_file():
                found.append(candidate)
    return found


def load_tree(root: Path, cache_file: Path | None = None) -> RecipeTree:
    """Load and validate every recipe under `root`; raise RecipeError with all problems.

    `cache_file` (e.g. <build-dir>/cache/recipes.pickle) keeps parsed recipes
    keyed by content, so a second run only reads and hashes the files.
    """
    tree, problems = collect_tree(root, cache_file)
    if problems:
        raise RecipeError(problems)
    return tree


def collect_tree(root: Path, cache_file: Path | None = None) -> tuple[RecipeTree, list[Problem]]:
    """Every valid recipe under `root` and every problem found, without raising.

    `lint` uses this to go on to the graph checks (cycles) over the recipes
    that are valid, so one run reports every kind of problem.
    """
    from iglubuild.errors import UsageError

    if not root.is_dir():
        raise UsageError(f"recipe folder {root} does not exist",
                         hint="pass --recipes DIR or set IGLUBUILD_RECIPES")
    cache = _Cache(cache_file)
    tree = RecipeTree(root)
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    duplicates: list[LoadedRecipe] = []  # their deps are checked too
    used: set[str] = set()
    broken: set[str] = set()  # folders whose recipe failed: no "unknown dependency" noise
    broken_paths: list[Path] = []  # their deps are still checked, from the raw YAML
    for path in find_recipe_files(root):
        lr, file_problems, key = _load_one(path, cache)
        if key:
            used.add(key)
        problems.extend(file_problems)
        if lr is None:
            broken.add(path.parent.name)
            broken_paths.append(path)
            continue
        if lr.name in seen:
            line, col = lr.locate(("name",))
            problems.append(Problem(str(path), line, col,
                                    f"duplicate package name {lr.name!r}, also in {seen[lr.name]}",
                                    "package names must be unique across repos"))
            duplicates.append(lr)
            continue
        seen[lr.name] = path
        tree.recipes[lr.name] = lr
        for src in lr.recipe.sources:
            if src.unverified is not None:
                tree.unverified.append((lr.name, src.unverified))
    cache.save(used)
    problems.extend(_dependency_problems(tree, broken, duplicates))
    problems.extend(_raw_dependency_problems(tree, broken, broken_paths))
    return tree, problems


def _raw_dependency_problems(tree: RecipeTree, broken: set[str],
                             paths: list[Path]) -> list[Problem]:
    """Unknown deps of recipes that failed validation, read from their raw YAML,
    so fixing the schema error does not reveal a second layer of problems."""
    providers = set(tree.providers()) | broken
    problems = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            data = _fast_yaml().load(text)
        except Exception:  # noqa: BLE001 - unreadable or invalid YAML: already reported
            continue
        if not isinstance(data, dict):
            continue
        for field_name in ("deps", "makedeps"):
            deps = data.get(field_name)
            if not isinstance(deps, list):
                continue
            for i, dep in enumerate(deps):
                if isinstance(dep, str) and NAME_RE.match(dep) and dep not in providers:
                    line, col = locate(text, (field_name, i))
                    problems.append(Problem(str(path), line, col,
                                            f"unknown dependency {dep!r} in {field_name}",
                                            "add a recipe for it or remove the dependency"))
    return problems


def _load_one(path: Path, cache: _Cache) -> tuple[LoadedRecipe | None, list[Problem], str]:
    data = path.read_bytes()
    key = hashlib.sha256(data).hexdigest()
    text, problem = _decode(path, data)
    if problem is not None or text is None:
        return None, [problem] if problem else [], ""
    recipe = cache.get(key)
    if recipe is None:
        recipe, problems = parse_recipe_text(path, text)
        if recipe is None:
            return None, problems, ""
        cache.put(key, recipe)
    lr = LoadedRecipe(recipe, path, text, path.parent.parent.name)
    context = _context_checks(lr, path.parent.name)
    return (None if context else lr), context, key


def _dependency_problems(tree: RecipeTree, broken: set[str],
                         duplicates: Iterable[LoadedRecipe] = ()) -> list[Problem]:
    """Every dep and makedep names a known package or sub-package."""
    providers = tree.providers()
    providers.update({name: (name, None) for name in broken})
    problems = []
    for lr in [*tree, *duplicates]:
        for field_name in ("deps", "makedeps"):
            for i, dep in enumerate(getattr(lr.recipe, field_name)):
                if dep in providers:
                    continue
                close = difflib.get_close_matches(dep, list(providers), n=3, cutoff=0.6)
                hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close \
                    else "add a recipe for it or remove the dependency"
                problems.append(lr.problem((field_name, i),
                                           f"unknown dependency {dep!r} in {field_name}", hint))
    return problems


def load_recipe(path: Path) -> LoadedRecipe:
    """Load a single recipe file (no tree-wide checks); raise RecipeError on problems."""
    lr, problems, _ = _load_one(path, _Cache(None))
    if problems or lr is None:
        raise RecipeError(problems)
    return lr
