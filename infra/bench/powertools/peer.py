"""Per-record overhead of Powertools for AWS Lambda (Python) batch processing: the peer of the Rust
bench in shared/queue-worker/benches/batch_overhead.rs, on the same workload.

Cases, each on SQS events of 10 and 100 records:

  noop     BatchProcessor(EventType.SQS) driven by process_partial_response, around a record
           handler that does no work.
  guarded  the same, with the record handler wrapped in idempotent_function, keyed on the message
           id, over an in-memory persistence layer. Every invocation gets a fresh store, so every
           record claims a new key and completes it, as the Rust bench's iter_batched does.

One sample is one timed invocation (process_partial_response on the whole event); building the
fresh store and handler for it is not timed. Each case warms up, then samples for --seconds, and
reports the median and p90 of the per-record time (invocation time / batch size).

Run it through run.sh beside this file, which installs the pinned packages first. Prints JSON to
stdout, or writes it to --json PATH; a one-line summary per case goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
    STATUS_CONSTANTS,
    DataRecord,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:import-jobs"
FUNCTION_NAME = "import-processor"

# Lambda's longest timeout; the idempotency utility bounds each in-progress claim by the time left.
INVOCATION_TIMEOUT_S = 900

# A case keeps sampling past --seconds until it has at least this many samples.
MIN_SAMPLES = 20

RecordHandler = Callable[..., Any]


class InMemoryPersistenceLayer(BasePersistenceLayer):
    """Idempotency records in a dict, the counterpart of the Rust bench's InMemoryStore.

    Claims follow the DynamoDB layer's conditional write: a key can be claimed when it has no
    record, when its record has expired, or when it is in progress and the invocation that claimed
    it has run out of time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, DataRecord] = {}

    def statuses(self) -> list[str]:
        """The status of every stored record."""
        return [record.status for record in self._records.values()]

    def _get_record(self, idempotency_key: str) -> DataRecord:
        try:
            return self._records[idempotency_key]
        except KeyError:
            raise IdempotencyItemNotFoundError(idempotency_key) from None

    def _put_record(self, data_record: DataRecord) -> None:
        existing = self._records.get(data_record.idempotency_key)
        if existing is not None and not _claimable(existing):
            # Handing the record back saves the utility a read, which is also where it would have
            # checked the payload, so check it here (as the DynamoDB layer does).
            self._validate_payload(data_payload=data_record, stored_data_record=existing)
            raise IdempotencyItemAlreadyExistsError(old_data_record=existing)
        self._records[data_record.idempotency_key] = data_record

    def _update_record(self, data_record: DataRecord) -> None:
        self._records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        self._records.pop(data_record.idempotency_key, None)


def _claimable(record: DataRecord) -> bool:
    if record.is_expired:
        return True
    lease_ms = record.in_progress_expiry_timestamp
    return (
        record.status == STATUS_CONSTANTS["INPROGRESS"]
        and lease_ms is not None
        and lease_ms < time.time() * 1000
    )


class BenchLambdaContext(LambdaContext):
    """A stand-in for the runtime's context object, with a real countdown for the time left."""

    def __init__(self) -> None:
        self._function_name = FUNCTION_NAME
        self._function_version = "$LATEST"
        self._invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION_NAME}"
        self._memory_limit_in_mb = 256
        self._aws_request_id = "6f1c2b8e-0000-4000-8000-000000000000"
        self._log_group_name = f"/aws/lambda/{FUNCTION_NAME}"
        self._log_stream_name = "2025/01/01/[$LATEST]00000000000000000000000000000000"
        self._deadline = time.monotonic() + INVOCATION_TIMEOUT_S

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(records: int) -> dict[str, Any]:
    """An SQS event as Lambda delivers it, with the Rust bench's ids and bodies."""
    return {"Records": [_sqs_record(i) for i in range(records)]}


def _sqs_record(i: int) -> dict[str, Any]:
    body = f'{{"importId":"imp-{i}","objectKey":"uploads/{i}.csv"}}'
    return {
        "messageId": f"4c2b1d3e-0000-4000-8000-{i:012}",
        "receiptHandle": f"receipt-{i}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": REGION,
    }


def idempotency_config(context: LambdaContext) -> IdempotencyConfig:
    # The key is the message id. The body is hashed into each record and checked on a repeat
    # delivery, as the Rust guard stores a hash of the payload with every claim.
    config = IdempotencyConfig(event_key_jmespath="messageId", payload_validation_jmespath="body")
    config.register_lambda_context(context)
    return config


