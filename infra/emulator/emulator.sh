#!/usr/bin/env bash
# No-Docker AWS emulator (moto server) for local development and tests. It runs through
# serve.py, which makes DynamoDB's conditional writes atomic as they are on AWS.
#
#   emulator.sh up      create the venv if needed, start moto on 127.0.0.1, wait until it answers
#   emulator.sh down    stop the emulator this script started (by its recorded PID)
#   emulator.sh status  say whether it is running
#   emulator.sh env     print the endpoint variables to `eval` in a shell
#
# `up` is idempotent: a second call finds the running emulator and starts nothing.
# Settings (environment): EMULATOR_PORT (default 5055), EMULATOR_VENV, EMULATOR_STATE_DIR.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/common.sh
source "$root/infra/lib/common.sh"

port="${EMULATOR_PORT:-5055}"
venv="${EMULATOR_VENV:-$root/.venv/emulator}"
state="${EMULATOR_STATE_DIR:-$root/.run}"
pidfile="$state/emulator-$port.pid"
logfile="$state/emulator-$port.log"
url="http://127.0.0.1:$port"

answers() { curl -sf -o /dev/null --max-time 2 "$url/moto-api/"; }

up() {
    ensure_venv "$venv" "$root/infra/emulator/requirements.txt" "${PYTHON:-python3}" moto_server emulator
    start_server emulator "$pidfile" "$logfile" answers \
        "$venv/bin/python" "$root/infra/emulator/serve.py" -H 127.0.0.1 -p "$port"
}

status() {
    local pid
    if pid="$(running_pid "$pidfile")" && answers; then
        echo "running (pid $pid) at $url"
    else
        echo "not running"
        return 1
    fi
}

print_env() {
    cat <<VARS
export AWS_ENDPOINT_URL=$url
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
VARS
}

case "${1:-}" in
    up) up ;;
    down) stop_server emulator "$pidfile" ;;
    status) status ;;
    env) print_env ;;
    *)
        echo "usage: $0 up|down|status|env" >&2
        exit 2
        ;;
esac
