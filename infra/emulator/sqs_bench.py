"""How much an SQS call costs the emulator when a standard queue is deep.

Fills queues to DEPTH messages, then times, in milliseconds per call:
  receive+delete   ReceiveMessage (10) and DeleteMessageBatch of what it got, on DEPTH visible
                   messages (each loop takes 10 off; the depth stays about DEPTH)
  change vis.      ChangeMessageVisibility of the one in-flight message, behind DEPTH - 1
                   delayed messages (the last message of the queue)
  empty receive    ReceiveMessage that finds nothing: DEPTH - 1 delayed, one in flight
  attributes       GetQueueAttributes ApproximateNumberOf*
Run it with the emulator's python against a running emulator, never a shared one:
    .venv/emulator/bin/python infra/emulator/sqs_bench.py http://127.0.0.1:5077 [DEPTH]
"""

import sys
import time
import uuid

import boto3


def fill(sqs, url, count, delay=0):
    started = time.monotonic()
    for first in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": f"m{first + i}", "DelaySeconds": delay}
            for i in range(min(10, count - first))
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return time.monotonic() - started


def per_call(label, calls, body):
    started = time.monotonic()
    for _ in range(calls):
        body()
    ms = (time.monotonic() - started) * 1000 / calls
    print(f"{label:<16} {ms:9.2f} ms/call  ({calls} calls)", flush=True)


def main():
    endpoint = sys.argv[1]
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    if depth < 1000:
        sys.exit("DEPTH must be at least 1000: the receive loop takes 200 messages")
    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    tag = uuid.uuid4().hex[:8]
    visible = sqs.create_queue(QueueName=f"bench-visible-{tag}")["QueueUrl"]
    hidden = sqs.create_queue(QueueName=f"bench-hidden-{tag}")["QueueUrl"]
    try:
        print(f"fill {depth} visible: {fill(sqs, visible, depth):.1f} s", flush=True)
        print(f"fill {depth - 1} delayed: {fill(sqs, hidden, depth - 1, 900):.1f} s", flush=True)
        sqs.send_message(QueueUrl=hidden, MessageBody="last")

        def receive_delete():
            got = sqs.receive_message(QueueUrl=visible, MaxNumberOfMessages=10)["Messages"]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ]
            sqs.delete_message_batch(QueueUrl=visible, Entries=entries)

        per_call("receive+delete", 20, receive_delete)
        (last,) = sqs.receive_message(QueueUrl=hidden, VisibilityTimeout=600)["Messages"]
        assert last["Body"] == "last", last["Body"]
        handle = last["ReceiptHandle"]
        per_call(
            "change vis.",
            50,
            lambda: sqs.change_message_visibility(
                QueueUrl=hidden, ReceiptHandle=handle, VisibilityTimeout=600
            ),
        )
        per_call(
            "empty receive",
            20,
            lambda: sqs.receive_message(QueueUrl=hidden, MaxNumberOfMessages=10).get("Messages")
            and sys.exit("a delayed or in-flight message was received"),
        )
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        per_call(
            "attributes",
            20,
            lambda: sqs.get_queue_attributes(QueueUrl=hidden, AttributeNames=names),
        )
        print(sqs.get_queue_attributes(QueueUrl=hidden, AttributeNames=names)["Attributes"])
    finally:
        sqs.delete_queue(QueueUrl=visible)
        sqs.delete_queue(QueueUrl=hidden)


if __name__ == "__main__":
    main()
