"""`iglubuild new NAME --git URL --tag TAG`: scaffold a recipe from a git tag.

The tag is resolved to its commit and the commit fetched into the distfiles
cache exactly as `iglubuild checksum` does (iglubuild.gitsource), and the
archive of that commit is handed to the tarball scaffolder
(iglubuild.scaffold) for the version, the template and the rest; only the
source entry differs: `git`, `tag` (with `{version}` where the version
appears in it) and `commit`.
"""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from iglubuild.errors import UsageError
from iglubuild.recipe import VERSION_RE, Source
from iglubuild.settings import Settings


def version_from_tag(name: str, tag: str) -> str | None:
    """v1.2.3, 1.2.3, name-1.2.3, release-1.2 -> the version (None if it has none)."""
    stem = tag
    for prefix in (f"{name}-", f"{name}_"):
        if stem.lower().startswith(prefix.lower()):
            stem = stem[len(prefix):]
    stem = re.sub(r"^(v|version-|release-)(?=\d)", "", stem, flags=re.IGNORECASE)
    return stem if re.search(r"\d", stem) and VERSION_RE.match(stem) else None


def scaffold_git(name: str, git: str, tag: str, *, repo: str, settings: Settings,
                 version: str | None = None) -> tuple[str, list[str]]:
    """Resolve `tag`, fetch its commit, return (recipe text, notes)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from iglubuild.gitsource import GitFetcher
    from iglubuild.scaffold import scaffold

    guessed = version or version_from_tag(name, tag)
    if not guessed:
        raise UsageError(f"cannot guess the version from the tag {tag!r}",
                         hint="pass --version VERSION")
    tag_field = tag.replace(guessed, "{version}") if guessed in tag else tag
    try:
        source = Source(git=git, tag=tag)
    except ValidationError as exc:
        why = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"invalid git URL {git!r}", hint=why) from None
    source._archive_prefix = f"{name}-{guessed}"
    fetcher = GitFetcher(settings)
    commit, where = fetcher.resolve_tag(source)
    pinned = source.model_copy(update={"commit": commit})
    pinned._archive_prefix = source.archive_prefix
    _, archive = fetcher.fetch(pinned)
    with tempfile.TemporaryDirectory(prefix=".new-", dir=settings.distfiles_dir) as scratch:
        # The archive's own name says nothing of the version: give it.
        # A scratch cache: git sources are kept by commit, not as a tarball.
        text, notes = scaffold(name, archive.as_uri(), repo=repo, recipes=settings.recipes,
                               settings=replace(settings, distfiles=Path(scratch)),
                               version=guessed)
    # Notes about the archive's file:// URL mean nothing for a git source.
    notes = [n.replace("the tarball", "the tree") for n in notes
             if archive.name not in n and "URL" not in n and "url" not in n]
    how = "given" if version else f"guessed from the tag {tag}"
    notes = [f"version {guessed} {how}" if n.startswith("version ") else n for n in notes]
    notes.append(f"tag {tag} is commit {commit} (from {where})")
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(text)
    doc.yaml_add_eol_comment(f"version {how}", "version")
    src = CommentedMap()
    src["git"] = git
    src["tag"] = tag_field
    src["commit"] = commit
    src.yaml_add_eol_comment(f"tag {tag} at {where}", "commit")
    doc["sources"] = CommentedSeq([src])
    doc.ca.comment = None  # the tarball scaffolder's header names a file:// URL
    doc.yaml_set_start_comment(
        f"Scaffolded by `iglubuild new {name} --git {git} --tag {tag}`.\n"
        "Source: pinned by commit (the commit the tag pointed to when this was written;\n"
        "`fetch` checks that the tag still does).")
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue(), notes
