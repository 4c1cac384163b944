"""Pack iglunix.img: built artifacts -> a root tree -> a bootable GPT disk image.

The last stage of the data flow. It takes the runtime closure of the image set
(by default the meta-package `iglunix-base`) from `<build-dir>/packages/<arch>/`,
installs it into a scratch root tree, records the installed-package database,
and writes a disk image without loop devices or mounts:

* a GPT partition table written by `sfdisk` on the image file;
* an EFI system partition made with `mformat` and filled with `mcopy` (mtools
  address a partition inside a file as `IMAGE@@OFFSET`): systemd-boot as the
  removable-media loader `EFI/BOOT/BOOTX64.EFI`, its loader entry, the kernel;
* an ext4 root partition labelled IGLUNIX, made and filled in one go by
  `mke2fs -d ROOT -E offset=BYTES` straight into the image file.

Ownership: `mke2fs -d` copies owners from the tree. Run as root, the tree
already carries the owners from the artifacts' tar headers. Run as anyone
else, every extracted file belongs to the caller, so we remember the owner each
artifact asks for and, after `mke2fs`, rewrite the differing inodes with a
`debugfs -w` script (`set_inode_field PATH uid|gid N`); `-E root_owner=0:0`
covers the root directory itself. Either way the image holds 0:0 files (or
whatever owner the package asked for), whoever ran iglubuild.

The image is written under a temporary name and renamed, so a half-made image
is never visible.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from iglubuild import integrity
from iglubuild.atomic import write_atomic
from iglubuild.errors import BuildError, IglubuildError, UsageError
from iglubuild.package import (
    ARTIFACT_RE,
    PKGINFO,
    PackageError,
    RootTree,
    install_artifact,
    open_artifact,
    require_real_folder,
    resolve_in_root,
)
from iglubuild.run import base_env, require_tool, run
from iglubuild.settings import Settings

DEFAULT_IMAGE_SET = ("iglunix-base",)
ARCH = "x86_64"
SECTOR = 512
MIB = 1024 * 1024
BLOCK = 4096
ROOT_LABEL = "IGLUNIX"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# "Linux root (x86-64)" from the Discoverable Partitions Specification.
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
KERNEL_NAME = "vmlinuz"
ENTRY_PATH = "loader/entries/iglunix.conf"
DB_DIR = "usr/share/iglupkg"
DB_INDEX = "index.json"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


# ---------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifact:
    """One built package file, `<name>-<version>-r<release>.<arch>.tar.zst`."""

    name: str
    version: str
    release: int
    arch: str
    path: Path
    deps: tuple[str, ...] = ()

    @classmethod
    def from_path(cls, path: Path) -> Artifact:
        m = ARTIFACT_RE.match(path.name)
        if not m:
            raise UsageError(
                f"{path}: not an artifact name",
                hint="expected <name>-<version>-r<release>.<arch>.tar.zst",
            )
        return cls(m["name"], m["version"], int(m["release"]), m["arch"], path)


def _parse_metadata(text: str) -> dict[str, object]:
    """Metadata inside an artifact: JSON, or iglupkg's `key=value` file.

    iglupkg's file has sections; keys are read from `[pkg]` (or from the top
    when there are no sections), so license text and the `[fs]` path list
    are never taken for keys.
    """
    text = text.strip()
    if text.startswith("{"):
        data = json.loads(text)
        return data if isinstance(data, dict) else {}
    values: dict[str, object] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section not in ("", "pkg") or not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _dep_list(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        # iglupkg separates deps with colons; spaces and commas are accepted too.
        return tuple(v for v in re.split(r"[\s,:]+", value) if v)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise UsageError(f"bad deps in package metadata: {value!r}", hint="expected a list of names")


def _metadata_deps(meta: dict[str, object]) -> tuple[str, ...]:
    # `deps` is the only key anything writes: the engine's .PKGINFO and index,
    # and iglupkg's `[pkg]` section.
    return _dep_list(meta["deps"]) if "deps" in meta else ()


def read_metadata(artifact: Artifact) -> dict[str, object]:
    """An artifact's metadata: the engine's .PKGINFO (JSON, the first member), else
    the iglupkg file usr/share/iglupkg/<name> it also carries."""
    wanted = f"{DB_DIR}/{artifact.name}"
    with open_artifact(artifact.path) as tar:
        for member in tar:
            if member.isfile() and (member.name == PKGINFO or
                                    member.name.lstrip("./").rstrip("/") == wanted):
                f = tar.extractfile(member)
                return _parse_metadata(f.read().decode("utf-8")) if f else {}
    return {}


def find_artifacts(packages_dir: Path) -> dict[str, Artifact]:
    """Every artifact in `packages_dir` by package name (the newest file per name).

    A repository index (index.json) written by the build engine is used for
    dependencies when it lists them; otherwise each artifact's own metadata is
    read on demand by `runtime_closure`.
    """
    if not packages_dir.is_dir():
        raise UsageError(f"no built packages in {packages_dir}",
                         hint="build them first: iglubuild world (or iglubuild pkg NAME)")
    found: dict[str, Artifact] = {}
    for path in sorted(packages_dir.glob("*.tar.zst")):
        m = ARTIFACT_RE.match(path.name)
        if not m:
            continue
        art = Artifact.from_path(path)
        old = found.get(art.name)
        if old is None or path.stat().st_mtime >= old.path.stat().st_mtime:
            found[art.name] = art
    index = _read_index(packages_dir / "index.json")
    for name, entry in index.items():
        # The engine's index names the current file of each package: prefer it.
        listed = packages_dir / str(entry.get("file", ""))
        if entry.get("file") and listed.is_file() and ARTIFACT_RE.match(listed.name):
            found[name] = Artifact.from_path(listed)
        if name in found and "deps" in entry:
            art = found[name]
            found[name] = Artifact(art.name, art.version, art.release, art.arch, art.path,
                                   _metadata_deps(entry))
    return found


def _read_index(index: Path) -> dict[str, dict[str, object]]:
    """The engine's repository index: {"packages": {name: {file, deps, ...}}}."""
    if not index.is_file():
        return {}
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("packages", {}) if isinstance(data, dict) else {}
    if not isinstance(entries, dict):
        return {}
    return {str(k): v for k, v in entries.items() if isinstance(v, dict)}


