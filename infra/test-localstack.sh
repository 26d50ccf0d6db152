#!/usr/bin/env bash
# `make test-localstack`: the SQS- and S3-dependent integration tests and the end-to-end demo
# against LocalStack (host mode without Docker: SQS and S3 on LocalStack, DynamoDB on the
# emulator). Starts LocalStack unless it is already running, and then stops it again.
#   infra/test-localstack.sh [--imports N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

localstack=infra/localstack/localstack.sh
imports=60
[[ "${1:-}" == "--imports" ]] && imports="$2"

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
cargo test -p integration-tests --test it -- batch_sqs:: esm:: ops:: processor:: producer_api:: \
    provision::

printf '\n==> demo against LocalStack\n'
cargo run --quiet -p local-runner -- demo --imports "$imports" --rows 10 --timeout 300
