"""`iglubuild image`: pack the built packages into a bootable disk image."""

from __future__ import annotations

import argparse
from pathlib import Path

from iglubuild.settings import Settings

NAME = "image"
HELP = "pack the built packages into a bootable disk image (iglunix.img)"
# iglubuild.image.DEFAULT_IMAGE_SET (a test keeps them equal), for --help without
# loading the image stage at every start-up.
DEFAULT_IMAGE_SET = ("iglunix-base",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packages", nargs="+", metavar="NAME",
                        help="the image set; its run-time closure is installed "
                             f"(default: {' '.join(DEFAULT_IMAGE_SET)})")
    parser.add_argument("--kernel", type=Path, metavar="PATH",
                        help="kernel to boot (default: /boot/vmlinuz* of the linux package)")
    parser.add_argument("--size", metavar="SIZE",
                        help="image size such as 2G (default: contents plus a margin)")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="where to write the image (default: <build-dir>/iglunix.img)")
    parser.add_argument("--with-repo", action="store_true",
                        help="also put the xbps repository on the image "
                             "(/var/lib/iglunix/packages, named in /etc/xbps.d)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.image import MIB, build_image, parse_size

    size = parse_size(args.size) if args.size else None
    result, closure = build_image(settings, packages=args.packages, kernel=args.kernel,
                                  size=size, output=args.output, with_repo=args.with_repo)
    names = " ".join(a.name for a in closure)
    print(f"installed {len(closure)} packages: {names}")
    print(f"wrote {result.path} ({result.layout.total // MIB} MiB; "
          f"root partition {result.layout.root_size // MIB} MiB, PARTUUID {result.root_partuuid})")
    return 0
