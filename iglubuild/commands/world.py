"""`iglubuild world`: build every recipe, in order, in parallel where possible."""

from __future__ import annotations

import argparse
from pathlib import Path

from iglubuild.commands._common import say
from iglubuild.commands._pkg_world import add_build_arguments, build
from iglubuild.errors import BuildError
from iglubuild.settings import Settings

NAME = "world"
HELP = "build every recipe, in dependency order, in parallel where possible"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_build_arguments(parser)
    group = parser.add_argument_group("image and boot check after the build")
    group.add_argument("--image", action="store_true",
                       help="pack <build-dir>/iglunix.img from the built packages")
    group.add_argument("--boot", action="store_true",
                       help="boot the image in QEMU and wait for the marker (implies --image)")
    group.add_argument("--packages", nargs="+", metavar="NAME", dest="image_packages",
                       help="the image set (default: iglunix-base); its run-time closure "
                            "is installed")
    group.add_argument("--with-repo", action="store_true",
                       help="put the xbps repository on the image, so that `iglu add NAME` "
                            "inside installs more from it (as image --with-repo)")
    group.add_argument("--kernel", type=Path, metavar="PATH",
                       help="kernel for the image when no linux package is built")
    group.add_argument("--run", metavar="CMD", dest="command",
                       help="with --boot: a shell command to run inside the booted system")
    group.add_argument("--firmware", choices=("uefi", "direct"), default="uefi",
                       help="with --boot: boot through UEFI (default) or pass the kernel directly")


def run(settings: Settings, args: argparse.Namespace) -> int:
    code = build(settings, args, None)
    if args.dry_run or not (args.image or args.boot):
        return code
    if code != 0:
        say("no image: the build had failures (see above)")
        return code
    from iglubuild.boot import boot
    from iglubuild.image import MIB, build_image

    result, closure = build_image(settings, packages=args.image_packages, kernel=args.kernel,
                                  with_repo=args.with_repo)
    say(f"image: {result.path} ({result.layout.total // MIB} MiB, "
        f"{len(closure)} packages: {' '.join(a.name for a in closure)})")
    if args.boot:
        log = settings.logs_dir / "boot.log"
        booted = boot(result.path, log, firmware=args.firmware, timeout=180.0,
                      command=args.command)
        if booted.output is not None:
            print(booted.output)
        if booted.status:
            raise BuildError(f"the command exited with status {booted.status} inside the image",
                             hint=f"console log: {log}")
        say(f"booted ({booted.firmware}, {booted.accel}) in {booted.seconds_to_marker:.1f} s; "
            f"console log {log}")
    return code
