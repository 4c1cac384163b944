"""Boot iglunix.img in QEMU and prove it works: the boot smoke test.

QEMU gets the image as an NVMe disk (a throw-away snapshot, so the image file
is never changed) and its first serial port on a Unix socket that we read.
Two ways in:

* `uefi`: OVMF firmware (a private copy of OVMF_VARS per boot) starts the
  image's own systemd-boot, which boots the entry on the ESP. This tests
  everything `iglubuild image` wrote.
* `direct`: QEMU loads the kernel itself (-kernel/-append), with the kernel and
  command line read back from the image's ESP. Faster, and the command to run
  can ride on the kernel command line.

Two inits are understood. An Iglunix image runs busybox init with Iglunix's
/etc/inittab: after its sysinit script it asks on the serial console to
"press Enter to activate" (BUSYBOX_PROMPT, the boot marker then); Enter is
typed, then the command, then `poweroff`, which busybox init carries out
through Iglunix's shutdown script. The small C init of the quick boot tests
(tests/fixtures/boot-base/init.c) prints BOOT_MARKER and runs the command
from `iglubuild.run="..."` (or `iglubuild.runhex=` when it has double quotes)
on the kernel command line (direct) or takes it typed once it reports its
shell ready (uefi), powering off when the shell exits. Either way the
command's output is framed by RUN_BEGIN / RUN_END lines so it can be told
apart from terminal echo. The kernel prints on the same console: a typed
command first turns the console's log level down to emergencies (the
messages stay in dmesg), and whole kernel lines inside the frame are left
out of the output, for inits that run the command themselves. QEMU is killed
by PID on every way out. The whole console goes to <build-dir>/logs/boot.log.
"""

from __future__ import annotations

import functools
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from iglubuild.errors import BuildError, UsageError
from iglubuild.image import ENTRY_PATH, ESP_TYPE, KERNEL_NAME, ROOT_TYPE, SECTOR
from iglubuild.run import base_env, require_tool, run, spawn

# What busybox init prints for an `askfirst` console (Iglunix's inittab has one on ttyS0).
BUSYBOX_PROMPT = "Please press Enter to activate this console."
# Must match tests/fixtures/boot-base/init.c (a test checks they agree).
BOOT_MARKER = "IGLUNIX BOOT OK"
SHELL_MARKER = "IGLUNIX SHELL READY"
RUN_BEGIN = "IGLUNIX-RUN-BEGIN"
RUN_END = "IGLUNIX-RUN-END"
RUN_PARAM = "iglubuild.run"
RUN_HEX_PARAM = "iglubuild.runhex"
CMDLINE_MAX = 2048  # COMMAND_LINE_SIZE on x86
FIRMWARES = ("uefi", "direct")
ACCELS = ("auto", "kvm", "tcg")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
TAIL_LINES = 40
_END_RE = re.compile(re.escape(RUN_END) + r" status=(-?\d+)")
# A kernel message on the console: "[    2.546251] tsc: Refined TSC ...".
_KERNEL_LINE_RE = re.compile(r"^\[\s*\d+\.\d+\] ")
# Typed before the command: only KERN_EMERG reaches the console while it runs.
_QUIET_KERNEL = "{ echo 1 >/proc/sys/kernel/printk; } 2>/dev/null; "


class BootTimeout(BuildError):
    """The guest did not get where it should within the time limit."""

    def __init__(self, message: str, tail: list[str], log: Path) -> None:
        super().__init__(message, hint=f"full console log: {log}")
        self.tail = tail

    def lines(self) -> list[str]:
        return [self.message, f"last {len(self.tail)} console lines:"] + [
            f"  | {line}" for line in self.tail]


@dataclass
class BootResult:
    """What a boot showed: when the marker came, and the command's output."""

    firmware: str
    accel: str
    seconds_to_marker: float
    output: str | None = None
    status: int | None = None
    console: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Partitions:
    """Byte offsets of the ESP and the root partition in an image."""

    esp_offset: int
    root_offset: int


