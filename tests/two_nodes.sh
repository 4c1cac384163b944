#!/usr/bin/env bash
# Two nodes, proven on one machine (tests/test_farm_two_nodes.py): a second
# dockerd in a network namespace of its own joins the farm, takes half the
# volunteers and compiles for a real `iglubuild --farm pkg` build, is killed
# mid-build, and `farm down` on both leaves nothing behind. Needs root and
# docker.io distcc clang lld debootstrap make iproute2 util-linux.
#
#   tests/two_nodes.sh            # about 3-5 minutes on 2 cores
#
# Overridable: IGLUBUILD_TEST_DOCKER_DIR (the manager engine's folder; the
# worker's is beside it), IGLUBUILD_TEST_BUILDROOT (skip the debootstrap),
# IGLUBUILD_TEST_NETNS, IGLUBUILD_TEST_NET_MANAGER / _WORKER (the veth's two
# addresses, default 198.18.219.1 and .2), IGLUBUILD_TWO_NODE_LOG (where the
# commands it ran are written). They are printed at the end with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export IGLUBUILD_TEST_DOCKER_DIR=${IGLUBUILD_TEST_DOCKER_DIR:-/tmp/iglu-docker-2n}
exec python3 -m pytest -v -s -p no:cacheprovider tests/test_farm_two_nodes.py "$@"
