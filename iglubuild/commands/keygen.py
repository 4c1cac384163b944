"""`iglubuild keygen`: make the RSA key that signs the xbps repository."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from iglubuild.errors import UsageError
from iglubuild.settings import Settings

NAME = "keygen"
HELP = "make an RSA key for signing the xbps repository (as xbps 0.59 verifies)"
DEFAULT_BITS = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", type=Path, metavar="FILE",
                        help="where to write the private key (default: the --signing-key "
                             "setting, else <build-dir>/keys/xbps-signing.pem)")
    parser.add_argument("--bits", type=int, default=DEFAULT_BITS,
                        help=f"key size (default {DEFAULT_BITS}; at least 2048)")


def default_key_path(settings: Settings) -> Path:
    return settings.signing_key or settings.build_dir / "keys" / "xbps-signing.pem"


def make_key(path: Path, bits: int = DEFAULT_BITS) -> Path:
    """Write a new RSA private key to `path` (mode 0600) and its public key to `path`.pub."""
    from iglubuild.run import base_env, require_tool, run
    from iglubuild.xbps import XbpsError, public_key

    if os.path.lexists(path):
        raise UsageError(f"{path} already exists",
                         hint="remove it first, or give another FILE: keygen never "
                              "overwrites a key")
    if bits < 2048:
        raise UsageError(f"--bits {bits} is too small", hint="use 2048 or more (default 4096)")
    openssl = require_tool("openssl")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The temporary is made 0600 before openssl writes into it, so the key is
    # never readable by others, not even for a moment.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # -traditional: a PKCS#1 "RSA PRIVATE KEY", what xbps-rindex's
        # PEM_read_RSAPrivateKey was written for.
        proc = run([openssl, "genrsa", "-traditional", "-out", tmp, str(bits)],
                   capture=True, check=False, env=base_env())
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise XbpsError(f"openssl genrsa failed: {last}", hint="is openssl 1.1 or newer?")
        pub = public_key(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    from iglubuild.atomic import write_atomic

    write_atomic(path.with_name(path.name + ".pub"), pub.pem)
    return path


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.xbps import public_key

    path = make_key(args.path or default_key_path(settings), args.bits)
    key = public_key(path)
    print(f"wrote {path} ({key.bits}-bit RSA, fingerprint {key.fingerprint})")
    print(f"public key: {path}.pub")
    if args.path and settings.signing_key != path.resolve():
        print(f"sign the repository with it: IGLUBUILD_SIGNING_KEY={path.resolve()} "
              "(or signing_key in iglubuild.toml)")
    return 0