def runtime_closure(names: Sequence[str], artifacts: dict[str, Artifact]) -> list[Artifact]:
    """`names` and everything they need at run time, dependencies first.

    Only run-time deps are followed (makedeps are not in package metadata);
    sub-packages such as curl-dev come in only when named or depended on.
    """
    order: list[Artifact] = []
    state: dict[str, str] = {}

    def visit(name: str, wanted_by: str | None) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            return  # a run-time cycle (e.g. libc <-> shell) is fine for installing
        art = artifacts.get(name)
        if art is None:
            why = f" (needed by {wanted_by})" if wanted_by else ""
            raise UsageError(f"package {name}{why} has no built artifact",
                             hint=f"build it first: iglubuild pkg {name}")
        state[name] = "active"
        deps = art.deps or _metadata_deps(read_metadata(art))
        for dep in sorted(deps):
            visit(dep, name)
        state[name] = "done"
        order.append(Artifact(art.name, art.version, art.release, art.arch, art.path,
                              tuple(deps)))

    for name in names:
        visit(name, None)
    return order


# ---------------------------------------------------------------- installing


def write_package_db(tree: RootTree, packages: Sequence[Artifact]) -> None:
    """The installed-package database: usr/share/iglupkg/<name> plus index.json.

    Artifacts normally carry their own usr/share/iglupkg/<name>; a package
    without one gets a small JSON file so every installed package is listed.
    The index adds what only the installer knows: the files each package owns.
    """
    db = resolve_in_root(tree.path, DB_DIR)
    db.mkdir(parents=True, exist_ok=True)
    index: dict[str, object] = {}
    for art in packages:
        meta = {"name": art.name, "version": art.version, "release": art.release,
                "arch": art.arch, "deps": list(art.deps)}
        own = db / art.name
        if not own.exists():
            own.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            tree.wanted_ids[f"{DB_DIR}/{art.name}"] = (0, 0)
        index[art.name] = dict(meta, files=sorted(tree.files.get(art.name, [])))
    write_atomic(db / DB_INDEX, json.dumps({"packages": index}, indent=1, sort_keys=True) + "\n")
    tree.wanted_ids[f"{DB_DIR}/{DB_INDEX}"] = (0, 0)
    write_xbps_db(tree, packages)