# Module-level, as in a real function: these serve every invocation.
PROCESSOR = BatchProcessor(event_type=EventType.SQS)
CONTEXT = BenchLambdaContext()
CONFIG = idempotency_config(CONTEXT)


def noop_record_handler(record: SQSRecord) -> None:
    """Does no work: what is measured is the batch processor around it."""


def guarded_record_handler(store: InMemoryPersistenceLayer) -> RecordHandler:
    """A record handler that does no work, made idempotent over `store`."""

    @idempotent_function(data_keyword_argument="record", persistence_store=store, config=CONFIG)
    def handle(record: SQSRecord) -> None:
        """Does no work: what is measured is the claim and completion around it."""

    return handle


def fresh_guarded_handler() -> RecordHandler:
    """The guarded handler over a new, empty store: every record of the next invocation is a new
    key, so each one is claimed and completed."""
    return guarded_record_handler(InMemoryPersistenceLayer())


def invoke(event: dict[str, Any], handler: RecordHandler) -> None:
    """One invocation, as a Lambda handler built on Powertools makes it."""
    response = process_partial_response(
        event=event, record_handler=handler, processor=PROCESSOR, context=CONTEXT
    )
    if response["batchItemFailures"]:
        # A failing record would time the error path instead of the overhead.
        raise RuntimeError(f"records failed: {response['batchItemFailures']}")


def check_guarded(event: dict[str, Any]) -> None:
    """Fails unless every record of the event leaves a completed idempotency record behind, which
    proves the guarded case measures a claim and a completion per record."""
    store = InMemoryPersistenceLayer()
    invoke(event, guarded_record_handler(store))
    statuses = store.statuses()
    completed = STATUS_CONSTANTS["COMPLETED"]
    if len(statuses) != len(event["Records"]) or any(status != completed for status in statuses):
        raise RuntimeError(
            f"expected {len(event['Records'])} completed idempotency records, found {statuses} "
            "(is POWERTOOLS_IDEMPOTENCY_DISABLED set?)"
        )


def sample(
    event: dict[str, Any], next_handler: Callable[[], RecordHandler], seconds: float
) -> list[int]:
    """Times one invocation after another for `seconds` of wall time (at least MIN_SAMPLES of
    them); returns each invocation's time in nanoseconds. `next_handler` is called untimed."""
    samples: list[int] = []
    end = time.perf_counter_ns() + int(seconds * 1e9)
    while time.perf_counter_ns() < end or len(samples) < MIN_SAMPLES:
        handler = next_handler()
        start = time.perf_counter_ns()
        invoke(event, handler)
        samples.append(time.perf_counter_ns() - start)
    return samples


def run_case(
    name: str, batch: int, next_handler: Callable[[], RecordHandler], seconds: float, warmup: float
) -> dict[str, Any]:
    event = sqs_event(batch)
    sample(event, next_handler, warmup)
    gc.collect()
    per_record_us = [ns / batch / 1000 for ns in sample(event, next_handler, seconds)]
    p90 = statistics.quantiles(per_record_us, n=10, method="inclusive")[-1]
    case = {
        "name": name,
        "batch": batch,
        "median_us_per_record": round(statistics.median(per_record_us), 3),
        "p90_us_per_record": round(p90, 3),
        "iterations": len(per_record_us),
    }
    print(
        f"{name:>8} x {batch:<3}  median {case['median_us_per_record']:8.2f} us/record"
        f"  p90 {case['p90_us_per_record']:8.2f} us/record  ({case['iterations']} iterations)",
        file=sys.stderr,
    )
    return case


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="sampling time per case")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up time per case")
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 100], help="batch sizes")
    parser.add_argument("--json", metavar="PATH", help="write the results here, not to stdout")
    args = parser.parse_args()

    cases = []
    for batch in args.batch:
        cases.append(
            run_case("noop", batch, lambda: noop_record_handler, args.seconds, args.warmup)
        )
        check_guarded(sqs_event(batch))
        cases.append(run_case("guarded", batch, fresh_guarded_handler, args.seconds, args.warmup))

    report = {
        "python": platform.python_version(),
        "powertools": version("aws-lambda-powertools"),
        "cases": cases,
    }
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
