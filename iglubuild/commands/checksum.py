"""`iglubuild checksum NAME...`: download sources and write their checksums into recipe.yaml.

The file is edited with a ruamel round trip that keeps comments, key order,
quoting and indentation, so the only lines that change are the checksum lines
(and an `unverified:` mark, which goes once a checksum is written). Without
`--update` an existing checksum is only verified; with it a differing one is
replaced after old and new are shown. The downloaded file goes into the
distfiles cache, so the next `fetch` does not download it again.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import io
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iglubuild.atomic import write_atomic
from iglubuild.commands._common import say
from iglubuild.errors import FetchError, RecipeError, UsageError
from iglubuild.settings import Settings

if TYPE_CHECKING:  # the CLI imports every verb at start-up: load these only when run
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from iglubuild.fetch import Downloader
    from iglubuild.gitsource import GitFetcher
    from iglubuild.recipe import Recipe, Source

NAME = "checksum"
HELP = ("download sources and write their sha256 (git: the commit of their tag) into "
        "recipe.yaml (keeps comments)")

PENDING = "checksum pending"  # placeholder used only in memory, never written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME")
    parser.add_argument("--update", action="store_true",
                        help="replace checksums that differ (default: only verify them)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.offline:
        raise UsageError("checksum downloads the sources, so it cannot run with --offline",
                         hint="drop --offline, or add a file:// mirror holding the files")
    from iglubuild.fetch import Downloader, FetchFailed, FetchOptions
    from iglubuild.gitsource import GitFetcher

    paths = _recipe_paths(settings.recipes, args.names)
    downloader = Downloader(settings, FetchOptions(parallel=1))
    git = GitFetcher(settings, FetchOptions(parallel=1))
    problems: list[str] = []
    try:
        for path in paths:
            problems += checksum_recipe(path, settings, downloader, update=args.update, git=git)
    finally:
        downloader.close()
    if problems:
        hint = None
        if any("checksum mismatch" in p or "commit mismatch" in p for p in problems):
            hint = ("check why upstream changed; `iglubuild checksum --update "
                    + " ".join(args.names) + "` accepts the new files")
        raise FetchFailed(problems, hint)
    return 0


def _recipe_paths(root: Path, names: list[str]) -> list[Path]:
    from iglubuild.recipe import find_recipe_files

    by_name = {p.parent.name: p for p in find_recipe_files(root)}
    out = []
    for name in names:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6)
            hint = ("did you mean " + " or ".join(close) + "?") if close else \
                f"no recipes/<repo>/{name}/recipe.yaml under {root}"
            raise UsageError(f"unknown package {name!r}", hint=hint)
        out.append(by_name[name])
    return out


# -- YAML round trip ----------------------------------------------------------


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) indentation as ruamel names them, from the file itself.

    ruamel re-indents everything with one setting, so it must be the file's
    own: `- url:` under `sources:` may sit at column 0, 2 or 4.
    """
    mapping = sequence = offset = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^[A-Za-z_][\w-]*:\s*([|>][-+]?)?\s*(#.*)?$", line):
            continue
        nxt = next((x for x in lines[i + 1:] if x.strip() and not x.lstrip().startswith("#")),
                   "")
        indent = len(nxt) - len(nxt.lstrip(" "))
        body = nxt[indent:]
        if body.startswith("- ") or body == "-":
            if sequence is None:
                gap = len(body[1:]) - len(body[1:].lstrip(" "))
                sequence, offset = indent + 1 + gap, indent
        elif indent and mapping is None:
            mapping = indent
    return mapping or 2, sequence or 2, offset or 0


def _yaml(text: str) -> YAML:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long descriptions
    mapping, sequence, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _split_comment(token: Any) -> tuple[str | None, str]:
    """An end-of-line comment token -> (the comment on that line, the lines after it)."""
    value = token.value
    if value.startswith("#"):
        first, _, rest = value.partition("\n")
        return first, rest
    # No comment on the line itself: the first newline ends that line.
    return None, value[1:] if value.startswith("\n") else value


def _move_trailing(item: CommentedMap, from_key: str, to_key: str, *, keep_eol: bool) -> None:
    """Move the comment lines that follow `from_key` so they follow `to_key`.

    ruamel hangs the comment lines after a key (e.g. a comment above the next
    source) on that key; when a key is added after it or removed, those lines
    must move with the end of the mapping, not stay in the middle.
    """
    entry = item.ca.items.get(from_key)
    if not entry or len(entry) < 3 or entry[2] is None:
        return
    token = entry[2]
    eol, rest = _split_comment(token)
    moved = copy.copy(token)  # the comment lines get their own token
    if keep_eol and eol is not None:
        token.value = eol + "\n"
    else:
        item.ca.items.pop(from_key, None)
    if not rest:
        return
    target = item.ca.items.get(to_key)
    if target and len(target) >= 3 and target[2] is not None:
        target[2].value = target[2].value + rest
    else:
        moved.value = "\n" + rest
        item.ca.items[to_key] = [None, None, moved, None]


def _set_checksum(item: CommentedMap, algo: str, value: str) -> None:
    """Write `algo: value` into one source mapping; drops an `unverified:` mark."""
    keys = list(item)
    if algo in item:
        item[algo] = value
    elif "unverified" in item:
        item.insert(keys.index("unverified"), algo, value)
    else:
        # sha256 after url; commit after tag (or git): git, tag, commit.
        after = next((k for k in ("url", "tag", "git") if k in item), keys[-1])
        item.insert(keys.index(after) + 1, algo, value)
        if list(item)[-1] == algo:
            _move_trailing(item, after, algo, keep_eol=True)
    _drop_unverified(item)


def _drop_unverified(item: CommentedMap) -> None:
    if "unverified" not in item:
        return
    keys = list(item)
    last = keys[-1] == "unverified"
    if last and len(keys) > 1:
        _move_trailing(item, "unverified", keys[-2], keep_eol=False)
    else:
        item.ca.items.pop("unverified", None)
    del item["unverified"]


def _validated(path: Path, text: str) -> Recipe:
    """The recipe with URLs expanded, even if some remote sources lack a checksum yet."""
    from iglubuild.recipe import parse_recipe_text

    recipe, problems = parse_recipe_text(path, text)
    if recipe is not None:
        return recipe
    if problems and all("needs sha256 or sha512" in p.message
                        or "a git source needs commit" in p.message for p in problems):
        # Exactly what this command fixes: validate a copy in which those
        # sources are marked pending, so their URLs (and tags) can be expanded.
        yaml = _yaml(text)
        data = yaml.load(text)
        for item in data.get("sources") or []:
            if isinstance(item, dict) and "url" in item and not (
                    item.get("sha256") or item.get("sha512") or item.get("unverified")):
                item["unverified"] = PENDING
            if isinstance(item, dict) and "git" in item and not (
                    item.get("commit") or item.get("unverified")):
                item["unverified"] = PENDING
        recipe, _ = parse_recipe_text(path, _dump(yaml, data))
        if recipe is not None:
            return recipe
    raise RecipeError(problems)


# -- the command ----------------------------------------------------------------


def checksum_recipe(path: Path, settings: Settings, downloader: Downloader, *,
                    update: bool = False, git: GitFetcher | None = None) -> list[str]:
    """Download each remote source of one recipe and write/verify its checksum.

    A git source gets the commit its `tag` points to (see `_git_commit`).
    Returns the problems (download failures, mismatches without `update`);
    the recipe file is rewritten only if a checksum was added or replaced.
    """
    from iglubuild.fetch import source_name, store
    from iglubuild.gitsource import GitFetcher
    from iglubuild.recipe import parse_recipe_text

    text = path.read_text(encoding="utf-8")
    recipe = _validated(path, text)
    yaml = _yaml(text)
    data = yaml.load(text)
    items = data.get("sources") or []
    problems: list[str] = []
    changed = False
    for index, source in enumerate(recipe.sources):
        if source.git is not None:
            git = git or GitFetcher(settings)
            found, wrote = _git_commit(recipe.name, source, items[index], git, update=update)
            problems += found
            changed = changed or wrote
            continue
        if source.url is None:
            continue
        item = items[index]
        # Verify every sum the source gives; a source without one gets a sha256.
        algos = [a for a in ("sha256", "sha512") if getattr(source, a)] or ["sha256"]
        name = source_name(source)
        try:
            got = downloader.download_unverified(recipe.name, source, algos)
        except FetchError as exc:
            problems.append(f"{recipe.name}: {name}: {exc.message}")
            continue
        writes: dict[str, str] = {}
        refused = False
        for algo in algos:
            old, new = item.get(algo), got.sums[algo]
            if old is None:
                say(f"{recipe.name}: {name}: {algo} {new} (from {got.url})")
                writes[algo] = new
            elif str(old) == new:
                say(f"{recipe.name}: {name}: {algo} verified (from {got.url})")
            elif update:
                say(f"{recipe.name}: {name}: {algo} changed (from {got.url})\n"
                    f"  old {old}\n  new {new}")
                writes[algo] = new
            else:
                problems.append(f"{recipe.name}: {name}: checksum mismatch: the recipe has "
                                f"{algo} {old}, {got.url} has {new}")
                refused = True
        if refused:
            got.path.unlink()
            continue
        for algo, new in writes.items():
            _set_checksum(item, algo, new)
        if writes or "unverified" in item:
            _drop_unverified(item)
            changed = True
        store(got.path, got.sums, name, settings)
    if changed:
        new_text = _dump(yaml, data)
        # Never leave a recipe that no longer loads.
        recipe_after, after_problems = parse_recipe_text(path, new_text)
        if recipe_after is None:
            raise RecipeError(after_problems)
        write_atomic(path, new_text, stat.S_IMODE(path.stat().st_mode))
    return problems


def _git_commit(name: str, source: Source, item: CommentedMap, git: GitFetcher, *,
                update: bool) -> tuple[list[str], bool]:
    """Write or verify the `commit:` of a git source; returns (problems, changed).

    The commit is what `tag` points to upstream (else in a mirror's bundle or
    bare repository). It is written only once it was fetched and checked (fsck)
    into the distfiles cache, so the next `fetch` reuses it. Without a tag the
    given commit is only fetched and checked.
    """
    old = item.get("commit")
    label = f"{name}: {source.git}"
    if source.tag:
        try:
            new, where = git.resolve_tag(source)
        except FetchError as exc:
            return [f"{label}: {exc.message}"], False
        if old is not None and str(old) != new and not update:
            return [f"{label}: commit mismatch: the recipe has commit {old}, tag {source.tag} "
                    f"at {where} points to {new}"], False
    elif old is None:
        return [f"{label}: no commit and no tag: to find it from"], False
    else:
        new, where = str(old), ""
    pinned = source.model_copy(update={"commit": new, "unverified": None})
    pinned._archive_prefix = source.archive_prefix
    try:
        fetched, _ = git.fetch(pinned)
    except FetchError as exc:
        return [f"{label}: {exc.message}"], False
    origin = f" (tag {source.tag} from {where})" if where else ""
    if old is None:
        say(f"{label}: commit {new}{origin}")
    elif str(old) == new:
        say(f"{label}: commit verified{origin}")
    else:
        say(f"{label}: commit changed{origin}\n  old {old}\n  new {new}")
    if fetched:
        say(f"{label}: fetched from {fetched}")
    if old is not None and str(old) == new and "unverified" not in item:
        return [], False
    _set_checksum(item, "commit", new)
    return [], True