def read_partitions(image: Path) -> Partitions:
    """Find the ESP and root partition from the image's GPT (sfdisk --json)."""
    require_tool("sfdisk", "fdisk")
    try:
        proc = run(["sfdisk", "--json", image], capture=True)
        parts = json.loads(proc.stdout)["partitiontable"]["partitions"]
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{image}: no partition table", hint="make it with iglubuild image"
                         ) from exc
    except BuildError as exc:
        raise UsageError(f"{image}: not a disk image ({exc.message})",
                         hint="make it with iglubuild image") from exc
    esp = [p for p in parts if p.get("type", "").upper() == ESP_TYPE]
    root = [p for p in parts if p.get("type", "").upper() == ROOT_TYPE]
    if not esp or not root:
        raise UsageError(f"{image}: no EFI system partition or no root partition",
                         hint="make it with iglubuild image")
    return Partitions(esp[0]["start"] * SECTOR, root[0]["start"] * SECTOR)


def read_esp_file(image: Path, parts: Partitions, name: str, dest: Path) -> Path:
    """Copy one file out of the image's ESP with mtools (no mount)."""
    require_tool("mcopy", "mtools")
    run(["mcopy", "-n", "-i", f"{image}@@{parts.esp_offset}", f"::/{name}", dest],
        env=base_env({"MTOOLS_SKIP_CHECK": "1"}), capture=True)
    return dest


def direct_boot_files(image: Path, work: Path) -> tuple[Path, str]:
    """The kernel and its command line, as the image's loader entry gives them."""
    parts = read_partitions(image)
    entry = read_esp_file(image, parts, ENTRY_PATH, work / "entry.conf").read_text()
    options = " ".join(line.split(None, 1)[1] for line in entry.splitlines()
                       if line.startswith("options ") and len(line.split(None, 1)) == 2)
    linux = next((line.split(None, 1)[1].strip().lstrip("/") for line in entry.splitlines()
                  if line.startswith("linux ")), KERNEL_NAME)
    return read_esp_file(image, parts, linux, work / "vmlinuz"), options


def pick_accel(accel: str = "auto") -> str:
    """KVM when /dev/kvm exists and really runs guest code quickly, else TCG."""
    if accel not in ACCELS:
        raise UsageError(f"unknown accelerator {accel!r}", hint="auto, kvm or tcg")
    if accel != "auto":
        return accel
    return "kvm" if kvm_works() else "tcg"


