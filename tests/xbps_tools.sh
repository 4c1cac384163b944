#!/bin/sh
# Build the real xbps tools (0.59.2, what Iglunix's base/xbps builds) once,
# from the shared git bundle, for the tests to judge our packages with.
#
#   tests/xbps_tools.sh [DISTFILES]   -> prints the install prefix (bin/ holds xbps-*)
#
# The commit comes from DISTFILES/GIT.tsv, never typed here. The result is
# cached under $IGLUBUILD_XBPS_CACHE (default /var/tmp/iglubuild-xbps-<commit>)
# and reused while its stamp file exists; a half-finished build is never
# taken for a finished one (the stamp is written last, the prefix is renamed
# into place). Needs Debian's libarchive-dev libssl-dev zlib1g-dev pkg-config
# (`make setup` installs them).
set -eu

distfiles=${1:-${IGLUBUILD_TEST_DISTFILES:-/work/shared/distfiles}}
tsv=$distfiles/GIT.tsv
[ -f "$tsv" ] || { echo "xbps_tools: no $tsv (hint: pass the distfiles folder)" >&2; exit 2; }
commit=$(awk -F '\t' '$2 == "xbps" { print $5 }' "$tsv")
bundle=$distfiles/$(awk -F '\t' '$2 == "xbps" { print $1 }' "$tsv")
[ -n "$commit" ] && [ -f "$bundle" ] || {
	echo "xbps_tools: no xbps row or bundle in $tsv" >&2; exit 2; }

prefix=${IGLUBUILD_XBPS_CACHE:-/var/tmp/iglubuild-xbps-$commit}
if [ -f "$prefix/.built" ]; then
	echo "$prefix"
	exit 0
fi

# One builder at a time (two test sessions may start together); the second
# finds the first one's stamp.
exec 9>"$prefix.lock"
flock 9
if [ -f "$prefix/.built" ]; then
	echo "$prefix"
	exit 0
fi

for pc in libarchive libssl zlib; do
	pkg-config --exists "$pc" 2>/dev/null || {
		echo "xbps_tools: $pc development files missing" \
			"(hint: apt-get install libarchive-dev libssl-dev zlib1g-dev pkg-config)" >&2
		exit 3; }
done

work=$(mktemp -d "${prefix}.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone -q --no-checkout "$bundle" "$work/src" 2>/dev/null
git -C "$work/src" -c advice.detachedHead=false checkout -q "$commit"
cd "$work/src"
# Configured for its final place (rpath $ORIGIN/../lib finds libxbps.so),
# installed under a DESTDIR and renamed there once complete.
./configure --prefix="$prefix" --enable-rpath >"$work/configure.log" 2>&1 || {
	tail -20 "$work/configure.log" >&2; exit 1; }
# As Iglunix's build.sh: newer compilers warn where 0.59.2 did not.
sed -i 's/-Werror//' config.mk
make -j2 >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
make install DESTDIR="$work/dest" >>"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
date -u +%s >"$work/dest$prefix/.built"
rm -rf "$prefix"
mv "$work/dest$prefix" "$prefix"
echo "$prefix"
