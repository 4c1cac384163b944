#!/bin/sh
# Put Debian's cloud kernel (ext4, NVMe and the 8250 serial console built in,
# so it boots without an initramfs) in DIR and print the path of its vmlinuz.
# Used by `make world` until the linux recipe has a verified source.
# Usage: toolchain/debian-kernel.sh DIR
set -eu
dir=${1:?usage: $0 DIR}
found=$(ls "$dir"/x/boot/vmlinuz-* 2>/dev/null | tail -n 1 || true)
if [ -n "$found" ]; then echo "$found"; exit 0; fi
mkdir -p "$dir"
pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*\).*/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "linux-image-cloud-amd64 not known to apt: run apt-get update" >&2; exit 1; }
(cd "$dir" && apt-get download -qq "$pkg" >&2)
dpkg-deb -x "$dir"/"$pkg"_*.deb "$dir/x"
rm -f "$dir"/"$pkg"_*.deb
ls "$dir"/x/boot/vmlinuz-* | tail -n 1
