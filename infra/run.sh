#!/usr/bin/env bash
# `make run`: one domain's pipeline kept up against the emulator until Ctrl-C, to try by hand:
# the `run` command of its driver (tests/domains/NAME, binary NAME-driver). DOMAIN=NAME picks
# one; the default is the first found. The emulator is started if needed and left running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=infra/lib/common.sh
source infra/lib/common.sh

mapfile -t drivers < <(domain_drivers)
chosen=""
for driver in "${drivers[@]}"; do
    read -r package binary <<<"$driver"
    if [[ -z "${DOMAIN:-}" || "$binary" == "$DOMAIN-driver" ]]; then
        chosen="$driver"
        break
    fi
done
if [[ -z "$chosen" ]]; then
    echo "no domain driver${DOMAIN:+ named $DOMAIN} under tests/domains/" >&2
    exit 1
fi
read -r package binary <<<"$chosen"
infra/emulator/emulator.sh up
eval "$(infra/emulator/emulator.sh env)"
exec cargo run -p "$package" --bin "$binary" -- run "$@"
