#!/usr/bin/env bash
# The README's test command: ruff, then the whole pytest suite (slow tests
# included). Expensive fixtures are made once per run and shared through the
# environment: the debootstrap build root (chroot and farm tests) and the
# musl/userland artifacts (build, image and boot tests). The farm tests start
# and stop their own Docker engine (tests/farm_support.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check iglubuild tests bench
python3 -m mypy --strict iglubuild

if [ -n "${IGLUBUILD_TEST_STATE:-}" ]; then
    state=$IGLUBUILD_TEST_STATE  # kept: reuse it on the next run
    mkdir -p "$state"
else
    state=$(mktemp -d /var/tmp/iglubuild-test.XXXXXX)
    trap 'rm -rf "$state"' EXIT
fi
export IGLUBUILD_TEST_CACHE=${IGLUBUILD_TEST_CACHE:-$state/cache}
if [ -z "${IGLUBUILD_TEST_BUILDROOT:-}" ] && [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
    echo "making the build root once for this run (debootstrap) ..."
    python3 -m iglubuild --build-dir "$state/buildroot" toolchain build
    IGLUBUILD_TEST_BUILDROOT=$(python3 -m iglubuild --build-dir "$state/buildroot" toolchain path)
    export IGLUBUILD_TEST_BUILDROOT
fi
python3 -m pytest -q "$@"
