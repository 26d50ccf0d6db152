#!/usr/bin/env bash
# `make demo`: each domain's pipeline on this machine, no Docker. With no endpoint configured
# (AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_SQS), starts the emulator unless it is already running
# (and then stops it again) and uses it; then builds and runs the demo of every domain driver
# (tests/domains/NAME, binary NAME-driver; see domain_drivers in infra/lib/common.sh):
#   infra/demo.sh [--requests N] [--timeout SECONDS] [driver options]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=infra/lib/common.sh
source infra/lib/common.sh

require_domains
mapfile -t drivers < <(domain_drivers)
if ((${#drivers[@]} == 0)); then
    echo "no domain driver under tests/domains/: nothing to demonstrate"
    exit 0
fi
if [[ -z "${AWS_ENDPOINT_URL:-}${AWS_ENDPOINT_URL_SQS:-}" ]]; then
    emulator=infra/emulator/emulator.sh
    if ! "$emulator" status >/dev/null 2>&1; then
        trap '"$emulator" down' EXIT
        "$emulator" up
    fi
    eval "$("$emulator" env)"
fi
# The drivers export their spans to a collector appending here (`make trace ID=...` reads it):
# each demo starts with its own.
rm -f target/traces/spans.jsonl
for driver in "${drivers[@]}"; do
    read -r package binary <<<"$driver"
    echo "== demo of $package"
    cargo run --quiet -p "$package" --bin "$binary" -- demo "$@"
done
