#!/usr/bin/env bash
# The README's test command: start what the tests need (a private Docker
# engine on its own socket), run the whole suite, stop what was started.
set -euo pipefail
cd "$(dirname "$0")/.."
state=$(mktemp -d /tmp/iglubuild-test.XXXXXX)
dockerd_pid=""
cleanup() {
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$state" 2>/dev/null || true
}
trap cleanup EXIT
if command -v dockerd >/dev/null 2>&1 && [ -z "${DOCKER_HOST:-}" ]; then
    mkdir -p "$state/docker"
    dockerd --host "unix://$state/docker.sock" --data-root "$state/docker" \
        --exec-root "$state/exec" --pidfile "$state/docker.pid" \
        --iptables=false --bridge=none >"$state/dockerd.log" 2>&1 &
    dockerd_pid=$!
    export DOCKER_HOST="unix://$state/docker.sock"
    for _ in $(seq 1 30); do [ -S "$state/docker.sock" ] && break; sleep 1; done
fi
python3 -m ruff check iglubuild tests bench
python3 -m pytest -q "$@"
