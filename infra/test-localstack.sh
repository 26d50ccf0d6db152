#!/usr/bin/env bash
# `make test-localstack`: the SQS- and S3-dependent integration tests and the end-to-end demo
# against LocalStack (host mode without Docker: SQS and S3 on LocalStack, DynamoDB on the
# emulator). Starts LocalStack unless it is already running, and then stops it again.
#   infra/test-localstack.sh [--requests N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

localstack=infra/localstack/localstack.sh
# shellcheck source=infra/lib/common.sh
source infra/lib/common.sh
requests=60
[[ "${1:-}" == "--requests" ]] && requests="$2"

if ! "$localstack" status >/dev/null 2>&1; then
    trap '"$localstack" down' EXIT
    "$localstack" up
fi
eval "$("$localstack" env)"
# LocalStack has SQS's message move task: the ops tests must see it work.
export EXPECT_MESSAGE_MOVE_TASK=1
echo "endpoints: SQS ${AWS_ENDPOINT_URL_SQS:-$AWS_ENDPOINT_URL}, S3 ${AWS_ENDPOINT_URL_S3:-$AWS_ENDPOINT_URL}, DynamoDB ${AWS_ENDPOINT_URL_DYNAMODB:-$AWS_ENDPOINT_URL}"

# The tests that use SQS or S3. The guard's and the template's tests use only DynamoDB (on the
# emulator in both tiers) or no endpoint, and already ran in the emulator tier.
printf '\n==> SQS- and S3-dependent integration tests against LocalStack\n'
cargo test -p integration-tests --test it -- batch_sqs:: esm:: ops::
# Every domain's own integration tests use SQS or S3.
while read -r package _; do
    cargo test -p "$package" --test it
done < <(domain_packages)

printf '\n==> demo against LocalStack\n'
infra/demo.sh --requests "$requests" --timeout 300
