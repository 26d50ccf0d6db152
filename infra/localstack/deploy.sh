#!/usr/bin/env bash
# `sam deploy` of the real template.yaml into LocalStack: the deployment path users take to AWS.
#
#   deploy.sh up      make deploy-local: start LocalStack unless it runs, sam build for this
#                     machine's architecture, sam deploy --config-env local
#   deploy.sh down    make destroy-local: sam delete --config-env local (LocalStack keeps running;
#                     make localstack-down stops it)
#   deploy.sh check   the CI step: deploy the existing .aws-sam build, read every resource back
#                     and check it against the template (readback.py), update a parameter and
#                     check again, delete, check that only the retained tables are left, delete
#                     them, check that nothing is left; prints the timings
#
# Without Docker (host mode) functions are created but cannot run (LocalStack's Lambda needs
# Docker); DynamoDB is forwarded to the emulator. With Docker the compose LocalStack runs
# everything, functions included.
# Settings (environment): LOCALSTACK_PORT (default 4566), EMULATOR_PORT (host mode's DynamoDB),
# ARCH (check: the architecture .aws-sam was built for, default x86_64), SAM_BUILD_DIR (the
# sam build output to deploy, default .aws-sam/build),
# STACK (default: queue-workers-local for up/down, queue-workers-check for check).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
localstack=infra/localstack/localstack.sh
tools=infra/tools/tools.sh
port="${LOCALSTACK_PORT:-4566}"
emulator_url="http://127.0.0.1:${EMULATOR_PORT:-5055}"
build="${SAM_BUILD_DIR:-.aws-sam/build}"

log() { printf 'deploy-local: %s\n' "$*" >&2; }
step() { printf '\n--> %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Every AWS call goes to LocalStack (DynamoDB too: it forwards to the emulator in host mode).
use_localstack() {
    unset AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_S3 AWS_ENDPOINT_URL_DYNAMODB AWS_PROFILE \
        AWS_SESSION_TOKEN
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
    export AWS_DEFAULT_REGION=us-east-1
}

# The architecture of this machine, as Lambda names it.
host_arch() {
    case "$(uname -m)" in
        aarch64 | arm64) echo arm64 ;;
        *) echo x86_64 ;;
    esac
}

