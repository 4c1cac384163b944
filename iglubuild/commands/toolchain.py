"""`iglubuild toolchain ACTION`: make, inspect and export the build root.

Sub-actions are a table (name -> help, add_arguments, run) so another stage
can add one (e.g. `image` for the toolchain container image) by adding an
entry to ACTIONS without touching the dispatch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iglubuild.errors import UsageError
from iglubuild.settings import Settings
from iglubuild.settings import add_arguments as add_global_arguments

if TYPE_CHECKING:  # the build-root stage loads when an action runs, not at start-up
    from iglubuild import toolchain_root

NAME = "toolchain"
HELP = "build, inspect or export the build root (toolchain)"


@dataclass(frozen=True)
class Action:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Settings, argparse.Namespace], int]


def _manifest(settings: Settings, args: argparse.Namespace) -> toolchain_root.Manifest:
    from iglubuild import toolchain_root

    return toolchain_root.load_manifest(toolchain_root.manifest_path(settings, args.manifest))


def _no_args(parser: argparse.ArgumentParser) -> None:
    pass


def _build_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="make it again even if a root for this manifest exists")


def _build(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild import toolchain_root

    manifest = _manifest(settings, args)
    logs = settings.logs_dir
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "toolchain.log"
    start = time.monotonic()
    existing = None if args.force else toolchain_root.find_root(settings.build_dir, manifest)
    if existing is not None:
        print(f"build root {existing.id} is up to date: {existing.path}")
        return 0
    print(f"making the build root from {manifest.path} (log: {log_path})", flush=True)
    with open(log_path, "wb") as log_file:
        root, _made = toolchain_root.create(settings.build_dir, manifest, log_file,
                                            force=args.force)
    print(f"build root {root.id} made in {time.monotonic() - start:.0f} s: {root.path}")
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild import toolchain_root

    manifest = _manifest(settings, args)
    roots = toolchain_root.list_roots(settings.build_dir)
    if not roots:
        print(f"no build root in {toolchain_root.toolchain_dir(settings.build_dir)}"
              " (run: iglubuild toolchain build)")
        return 1
    current = False
    for root in roots:
        match = root.manifest_digest == manifest.digest
        current = current or match
        size = toolchain_root.size_bytes(root.path) / (1 << 20)
        state = "matches the manifest" if match else "does not match the manifest"
        print(f"{root.id}  {size:8.1f} MiB  {len(root.packages)} packages  {state}  {root.path}")
    if not current:
        print("no build root matches the manifest (run: iglubuild toolchain build)")
    return 0 if current else 1


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE",
                        help="tarball to write (.tar, .tar.gz, .tar.xz or .tar.zst)")


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild import toolchain_root

    root = toolchain_root.current_root(settings, args.manifest)
    dest = toolchain_root.export(root, args.file)
    print(f"build root {root.id} written to {dest}")
    return 0


def _path(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild import toolchain_root

    root = toolchain_root.current_root(settings, args.manifest)
    print(root.path)
    return 0


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="tarball", metavar="TARBALL", type=Path,
                        help="build root tarball (default: export the current build root)")
    parser.add_argument("--toolchain-id", metavar="ID",
                        help="tag to use (default: sha256 prefix of the tarball)")
    parser.add_argument("--save", metavar="FILE", type=Path,
                        help="also write the image to FILE for nodes without a registry")
    parser.add_argument("--load", metavar="FILE", type=Path,
                        help="load an image saved with --save instead of making one")
    parser.add_argument("--push", metavar="REGISTRY", help="push the image to REGISTRY")



def image_action(settings: Settings, args: argparse.Namespace) -> int:
    """`iglubuild toolchain image`: make (or load) the image, then save/push it."""
    # Imported here: the image needs the Docker SDK, the other actions do not.
    from iglubuild.toolchain_image import (
        LABEL_MANIFEST,
        ImageError,
        create_image,
        default_tarball,
        load_image,
        push_image,
        save_image,
    )

    if args.load is not None:
        if args.tarball is not None:
            raise UsageError("--load and --from exclude each other",
                             hint="--load FILE takes an image made elsewhere")
        tags = load_image(args.load)
        if not tags:
            raise ImageError(f"{args.load} holds no tagged image")
        ref = tags[0]
        print(f"loaded {', '.join(tags)}")
    else:
        tarball, root_id = (args.tarball, None) if args.tarball else default_tarball(settings)
        labels = {}
        if root_id is not None and not args.toolchain_id:
            # Made from the current build root: say which manifest it comes
            # from, for `--executor docker` on machines that only load the image.
            from iglubuild import toolchain_root

            labels[LABEL_MANIFEST] = toolchain_root.current_root(settings).manifest_digest
        made = create_image(tarball, args.toolchain_id or root_id, labels=labels)
        ref = made.ref
        print(f"{made.ref} ({made.image_id[:19]}): {made.compiler}")
    if args.save is not None:
        save_image(ref, args.save)
        print(f"saved {ref} to {args.save}")
    if args.push:
        print(f"pushed {push_image(ref, args.push)}")
    return 0


ACTIONS: dict[str, Action] = {
    "build": Action("make the build root with debootstrap (no-op when up to date)",
                    _build_args, _build),
    "status": Action("show the build roots, their size and whether they match the manifest",
                     _no_args, _status),
    "path": Action("print the folder of the build root matching the manifest (for scripts)",
                   _no_args, _path),
    "export": Action("write the build root as a tarball (for the Docker image)",
                     _export_args, _export),
    "image": Action("import the build root into Docker as the toolchain image "
                    "(distcc farm, --executor docker)",
                    add_image_arguments, image_action),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, default=None, metavar="FILE",
                        help="build root manifest (toolchain/buildroot.toml)")
    sub = parser.add_subparsers(dest="toolchain_action", metavar="ACTION",
                                parser_class=type(parser))
    for name, action in ACTIONS.items():
        p = sub.add_parser(name, help=action.help, description=action.help)
        add_global_arguments(p)  # global options may also follow the action
        action.add_arguments(p)


def run(settings: Settings, args: argparse.Namespace) -> int:
    name = getattr(args, "toolchain_action", None)
    if name is None:
        raise UsageError("toolchain needs an action",
                         hint="one of: " + ", ".join(ACTIONS))
    sys.stdout.flush()
    return ACTIONS[name].run(settings, args)
