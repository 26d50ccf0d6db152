#!/usr/bin/env bash
# LocalStack, the second local AWS backend, with or without Docker.
#
#   localstack.sh up      start LocalStack on 127.0.0.1 and wait until it answers
#   localstack.sh down    stop what `up` started
#   localstack.sh status  say whether it is running
#   localstack.sh env     print the endpoint variables to `eval` in a shell
#
# Two modes (LOCALSTACK_MODE, default: docker when a Docker engine answers, else host):
#   docker  the pinned image of docker-compose.yml serves SQS, S3 and DynamoDB, and what
#           `sam deploy` needs (deploy.sh), with functions run through the Docker socket.
#   host    localstack-core runs as a plain process from a pinned venv (needs Python >= 3.13:
#           2026.3.0 imports warnings.deprecated, new in 3.13, although it installs on 3.12)
#           and serves SQS and S3. Its DynamoDB needs a download, so DynamoDB comes from the
#           no-Docker emulator (moto), which `up` starts too unless it is already running.
#           `env` then points AWS_ENDPOINT_URL_SQS and _S3 at LocalStack and
#           AWS_ENDPOINT_URL_DYNAMODB at the emulator.
#           For `sam deploy` (deploy.sh) it also serves CloudFormation, Lambda, IAM, KMS, Logs,
#           CloudWatch and DynamoDB: the init hook init/start.d/no-docker.py makes functions
#           deployable without Docker (not invocable) and forwards DynamoDB to the emulator.
# Settings (environment): LOCALSTACK_MODE, LOCALSTACK_PORT (default 4566), LOCALSTACK_PYTHON,
# LOCALSTACK_VENV, EMULATOR_PORT (host mode's DynamoDB).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/common.sh
source "$root/infra/lib/common.sh"

port="${LOCALSTACK_PORT:-4566}"
venv="${LOCALSTACK_VENV:-$root/.venv/localstack}"
state="$root/.run"
pidfile="$state/localstack-$port.pid"
logfile="$state/localstack-$port.log"
# Marks that host mode's `up` started the emulator, so `down` stops it and nothing else.
started_emulator="$state/localstack-$port.started-emulator"
compose="$root/infra/localstack/docker-compose.yml"
emulator="$root/infra/emulator/emulator.sh"
url="http://127.0.0.1:$port"

log() { printf 'localstack: %s\n' "$*" >&2; }

answers() { curl -sf -o /dev/null --max-time 2 "$url/_localstack/health"; }

# Answers, and its init hooks (init/start.d) have run.
answers_initialised() {
    answers && curl -sf --max-time 2 "$url/_localstack/init/start" | grep -q '"completed": *true'
}

mode() {
    case "${LOCALSTACK_MODE:-auto}" in
        docker | host) echo "$LOCALSTACK_MODE" ;;
        auto) if docker info >/dev/null 2>&1; then echo docker; else echo host; fi ;;
        *)
            log "LOCALSTACK_MODE must be docker, host or auto, not '$LOCALSTACK_MODE'"
            return 1
            ;;
    esac
}

# A Python >= 3.13 interpreter: LOCALSTACK_PYTHON, python3.14/3.13 on PATH, or a pyenv version.
find_python() {
    local candidate
    local candidates=("${LOCALSTACK_PYTHON:-}" python3.14 python3.13 python3)
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/3.1[3-9]*/bin/python3)
    fi
    for candidate in "${candidates[@]}"; do
        [[ -n "$candidate" ]] || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
    log "LocalStack's host mode needs Python >= 3.13 and none was found"
    log "(tried LOCALSTACK_PYTHON, python3.14, python3.13, python3 and pyenv versions);"
    log "install one, or set LOCALSTACK_PYTHON to its path"
    return 1
}

host_up() {
    local python root_dir="$state/localstack-$port"
    if ! "$emulator" status >/dev/null 2>&1; then
        "$emulator" up
        touch "$started_emulator"
    fi
    if ! running_pid "$pidfile" >/dev/null; then
        python="$(find_python)"
        ensure_venv "$venv" "$root/infra/localstack/requirements.txt" "$python" localstack-supervisor localstack
        mkdir -p "$root_dir/etc/localstack/init/start.d"
        cp "$root/infra/localstack/init/start.d/"*.py "$root_dir/etc/localstack/init/start.d/"
    fi
    # Hypercorn honours the listen address (the default server binds every interface); the
    # path strategy gives queue URLs on 127.0.0.1 instead of a name that needs DNS; state and
    # caches go under .run instead of /var/lib/localstack. API Gateway v2 is not in the
    # community edition: CloudFormation deploys it as a placeholder (said explicitly here).
    start_server localstack "$pidfile" "$logfile" answers_initialised env \
        SERVICES=sqs,s3,cloudformation,lambda,iam,sts,logs,cloudwatch,dynamodb,kms \
        DYNAMODB_LOCAL_PORT="${EMULATOR_PORT:-5055}" \
        CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES=1 \
        GATEWAY_LISTEN="127.0.0.1:$port" \
        GATEWAY_SERVER=hypercorn \
        LOCALSTACK_HOST="127.0.0.1:$port" \
        SQS_ENDPOINT_STRATEGY=path \
        DNS_ADDRESS=0 \
        OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$root_dir" \
        "$venv/bin/python" -m localstack.runtime.main
    if curl -sf --max-time 2 "$url/_localstack/init/start" | grep -q '"state": *"ERROR"'; then
        log "an init hook failed; see $logfile"
        return 1
    fi
}

host_down() {
    stop_server localstack "$pidfile"
    rm -rf "$state/localstack-$port"
    if [[ -f "$started_emulator" ]]; then
        "$emulator" down
        rm -f "$started_emulator"
    fi
}

docker_up() {
    LOCALSTACK_PORT="$port" docker compose -f "$compose" up --detach --wait
}

docker_down() {
    LOCALSTACK_PORT="$port" docker compose -f "$compose" down
}

status() {
    if answers; then
        echo "running ($(mode) mode) at $url"
    else
        echo "not running"
        return 1
    fi
}

print_env() {
    cat <<VARS
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
VARS
    if [[ "$(mode)" == docker ]]; then
        echo "export AWS_ENDPOINT_URL=$url"
        return
    fi
    local dynamodb
    dynamodb="$("$emulator" env | sed -n 's/^export AWS_ENDPOINT_URL=//p')"
    cat <<VARS
unset AWS_ENDPOINT_URL
export AWS_ENDPOINT_URL_SQS=$url
export AWS_ENDPOINT_URL_S3=$url
export AWS_ENDPOINT_URL_DYNAMODB=$dynamodb
VARS
}

case "${1:-}" in
    up) "$(mode)_up" ;;
    down) "$(mode)_down" ;;
    status) status ;;
    env) print_env ;;
    *)
        echo "usage: $0 up|down|status|env" >&2
        exit 2
        ;;
esac
