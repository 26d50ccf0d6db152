#!/usr/bin/env bash
# No-Docker AWS emulator (moto server) for local development and tests.
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
port="${EMULATOR_PORT:-5055}"
venv="${EMULATOR_VENV:-$root/.venv/emulator}"
state="${EMULATOR_STATE_DIR:-$root/.run}"
pidfile="$state/emulator-$port.pid"
logfile="$state/emulator-$port.log"
requirements="$root/infra/emulator/requirements.txt"
python="${PYTHON:-python3}"
url="http://127.0.0.1:$port"

log() { printf 'emulator: %s\n' "$*" >&2; }

answers() { curl -sf -o /dev/null --max-time 2 "$url/moto-api/"; }

running_pid() {
    [[ -f "$pidfile" ]] || return 1
    local pid
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ensure_venv() {
    # Reinstall only when the pinned requirements change.
    local stamp="$venv/.requirements.sha256" want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/moto_server" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    log "installing the pinned emulator into $venv (first run only, ~40 s)"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
}

up() {
    local pid
    if pid="$(running_pid)"; then
        if answers; then
            log "already running (pid $pid) at $url"
            return
        fi
        log "pid $pid is alive but $url does not answer; stop it with '$0 down'"
        return 1
    fi
    rm -f "$pidfile"
    if answers; then
        log "something not started by this script already answers at $url; set EMULATOR_PORT to another port"
        return 1
    fi
    ensure_venv
    mkdir -p "$state"
    # exec: the recorded PID is the server itself, so `down` stops exactly it.
    nohup bash -c "exec '$venv/bin/moto_server' -H 127.0.0.1 -p '$port'" >"$logfile" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 300); do
        if answers; then
            log "started (pid $pid) at $url"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "exited during start-up; last lines of $logfile:"
            tail -n 20 "$logfile" >&2
            rm -f "$pidfile"
            return 1
        fi
        sleep 0.1
    done
    log "did not answer within 30 s; stopping it"
    down
    return 1
}

down() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$pidfile"
        log "not running"
        return
    fi
    kill "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
        kill -9 "$pid"
    fi
    rm -f "$pidfile"
    log "stopped (pid $pid)"
}

status() {
    local pid
    if pid="$(running_pid)" && answers; then
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
    down) down ;;
    status) status ;;
    env) print_env ;;
    *)
        echo "usage: $0 up|down|status|env" >&2
        exit 2
        ;;
esac
