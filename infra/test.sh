#!/usr/bin/env bash
# `make test`: every test tier, in order, failing fast.
#   1. Cargo.lock up to date; dependency licenses and sources (cargo-deny); `make check`:
#      formatting, lints, unit tests (no AWS endpoint), the library built and tested without
#      the rest of the workspace
#   2. the bench targets build
#   3. the no-Docker emulator, started here unless already running, and stopped on exit
#      (also when a test fails) only if this script started it
#   4. integration tests against it (including the template's invariants), the fork check
#      (infra/fork-check.sh: each marked example removed in a scratch copy, then make check, the
#      integration tests and the template's validation there), then the demo with a small burst
#   5. the LocalStack tier: the same integration tests and demo with SQS and S3 on LocalStack
#      (host mode, no Docker; needs Python >= 3.13) and DynamoDB on the emulator
#   6. template.yaml: sam validate --lint, cfn-lint, and sam build for x86_64
#   7. that build deployed into LocalStack (host mode) with sam deploy, every resource read
#      back and checked against the template, a parameter update, sam delete
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

emulator=infra/emulator/emulator.sh
step() { printf '\n==> %s\n' "$*"; }

step "Cargo.lock matches Cargo.toml (as --locked would check)"
cargo metadata --locked --format-version 1 >/dev/null

step "dependencies: licenses, bans and sources (deny.toml)"
infra/tools/deny.sh

step "make check: format, clippy, unit tests, the library alone"
make --no-print-directory check

step "bench targets build (make bench runs them)"
cargo build --workspace --benches --bins --profile dev

step "emulator"
if "$emulator" status >/dev/null 2>&1; then
    echo "using the emulator that is already running"
else
    trap '"$emulator" down' EXIT
    "$emulator" up
    # Starting twice must find the running emulator, not start a second one.
    first="$("$emulator" status)"
    "$emulator" up 2>&1 | grep -q "already running"
    [[ "$("$emulator" status)" == "$first" ]] || { echo "a second 'up' changed the emulator" >&2; exit 1; }
fi
eval "$("$emulator" env)"

step "integration tests: the harness's and every domain's (tests/domains/*)"
cargo test -p '*-tests'

step "fork check: the workspace without each marked example builds, tests and validates"
infra/fork-check.sh

step "demo: a small burst through each domain's local pipeline"
infra/demo.sh --requests 60 --timeout 300

step "LocalStack tier"
infra/test-localstack.sh

tools=infra/tools/tools.sh
step "template: sam validate --lint, cfn-lint"
"$tools" sam validate --lint --region us-east-1
"$tools" cfn-lint template.yaml

step "template: sam build (x86_64)"
"$tools" sam build --parameter-overrides Architecture=x86_64

step "template: sam deploy of that build into LocalStack, read back, update, delete"
ARCH=x86_64 infra/localstack/deploy.sh check
