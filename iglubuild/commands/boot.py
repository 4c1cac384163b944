"""`iglubuild boot`: boot the image in QEMU and check that it comes up."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iglubuild.errors import BuildError
from iglubuild.settings import Settings

NAME = "boot"
HELP = "boot the image in QEMU, wait for init's marker, optionally run a command inside"
# iglubuild.boot's FIRMWARES and ACCELS (a test keeps them equal): spelled out here so
# that building the parser, which every command does, does not load the boot stage.
FIRMWARES = ("uefi", "direct")
ACCELS = ("auto", "kvm", "tcg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="?", type=Path, metavar="IMAGE",
                        help="disk image (default: <build-dir>/iglunix.img)")
    parser.add_argument("--firmware", choices=FIRMWARES, default="uefi",
                        help="uefi: OVMF and the image's own boot loader (default); "
                             "direct: QEMU loads the image's kernel itself")
    parser.add_argument("--timeout", type=float, default=180.0, metavar="S",
                        help="seconds to wait for the boot and the command (default 180)")
    parser.add_argument("--run", metavar="CMD", dest="command",
                        help="shell command to run inside; its output is printed")
    parser.add_argument("--accel", choices=ACCELS, default="auto",
                        help="kvm when /dev/kvm is usable, else tcg (default auto)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.boot import boot

    image = args.image or settings.image_path
    log = settings.logs_dir / "boot.log"
    result = boot(image, log, firmware=args.firmware, timeout=args.timeout,
                  command=args.command, accel=args.accel)
    print(f"booted {image} ({result.firmware}, {result.accel}): marker after "
          f"{result.seconds_to_marker:.1f} s; console log {log}", file=sys.stderr)
    if result.output is not None:
        print(result.output)
    if result.status:
        raise BuildError(f"the command exited with status {result.status} inside the image",
                         hint=f"console log: {log}")
    return 0