# Refuses to deploy without a complete build: with no built template, sam deploy falls back
# to template.yaml, whose CodeUri is the project folder, and uploads all of it (target/ too).
require_build() {
    local function functions
    [[ -f "$build/template.yaml" ]] || {
        log "no $build/template.yaml: run sam build first (make deploy-local does)"
        return 1
    }
    mapfile -t functions < <("$tools" python infra/localstack/readback.py functions)
    ((${#functions[@]} > 0)) || {
        log "template.yaml has no function to deploy"
        return 1
    }
    for function in "${functions[@]}"; do
        [[ -f "$build/$function/bootstrap" ]] || {
            log "no $build/$function/bootstrap: the last sam build did not finish"
            return 1
        }
    done
}

sam_deploy() {
    local stack="$1"
    shift
    # No prompts (samconfig's local environment); generous bound for a busy machine. The
    # imports and items tables are retained by sam delete (DeletionPolicy: Retain): locally
    # without deletion protection, and deleted after the stack (delete_retained below).
    # LocalStack refuses the alarms on the event source mappings SAM generates ('Unresolved
    # resource dependencies': it resolves references before the SAM transform): left out here,
    # and readback.py reports them as not verifiable.
    timeout 1200 "$tools" sam deploy --config-file "$root/samconfig.toml" --config-env local \
        --stack-name "$stack" --template-file "$build/template.yaml" --no-progressbar \
        --parameter-overrides DeletionProtection=false EventSourceMappingAlarms=false "$@"
}

sam_delete() {
    timeout 1200 "$tools" sam delete --config-file "$root/samconfig.toml" --config-env local \
        --stack-name "$1" --no-prompts
}

aws_stack_exists() {
    "$tools" python - "$1" <<'PY'
import sys, boto3, botocore.exceptions
try:
    boto3.client("cloudformation").describe_stacks(StackName=sys.argv[1])
except botocore.exceptions.ClientError:
    sys.exit(1)
PY
}

up() {
    local stack="${STACK:-queue-workers-local}" arch started
    arch="$(host_arch)"
    "$localstack" up
    use_localstack
    step "sam build ($arch)"
    started="$(now)"
    "$tools" sam build --config-env local --build-dir "$build" \
        --parameter-overrides "Architecture=$arch"
    log "built in $(since "$started") s"
    require_build
    step "sam deploy --config-env local (stack $stack) into $AWS_ENDPOINT_URL"
    started="$(now)"
    sam_deploy "$stack" "Architecture=$arch"
    log "deployed in $(since "$started") s"
    if ! docker info >/dev/null 2>&1; then
        log "no Docker: the resources exist, the functions cannot run (see infra/README.md)"
    fi
}

down() {
    local stack="${STACK:-queue-workers-local}" started
    "$localstack" status >/dev/null || {
        log "LocalStack is not running: nothing to delete"
        return 0
    }
    use_localstack
    step "sam delete --config-env local (stack $stack)"
    started="$(now)"
    local record=target/deploy-local/down.json
    "$tools" python infra/localstack/readback.py record --stack "$stack" --record "$record"
    sam_delete "$stack"
    # The tables sam delete retains (DeletionPolicy: Retain) would stay in LocalStack.
    "$tools" python infra/localstack/readback.py gone --stack "$stack" --record "$record" \
        --delete-retained
    log "deleted in $(since "$started") s (LocalStack keeps running: make localstack-down)"
}

check() {
    local stack="${STACK:-queue-workers-check}" arch="${ARCH:-x86_64}" out=target/deploy-local
    # The tools venv's Python has boto3 and PyYAML (tools.sh puts it first on PATH).
    local readback=("$tools" python infra/localstack/readback.py)
    local started t_deploy t_update t_delete t_total
    t_total="$(now)"
    require_build
    if ! "$localstack" status >/dev/null 2>&1; then
        trap '"$localstack" down' EXIT
        "$localstack" up
    fi
    use_localstack
    mkdir -p "$out"
    # Host mode: LocalStack forwards DynamoDB to the emulator; check the tables land there.
    local emulator_args=()
    if [[ "$("$localstack" status)" == *"host mode"* ]]; then
        emulator_args=(--emulator "$emulator_url")
    fi

    if aws_stack_exists "$stack"; then
        step "a stack $stack is left from an earlier check: deleting it first"
        sam_delete "$stack"
    fi

    step "sam deploy: stack $stack from $build ($arch)"
    started="$(now)"
    sam_deploy "$stack" "Architecture=$arch"
    t_deploy="$(since "$started")"
    step "read back every resource"
    "${readback[@]}" check --stack "$stack" --record "$out/created.json" \
        --parameter "Architecture=$arch" --parameter EventSourceMappingAlarms=false \
        "${emulator_args[@]}"

    local update name value
    update="$("${readback[@]}" update-parameter)"
    read -r name value <<<"$update"
    step "update: $name -> $value (what derives from it must follow: a queue's visibility, the redrive policies)"
    started="$(now)"
    sam_deploy "$stack" "Architecture=$arch" "$name=$value"
    t_update="$(since "$started")"
    "${readback[@]}" check --stack "$stack" --record "$out/updated.json" \
        --parameter "Architecture=$arch" --parameter "$name=$value" \
        --parameter EventSourceMappingAlarms=false \
        --same-as "$out/created.json" "${emulator_args[@]}"

    step "sam delete"
    started="$(now)"
    sam_delete "$stack"
    t_delete="$(since "$started")"
    step "nothing left behind"
    "${readback[@]}" gone --stack "$stack" --record "$out/updated.json" --delete-retained \
        "${emulator_args[@]}"

    printf '\ntimings: deploy %s s, update %s s, delete %s s, whole check %s s\n' \
        "$t_deploy" "$t_update" "$t_delete" "$(since "$t_total")"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    check) check ;;
    *)
        echo "usage: $0 up|down|check" >&2
        exit 2
        ;;
esac
