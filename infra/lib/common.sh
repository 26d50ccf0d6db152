# Shell helpers shared by the scripts under infra/: pinned virtualenvs and background servers
# that are started, found and stopped by their recorded PID. Source it; it defines functions only.

# ensure_venv VENV REQUIREMENTS PYTHON MARKER LABEL
# Creates VENV with PYTHON and installs the pinned REQUIREMENTS, unless VENV/bin/MARKER exists
# and the requirements have not changed since the last install.
ensure_venv() {
    local venv="$1" requirements="$2" python="$3" marker="$4" label="$5"
    local stamp="$venv/.requirements.sha256" want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/$marker" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    printf '%s: installing the pinned packages into %s (first run only)\n' "$label" "$venv" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
}

# running_pid PIDFILE: prints the recorded PID if that process is alive.
running_pid() {
    local pidfile="$1" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# start_server LABEL PIDFILE LOGFILE PROBE COMMAND...
# Starts COMMAND in the background, records its PID and waits (up to 60 s) until PROBE (a shell
# function) succeeds. Idempotent: when the recorded server is alive and answers, starts nothing.
# COMMAND must exec the server itself so the recorded PID is the server's.
start_server() {
    local label="$1" pidfile="$2" logfile="$3" probe="$4" pid
    shift 4
    if pid="$(running_pid "$pidfile")"; then
        if "$probe"; then
            printf '%s: already running (pid %s)\n' "$label" "$pid" >&2
            return
        fi
        printf '%s: pid %s is alive but does not answer; stop it first\n' "$label" "$pid" >&2
        return 1
    fi
    rm -f "$pidfile"
    if "$probe"; then
        printf '%s: something not started by this script already answers on its port; choose another port\n' "$label" >&2
        return 1
    fi
    mkdir -p "$(dirname "$pidfile")"
    nohup "$@" >"$logfile" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 600); do
        if "$probe"; then
            printf '%s: started (pid %s)\n' "$label" "$pid" >&2
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            printf '%s: exited during start-up; last lines of %s:\n' "$label" "$logfile" >&2
            tail -n 20 "$logfile" >&2
            rm -f "$pidfile"
            return 1
        fi
        sleep 0.1
    done
    printf '%s: did not answer within 60 s; stopping it\n' "$label" >&2
    stop_server "$label" "$pidfile"
    return 1
}

# stop_server LABEL PIDFILE: stops the recorded server (SIGTERM, then SIGKILL after 10 s).
stop_server() {
    local label="$1" pidfile="$2" pid
    if ! pid="$(running_pid "$pidfile")"; then
        rm -f "$pidfile"
        printf '%s: not running\n' "$label" >&2
        return
    fi
    kill "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        printf '%s: pid %s ignored SIGTERM for 10 s; sending SIGKILL\n' "$label" "$pid" >&2
        kill -9 "$pid"
    fi
    rm -f "$pidfile"
    printf '%s: stopped (pid %s)\n' "$label" "$pid" >&2
}