def write_xbps_db(tree: RootTree, packages: Sequence[Artifact]) -> None:
    """xbps's own database (var/db/xbps), so `xbps-query -l` in the image lists its packages.

    Each artifact's .xbps twin (written beside it by the same build) gives the
    entry; one built before iglubuild wrote .xbps files is left out.
    """
    from iglubuild.package import source_date_epoch
    from iglubuild.xbps import METADIR, PKGDB, write_pkgdb, xbps_filename

    twins = []
    for art in packages:
        twin = art.path.parent / xbps_filename(art.name, art.version, art.release, art.arch)
        if twin.is_file():
            twins.append(twin)
    if not twins:
        return
    metadir = resolve_in_root(tree.path, METADIR)
    write_pkgdb(metadir, twins, source_date_epoch())
    for p in metadir.iterdir():
        tree.wanted_ids[f"{METADIR}/{p.name}"] = (0, 0)
    tree.wanted_ids.setdefault(f"{METADIR}/{PKGDB}", (0, 0))


REPO_DIR = "var/lib/iglunix/packages"  # the repository an image carries (image --with-repo)
XBPS_CONF = "etc/xbps.d/00-iglunix.conf"


def add_repository(tree: RootTree, packages_dir: Path) -> int:
    """Put the xbps repository on the image and point xbps at it; returns the package count.

    The .xbps files, their signatures and the repodata go to /var/lib/iglunix/packages,
    and /etc/xbps.d/00-iglunix.conf names it, so `xbps-install NAME` in the booted
    system installs from it. A signed repository's public key is trusted in the image
    (only the public half: the private key is never read here).
    """
    from iglubuild.xbps import (
        XBPS_SUFFIX,
        parse_public_key,
        read_plist_member,
        repodata_name,
        trust_key,
    )

    repodata = packages_dir / repodata_name(ARCH)
    if not repodata.is_file():
        raise UsageError(f"no xbps repository in {packages_dir}",
                         hint="build the packages first: iglubuild world (or iglubuild pkg NAME)")
    dest = resolve_in_root(tree.path, REPO_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    # Only what the index lists (not older builds beside it), each checked
    # against the index's checksum: the guest's xbps would refuse it anyway,
    # but only after the image was made and booted.
    index = read_plist_member(repodata, "index.plist")
    packages = []
    for entry in index.values():
        pkg = packages_dir / f"{entry['pkgver']}.{entry['architecture']}{XBPS_SUFFIX}"
        if not integrity.verify(pkg, "sha256", str(entry.get("filename-sha256", ""))):
            raise PackageError(f"{pkg}: missing or changed since the repository was indexed",
                               hint="build it again: iglubuild pkg "
                                    f"{entry['pkgver'].rsplit('-', 1)[0]} --force")
        packages.append(pkg)
    signatures = [s for p in packages if (s := p.with_name(p.name + ".sig2")).is_file()]
    files = [repodata, *sorted(packages), *signatures]
    for f in files:
        shutil.copyfile(f, dest / f.name)
        os.chmod(dest / f.name, 0o644)
        tree.wanted_ids[f"{REPO_DIR}/{f.name}"] = (0, 0)
    conf = resolve_in_root(tree.path, XBPS_CONF)
    conf.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(conf, f"# The packages this image was built from (iglubuild image --with-repo).\n"
                       f"repository=/{REPO_DIR}\n")
    tree.wanted_ids[XBPS_CONF] = (0, 0)
    meta = read_plist_member(repodata, "index-meta.plist")
    if meta.get("public-key"):
        key = trust_key(tree.path, parse_public_key(meta["public-key"]),
                        str(meta.get("signature-by", "")))
        tree.wanted_ids[str(key.relative_to(tree.path))] = (0, 0)
    return len(packages)


def populate_root(packages: Sequence[Artifact], root: Path) -> RootTree:
    """Install every package into an empty `root` and write the package database."""
    tree = RootTree(root)
    for art in packages:
        install_artifact(art.path, tree)
    write_package_db(tree, packages)
    return tree


# ---------------------------------------------------------------- sizes


def parse_size(text: str) -> int:
    """`512M`, `2G`, `1.5GiB`, `4096` (bytes) -> bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"invalid size {text!r}", hint="use a number with K, M, G or T: 2G")
    factor = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2].upper()]
    return int(float(m[1]) * factor)


@dataclass(frozen=True)
class TreeUsage:
    """What a tree needs on ext4: data blocks and inodes."""

    blocks: int
    inodes: int


def measure_tree(root: Path) -> TreeUsage:
    """Count 4 KiB blocks and inodes the tree will take (hard links once)."""
    require_real_folder(root, "image root")  # os.walk would follow a symlinked top
    blocks = 1
    inodes = 1
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        blocks += 1 + (len(dirnames) + len(filenames)) * 40 // BLOCK
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            inodes += 1
            if stat.S_ISREG(st.st_mode):
                # Extent tree blocks for big files: one per ~340 extents; ample.
                blocks += -(-st.st_size // BLOCK) + st.st_size // (128 * MIB)
            elif stat.S_ISLNK(st.st_mode) and st.st_size >= 60:
                blocks += 1
    return TreeUsage(blocks, inodes)


def _journal_blocks(fs_blocks: int) -> int:
    # e2fsprogs 1.47 ext2fs_default_journal_size(), in 4 KiB blocks.
    for limit, size in ((2048, 0), (32768, 1024), (256 * 1024, 4096), (512 * 1024, 8192),
                        (4096 * 1024, 16384), (8192 * 1024, 32768), (16384 * 1024, 65536),
                        (32768 * 1024, 131072)):
        if fs_blocks < limit:
            return size
    return 262144


def root_fs_size(usage: TreeUsage) -> tuple[int, int]:
    """(bytes, inode count) for an ext4 holding `usage` with room to spare.

    Data plus 10% and 32 MiB of free room, then inode tables (256 bytes per
    inode), the journal and ~3% group metadata on top; rounded to MiB.
    """
    inodes = max(usage.inodes * 3 // 2 + 1024, 4096)
    data = usage.blocks * BLOCK
    room = data + data // 10 + 32 * MIB
    meta = inodes * 256 + room // 32 + 4 * MIB
    total = room + meta
    total += _journal_blocks(total // BLOCK) * BLOCK
    return _round_up(total, MIB), inodes


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


@dataclass(frozen=True)
class Layout:
    """Where the partitions sit in the image, in bytes."""

    esp_offset: int
    esp_size: int
    root_offset: int
    root_size: int
    total: int


def plan_layout(esp_size: int, root_size: int) -> Layout:
    """1 MiB aligned partitions, room for the backup GPT (33 sectors) at the end."""
    esp_offset = MIB
    root_offset = esp_offset + esp_size
    total = root_offset + root_size + MIB
    return Layout(esp_offset, esp_size, root_offset, root_size, total)


def esp_size_for(files: Iterable[Path]) -> int:
    """ESP big enough for its files with 25% and 8 MiB spare; at least 32 MiB."""
    content = sum(_round_up(p.stat().st_size, 4096) for p in files)
    return max(32 * MIB, _round_up(content + content // 4 + 8 * MIB, MIB))


# ---------------------------------------------------------------- the disk


def _env() -> dict[str, str]:
    # mtools refuses partitions whose geometry it dislikes unless told not to check.
    return base_env({"MTOOLS_SKIP_CHECK": "1"})


def _tools() -> None:
    for tool, package in (("sfdisk", "fdisk"), ("mke2fs", "e2fsprogs"),
                          ("debugfs", "e2fsprogs"), ("mformat", "mtools"),
                          ("mcopy", "mtools"), ("mmd", "mtools")):
        require_tool(tool, package)
    if not SYSTEMD_BOOT.is_file():
        raise IglubuildError(f"{SYSTEMD_BOOT} is missing (the UEFI boot loader)",
                             hint="apt-get install systemd-boot-efi")


def kernel_cmdline(root_partuuid: str) -> str:
    """The kernel command line of the image (root by partition UUID, serial console)."""
    return (f"root=PARTUUID={root_partuuid} rootfstype=ext4 rw "
            "console=tty0 console=ttyS0,115200")


def write_partition_table(image: Path, layout: Layout, root_partuuid: str) -> None:
    """GPT with an ESP and the root partition, written by sfdisk from a script."""
    script = image.with_name(image.name + ".sfdisk")
    script.write_text(
        "label: gpt\n"
        f"start={layout.esp_offset // SECTOR}, size={layout.esp_size // SECTOR}, "
        f'type={ESP_TYPE}, name="ESP"\n'
        f"start={layout.root_offset // SECTOR}, size={layout.root_size // SECTOR}, "
        f'type={ROOT_TYPE}, uuid={root_partuuid}, name="{ROOT_LABEL}"\n',
        encoding="utf-8",
    )
    try:
        # run() gives every program stdin from /dev/null; sfdisk only reads its
        # script from stdin, so a shell redirects it from the file.
        run(["sh", "-c", 'exec sfdisk --quiet --no-reread --no-tell-kernel "$1" < "$2"',
             "sfdisk", image, script], capture=True)
    finally:
        script.unlink(missing_ok=True)


def write_esp(image: Path, layout: Layout, stage: Path) -> None:
    """FAT file system in the ESP, filled with the staged files (no mount)."""
    target = f"{image}@@{layout.esp_offset}"
    env = _env()
    run(["mformat", "-i", target, "-T", str(layout.esp_size // SECTOR), "-v", "ESP", "::"],
        env=env, capture=True)
    entries = sorted(stage.iterdir())
    if entries:
        run(["mcopy", "-i", target, "-s", "-p", "-Q", *entries, "::/"], env=env, capture=True)


def stage_esp(stage: Path, kernel: Path, cmdline: str) -> list[Path]:
    """The ESP's files in a folder: systemd-boot, loader.conf, the entry, the kernel."""
    boot = stage / "EFI" / "BOOT"
    boot.mkdir(parents=True)
    shutil.copyfile(SYSTEMD_BOOT, boot / "BOOTX64.EFI")
    entries = stage / "loader" / "entries"
    entries.mkdir(parents=True)
    (stage / "loader" / "loader.conf").write_text(
        "default iglunix.conf\ntimeout 0\neditor no\n", encoding="utf-8")
    (stage / ENTRY_PATH).write_text(
        f"title Iglunix\nlinux /{KERNEL_NAME}\noptions {cmdline}\n", encoding="utf-8")
    shutil.copyfile(kernel, stage / KERNEL_NAME)
    return [p for p in stage.rglob("*") if p.is_file()]


def write_root_fs(image: Path, layout: Layout, root: Path, inodes: int) -> None:
    """ext4 at the root partition's offset, filled from `root` by mke2fs -d."""
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-L", ROOT_LABEL,
         "-N", str(inodes), "-d", root,
         "-E", f"offset={layout.root_offset},root_owner=0:0",
         image, str(layout.root_size // BLOCK)], capture=True)


def _debugfs_quote(path: str) -> str:
    if any(c in path for c in '"\n\\'):
        raise BuildError(f"cannot set the owner of /{path}: odd characters in the name",
                         hint="rename the file in its recipe")
    return f'"/{path}"'


def _real_paths(tree: RootTree) -> dict[str, tuple[int, int]]:
    """`wanted_ids` keyed by where each path really is in the root.

    A package may install into a folder that is another package's symlink
    (lib -> /usr/lib): its files are under the link's target. The parent is
    resolved inside the root, never on the host (an absolute link followed
    by lstat would read the host's /usr/lib), and the last part is not
    followed, so a symlink's own owner is what is checked and set.
    """
    real: dict[str, tuple[int, int]] = {}
    for rel, ids in tree.wanted_ids.items():
        pure = PurePosixPath(rel)
        parent = resolve_in_root(tree.path, str(pure.parent)) if str(pure.parent) != "." \
            else tree.path
        where = parent / pure.name
        if not os.path.lexists(where):
            raise BuildError(f"/{rel} is not in the image root after installing",
                             hint="two packages disagree about a folder and a link there")
        real[where.relative_to(tree.path).as_posix()] = ids
    return real


def fix_owners(image: Path, layout: Layout, tree: RootTree) -> int:
    """Give inodes the owner their artifact asked for where the tree differs.

    Needed when not running as root: extracted files then belong to the caller
    and mke2fs -d copies that. Returns the number of paths fixed.
    """
    lines: list[str] = []
    for rel, (uid, gid) in sorted(_real_paths(tree).items()):
        st = os.lstat(tree.path / rel)
        if st.st_uid != uid:
            lines.append(f"set_inode_field {_debugfs_quote(rel)} uid {uid}")
        if st.st_gid != gid:
            lines.append(f"set_inode_field {_debugfs_quote(rel)} gid {gid}")
    # Directories created on the way (no tar member of their own) belong to root.
    for dirpath, dirnames, _files in os.walk(tree.path):
        for d in dirnames:
            rel = os.path.relpath(os.path.join(dirpath, d), tree.path)
            if rel not in tree.wanted_ids:
                st = os.lstat(os.path.join(dirpath, d))
                if st.st_uid or st.st_gid:
                    lines.append(f"set_inode_field {_debugfs_quote(rel)} uid 0")
                    lines.append(f"set_inode_field {_debugfs_quote(rel)} gid 0")
    if not lines:
        return 0
    script = image.with_name(image.name + ".debugfs")
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        proc = run(["debugfs", "-w", "-f", script, f"{image}?offset={layout.root_offset}"],
                   capture=True)
    finally:
        script.unlink(missing_ok=True)
    # debugfs reports per-command failures on stderr but still exits 0.
    errors = [ln for ln in proc.stderr.splitlines() if ":" in ln and "debugfs " not in ln]
    if errors:
        raise BuildError(f"debugfs could not set owners: {errors[0]}")
    return len(lines)


@dataclass(frozen=True)
class ImageResult:
    """What `make_image` wrote."""

    path: Path
    layout: Layout
    root_partuuid: str
    cmdline: str
    owners_fixed: int


def make_image(tree: RootTree, kernel: Path, output: Path, size: int | None = None,
               work: Path | None = None) -> ImageResult:
    """Write a bootable disk image from a filled root tree and a kernel.

    `size` (bytes) fixes the image size; otherwise it is computed from the
    contents plus a margin. The image appears at `output` only when complete.
    """
    _tools()
    if not kernel.is_file():
        raise UsageError(f"kernel {kernel} does not exist", hint="pass --kernel PATH")
    output = output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    root_partuuid = str(uuid.uuid4())
    cmdline = kernel_cmdline(root_partuuid)
    tmp_image = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="esp.", dir=work or output.parent) as esp_dir:
        esp_files = stage_esp(Path(esp_dir), kernel, cmdline)
        esp_size = esp_size_for(esp_files)
        root_size, inodes = root_fs_size(measure_tree(tree.path))
        if size is not None:
            fixed_root = _round_up(size, MIB) - esp_size - 2 * MIB
            if fixed_root < root_size:
                need = (esp_size + root_size + 2 * MIB) // MIB
                raise UsageError(f"--size {size // MIB} MiB is too small for this image",
                                 hint=f"it needs at least {need}M (or leave --size out)")
            root_size = fixed_root
        layout = plan_layout(esp_size, root_size)
        try:
            with open(tmp_image, "wb") as f:
                f.truncate(layout.total)
            write_partition_table(tmp_image, layout, root_partuuid)
            write_esp(tmp_image, layout, Path(esp_dir))
            write_root_fs(tmp_image, layout, tree.path, inodes)
            fixed = fix_owners(tmp_image, layout, tree)
            os.replace(tmp_image, output)
        except BaseException:
            tmp_image.unlink(missing_ok=True)
            raise
    return ImageResult(output, layout, root_partuuid, cmdline, fixed)


# ---------------------------------------------------------------- the verb


def find_kernel(root: Path, kernel: Path | None) -> Path:
    """--kernel if given, else the kernel the `linux` package installed in /boot."""
    if kernel is not None:
        if not kernel.is_file():
            raise UsageError(f"kernel {kernel} does not exist",
                             hint="pass the path of a bzImage/vmlinuz file")
        return kernel
    boot = resolve_in_root(root, "boot")
    found = sorted(boot.glob("vmlinuz*")) if boot.is_dir() else []
    if not found:
        raise UsageError("no kernel: the linux package is not built and --kernel was not given",
                         hint="iglubuild pkg linux, or --kernel PATH (e.g. the vmlinuz of "
                              "Debian's linux-image-cloud-amd64)")
    return found[-1]


def build_image(settings: Settings, packages: Sequence[str] | None = None,
                kernel: Path | None = None, size: int | None = None,
                output: Path | None = None, with_repo: bool = False
                ) -> tuple[ImageResult, list[Artifact]]:
    """`iglubuild image`: closure of the image set -> root tree -> image file."""
    names = list(packages or DEFAULT_IMAGE_SET)
    artifacts = find_artifacts(settings.packages_dir(ARCH))
    if kernel is None and "linux" in artifacts and "linux" not in names:
        names.append("linux")
    closure = runtime_closure(names, artifacts)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="image.", dir=settings.work_dir) as work:
        root = Path(work) / "root"
        root.mkdir()
        os.chmod(root, 0o755)
        tree = populate_root(closure, root)
        if with_repo:
            add_repository(tree, settings.packages_dir(ARCH))
        found_kernel = find_kernel(root, kernel)
        result = make_image(tree, found_kernel, output or settings.image_path, size,
                            work=Path(work))
    return result, closure