@functools.cache
def kvm_works(limit: float = 3.0) -> bool:
    """Probe KVM with a 512-byte boot sector that exits QEMU through isa-debug-exit.

    /dev/kvm can exist and still be useless: in some nested setups QEMU aborts
    setting an MSR with -cpu host, or guests crawl. A healthy host finishes
    the probe in a fraction of a second.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    # mov al,0x10; out 0xf4,al (isa-debug-exit: QEMU exits with (0x10<<1)|1 = 33); hlt
    code = bytes([0xB0, 0x10, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])
    with tempfile.TemporaryDirectory(prefix="iglubuild-kvm.") as tmp:
        sector = Path(tmp) / "probe.img"
        sector.write_bytes(code + bytes(510 - len(code)) + b"\x55\xaa")
        try:
            proc = run(["qemu-system-x86_64", "-machine", "pc,accel=kvm", "-cpu", "host",
                        "-nodefaults", "-display", "none", "-no-reboot",
                        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                        "-drive", f"file={sector},format=raw,if=ide"],
                       check=False, capture=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 33


def qemu_argv(image: Path, firmware: str, accel: str, serial_socket: Path, work: Path,
              kernel: Path | None = None, cmdline: str = "", memory_mb: int = 512
              ) -> list[str]:
    """The QEMU command line: NVMe disk (snapshot), serial on a socket, no display."""
    argv = [
        "qemu-system-x86_64", "-machine", f"q35,accel={accel}",
        "-cpu", "host" if accel == "kvm" else "max", "-m", str(memory_mb), "-smp", "1",
        "-nodefaults", "-display", "none", "-no-reboot",
        # wait=on: QEMU holds the guest until we are connected, so no output is lost.
        "-chardev", f"socket,id=ser0,path={serial_socket},server=on,wait=on",
        "-serial", "chardev:ser0",
        "-drive", f"if=none,id=disk0,file={image},format=raw,snapshot=on",
        "-device", "nvme,drive=disk0,serial=iglunix0",
    ]
    if firmware == "uefi":
        for path in (OVMF_CODE, OVMF_VARS):
            if not path.is_file():
                raise UsageError(f"{path} is missing (UEFI firmware)", hint="apt-get install ovmf")
        vars_copy = work / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    elif firmware == "direct":
        if kernel is None:
            raise UsageError("direct boot needs a kernel")
        argv += ["-kernel", str(kernel), "-append", cmdline]
    else:
        raise UsageError(f"unknown firmware {firmware!r}", hint="uefi or direct")
    return argv


class _Console:
    """Lines from the serial socket, copied to the log, with a tail for errors."""

    def __init__(self, sock: socket.socket, log: IO[bytes]) -> None:
        self.sock = sock
        self.log = log
        self.partial = b""
        self.lines: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.closed = False

    def read(self, timeout: float) -> list[str]:
        """New complete lines within `timeout` seconds ([] if none, or closed)."""
        if self.closed:
            time.sleep(min(timeout, 0.1))
            return []
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return []
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            data = b"\n" if self.partial else b""
        self.log.write(data)
        self.log.flush()
        self.partial += data
        *done, self.partial = self.partial.split(b"\n")
        new = [d.decode("utf-8", "replace").rstrip("\r") for d in done]
        self.lines += new
        self.tail.extend(new)
        return new

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())


def _connect(path: Path, proc: subprocess.Popen[bytes], deadline: float) -> socket.socket:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                return s
            except OSError:
                s.close()
        time.sleep(0.05)
    raise BuildError("QEMU did not open its serial console",
                     hint="run with --debug to see the QEMU command line")


def _await_exit(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Give QEMU up to `grace` s to power off by itself; `run.spawn` stops it otherwise."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def command_param(command: str) -> str:
    """The kernel parameter carrying `command` to init: readable when it can be.

    The kernel's parser knows double quotes but no escapes, so a command with
    a double quote travels hex-encoded instead.
    """
    if '"' in command:
        return f"{RUN_HEX_PARAM}={command.encode().hex()}"
    return f'{RUN_PARAM}="{command}"'


def _typed_command(cmd: str, then: str = "exit") -> str:
    """One line for the console's shell that frames `cmd`'s output with the markers.

    The markers are split by quotes so the terminal's echo of this line (and
    the line editor redrawing it) does not look like the markers themselves.
    One line, because a shell redraws a second typed line in the middle of the
    output; `eval` keeps a trailing comment in `cmd` from eating the end marker.
    The kernel's console messages are turned down first: printk writes straight
    to the serial line and can land in the middle of a line of the output.
    """
    b1, b2 = RUN_BEGIN[:-3], RUN_BEGIN[-3:]
    e1, e2 = RUN_END[:-3], RUN_END[-3:]
    quoted = "'" + cmd.replace("'", "'\\''") + "'"
    return (f'{_QUIET_KERNEL}echo "{b1}""{b2}"; eval {quoted}; '
            f'echo "{e1}""{e2} status=$?"; {then}\r')


def boot(image: Path, log_path: Path, firmware: str = "uefi", timeout: float = 120,
         command: str | None = None, accel: str = "auto", memory_mb: int = 512) -> BootResult:
    """Boot `image`, wait for the marker, optionally run `command`, power off.

    Raises BootTimeout (with the last console lines) when the marker, the
    command's end or the power-off does not come within `timeout` seconds.
    """
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    image = image.absolute()
    if not image.is_file():
        raise UsageError(f"image {image} does not exist", hint="make it with iglubuild image")
    if firmware not in FIRMWARES:
        raise UsageError(f"unknown firmware {firmware!r}", hint="uefi or direct")
    if command is not None and ("\n" in command or "\r" in command):
        raise UsageError("--run takes a one-line command", hint="join commands with ';'")
    accel = pick_accel(accel)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iglubuild-boot.") as tmp:
        work = Path(tmp)
        kernel, cmdline = None, ""
        if firmware == "direct":
            kernel, cmdline = direct_boot_files(image, work)
            if command is not None:
                cmdline += " " + command_param(command)
                if len(cmdline) >= CMDLINE_MAX:
                    raise UsageError("--run command too long for the kernel command line",
                                     hint="use --firmware uefi, which types it on the console")
        sock_path = work / "serial.sock"
        argv = qemu_argv(image, firmware, accel, sock_path, work, kernel, cmdline, memory_mb)
        with open(log_path, "wb") as log, open(work / "qemu.err", "wb") as qerr:
            start = time.monotonic()
            with spawn(argv, env=base_env(), stdout=qerr, stderr=subprocess.STDOUT,
                       grace=5.0) as proc:
                sock = _connect(sock_path, proc, start + 30)
                with sock:
                    try:
                        result = _converse(_Console(sock, log), proc, firmware, accel,
                                           command, start, timeout, log_path)
                    except BootTimeout as exc:
                        if proc.poll() and not exc.tail:
                            err = (work / "qemu.err").read_text(errors="replace").strip()
                            raise BuildError(f"QEMU failed: {err[-500:]}") from exc
                        raise
                _await_exit(proc, grace=max(5.0, timeout - (time.monotonic() - start)))
    return result


def _converse(con: _Console, proc: subprocess.Popen[bytes], firmware: str, accel: str,
              command: str | None, start: float, timeout: float, log: Path) -> BootResult:
    """Follow the console: marker, shell or command, end of command, power-off."""
    deadline = start + timeout
    result: BootResult | None = None
    output: list[str] | None = None
    waiting = "boot marker"
    while True:
        now = time.monotonic()
        if now > deadline:
            raise BootTimeout(f"no {waiting} within {timeout:g} s", list(con.tail), log)
        lines = con.read(min(1.0, deadline - now))
        for line in lines:
            if result is None:
                if BOOT_MARKER in line:
                    result = BootResult(firmware, accel, time.monotonic() - start)
                    waiting = "shell" if command is None or firmware == "uefi" else "command"
                elif BUSYBOX_PROMPT in line:
                    # busybox init: Enter starts the shell, which reads what follows.
                    result = BootResult(firmware, accel, time.monotonic() - start)
                    con.send("\r" + (_typed_command(command, then="poweroff")
                                     if command is not None else "poweroff\r"))
                    waiting = "command output" if command is not None else "power-off"
                continue
            if SHELL_MARKER in line and waiting == "shell":
                con.send(_typed_command(command) if command is not None else "exit\r")
                waiting = "command output" if command is not None else "power-off"
            elif line.strip() == RUN_BEGIN and output is None:
                output = []
            elif (m := _END_RE.search(line)) and output is not None:
                result.output = "\n".join(output)
                result.status = int(m[1])
                waiting = "power-off"
            elif output is not None and result.status is None:
                if not _KERNEL_LINE_RE.match(line):
                    output.append(line)
        if result is not None:
            result.console = con.lines
        if proc.poll() is not None and not lines:
            if result is not None and waiting == "power-off":
                return result
            raise BootTimeout(f"QEMU exited (status {proc.returncode}) before the {waiting}",
                              list(con.tail), log)
