#!/usr/bin/env bash
# The fork check (`make fork-check`, run by `make test`): a fork that removes an example keeps a
# workspace that builds, tests and validates. For example NAME, or with no NAME for every domain
# under tests/domains/ whose resources template.yaml marks (`# example: NAME`), in a scratch copy
# of this checkout (tracked and untracked files, nothing ignored) the example is removed the way
# README "Fork it" says (infra/remove-example.sh NAME); then, there:
#   1. make check: format, clippy, unit tests, the library alone
#   2. the integration tests of what remains (every *-tests package) against the emulator
#   3. template.yaml: sam validate --lint and cfn-lint
# The scratch copy is always target/fork-check/copy and builds into target/fork-check/target.
# Cargo names a workspace crate's artifacts by its path inside the workspace, not by the
# checkout's, and does not rebuild when only the checkout moved: a crate compiled in one copy
# passes as up to date in another with the first copy's paths baked in (env!
# ("CARGO_MANIFEST_DIR")). So the copy has one fixed path, every example's check reuses it,
# and its target directory is not this checkout's. It uses this checkout's venvs; the emulator
# is the one running (started here and stopped again otherwise). The copy is deleted on exit.
#   infra/fork-check.sh [NAME]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
# shellcheck source=infra/lib/common.sh
source infra/lib/common.sh
export CARGO_TARGET_DIR="$root/target/fork-check/target"
copy="$root/target/fork-check/copy"

scratch=""
cleanup() { [[ -z "$scratch" ]] || rm -rf "$scratch"; }
trap cleanup EXIT

emulator="$root/infra/emulator/emulator.sh"
if [[ -z "${AWS_ENDPOINT_URL:-}${AWS_ENDPOINT_URL_SQS:-}" ]]; then
    if ! "$emulator" status >/dev/null 2>&1; then
        trap 'cleanup; "$emulator" down' EXIT
        "$emulator" up
    fi
    eval "$("$emulator" env)"
fi

without() {
    local example="$1"
    step() { printf '\n==> fork check (without %s): %s\n' "$example" "$*"; }
    cleanup
    scratch="$copy"
    rm -rf "$scratch" && mkdir -p "$scratch"
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' file; do [[ -e "$file" ]] && printf '%s\0' "$file"; done |
        tar --null -T - -cf - | tar -xf - -C "$scratch"

    step "remove it (infra/remove-example.sh $example)"
    (cd "$scratch" && infra/remove-example.sh "$example")

    step "make check"
    make --no-print-directory -C "$scratch" check

    step "integration tests of what remains"
    (cd "$scratch" && cargo test -p '*-tests')

    step "template: sam validate --lint, cfn-lint"
    (cd "$scratch" && "$root/infra/tools/tools.sh" sam validate --lint --region us-east-1 &&
        "$root/infra/tools/tools.sh" cfn-lint template.yaml)
    echo "fork check passed: without $example, the workspace builds, tests and validates"
}

if (($# > 0)); then
    without "$1"
    exit 0
fi
checked=0
while read -r _ name; do
    if grep -qE "^[[:space:]]*# example: ${name}$" template.yaml; then
        without "$name"
        checked=$((checked + 1))
    fi
done < <(domain_packages)
echo "fork check: $checked example(s) removed and checked"
