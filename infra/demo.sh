#!/usr/bin/env bash
# `make demo`: the whole pipeline on this machine, no Docker. Starts the emulator unless it is
# already running (and then stops it again), builds and runs the local runner's demo:
#   infra/demo.sh [--imports N] [--rows N] [--timeout SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

emulator=infra/emulator/emulator.sh
if ! "$emulator" status >/dev/null 2>&1; then
    trap '"$emulator" down' EXIT
    "$emulator" up
fi
eval "$("$emulator" env)"
cargo run --quiet -p local-runner -- demo "$@"
