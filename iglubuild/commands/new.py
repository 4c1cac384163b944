"""`iglubuild new NAME --url URL`: scaffold a recipe from a source tarball."""

from __future__ import annotations

import argparse

from iglubuild.settings import Settings

NAME = "new"
HELP = "scaffold a recipe from a tarball URL (version, checksum and build template guessed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="package name (the recipe folder)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="the source tarball (http(s):// or file://)")
    source.add_argument("--git", metavar="URL",
                        help="a git clone URL instead (with --tag): pinned by the tag's commit")
    parser.add_argument("--tag", help="with --git: the release tag (e.g. v1.2.3)")
    parser.add_argument("--repo", default="base", help="repository folder (default: base)")
    parser.add_argument("--version", dest="pkg_version", metavar="VERSION",
                        help="the version, when the file name does not tell")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the existing recipe of that name, in whichever repo it is")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.errors import UsageError
    from iglubuild.scaffold import existing_recipe, scaffold, write_new

    out_dir = settings.recipes / args.repo / args.name
    # Checked before downloading, so a typo costs no download. Names are
    # unique across repos: an existing recipe is overwritten in place or not at all.
    existing = existing_recipe(settings.recipes, args.name)
    if existing is not None:
        if not args.force:
            raise UsageError(f"a recipe named {args.name!r} already exists: {existing}",
                             hint="package names are unique across repos; pass --force to "
                             "overwrite it in place, or choose another name")
        out_dir = existing.parent
    if args.git:
        from iglubuild.gitscaffold import scaffold_git

        if not args.tag:
            raise UsageError("--git needs --tag", hint="e.g. --tag v1.2.3 (a release tag)")
        text, notes = scaffold_git(args.name, args.git, args.tag, repo=args.repo,
                                   settings=settings, version=args.pkg_version)
    else:
        text, notes = scaffold(args.name, args.url, repo=args.repo, recipes=settings.recipes,
                               settings=settings, version=args.pkg_version)
    target = write_new(text, out_dir, force=args.force)
    print(f"wrote {target}")
    for note in notes:
        print(f"  - {note}")
    return 0
