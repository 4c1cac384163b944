"""Helpers for the build-engine tests: real source tarballs and real recipes.

Fixture packages are small C projects written here and packed as real
.tar.gz files beside their recipe (a `file:` source), so the build runs the
same unpack -> phases -> pack path as any upstream tarball.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import textwrap
from pathlib import Path

from iglubuild.recipe import LoadedRecipe, load_tree
from tests.conftest import DISTFILES

SHARED_DISTFILES = DISTFILES
MUSL_TARBALL = SHARED_DISTFILES / "musl-1.2.3.tar.gz"


def write_tarball(path: Path, top: str, files: dict[str, str]) -> Path:
    """A real .tar.gz with `files` (name -> text) under the folder `top`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(top)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for name, text in sorted(files.items()):
            data = textwrap.dedent(text).lstrip("\n").encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def write_recipe(root: Path, name: str, body: str, files: dict[str, str] | None = None,
                 repo: str = "test") -> Path:
    """recipes/<repo>/<name>/recipe.yaml, plus `<name>.tar.gz` holding `files` if given."""
    folder = root / repo / name
    folder.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(body).lstrip("\n")
    if files is not None:
        # A local archive is a file:// URL: used in place, unpacked like a
        # download (`file:` sources are copied beside srcdir, never unpacked).
        tarball = write_tarball(folder / f"{name}.tar.gz", f"{name}-1.0", files)
        text = text.replace("TARBALL_URL", f"file://{tarball}")
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def load(root: Path, name: str) -> LoadedRecipe:
    return load_tree(root).recipes[name]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def musl_recipe_text() -> str:
    """musl as the first package: needs only `clang --target`, no sysroot.

    Like Iglunix's linux/musl/build.sh, libc.so becomes the dynamic loader
    lib/ld-musl-x86_64.so.1 and usr/lib/libc.so points at it. The source is
    the shared upstream tarball by file:// URL, used in place (the real
    recipe names https://musl.libc.org/releases/musl-{version}.tar.gz with
    its sha256).
    """
    return textwrap.dedent(f"""\
        name: musl
        version: 1.2.3
        release: 1
        description: C standard library
        license: MIT
        homepage: https://musl.libc.org/
        sources:
          - url: file://{MUSL_TARBALL}
        options: [no-check]
        build: |
          ./configure --prefix=/usr --target=$TRIPLE --disable-wrapper \\
            LIBCC="$($CC --print-libgcc-file-name)"
          make
        package: |
          make DESTDIR="$pkgdir" install
          rm "$pkgdir/lib/ld-musl-$ARCH.so.1"
          mv "$pkgdir/usr/lib/libc.so" "$pkgdir/lib/ld-musl-$ARCH.so.1"
          ln -s ../../lib/ld-musl-$ARCH.so.1 "$pkgdir/usr/lib/libc.so"
          mkdir -p "$pkgdir/usr/bin"
          ln -s ../../lib/ld-musl-$ARCH.so.1 "$pkgdir/usr/bin/ldd"
        subpackages:
          dev: [usr/include, usr/lib/*.a, usr/lib/*.o, usr/lib/libc.so]
        """)
