"""The emulator: moto's server, with DynamoDB's conditional writes made atomic.

moto serves each request on its own thread and checks a write's condition in Python, so two
concurrent `PutItem ... attribute_not_exists(pk)` on one key can both see "absent" and both
succeed when the interpreter switches threads between the check and the write. Real DynamoDB
never lets that happen, and the idempotency guard relies on it. Here every DynamoDB request
runs under one lock, the way DynamoDB applies the writes to one item one at a time. Other
services stay concurrent: an SQS long poll must not hold up the rest.

It also listens with the kernel's largest accept backlog. werkzeug listens with a backlog of
128; a test that opens a thousand connections at once (the guard's race tests do) overflows it,
the kernel drops the SYNs it has no room for, and the client retries them after 1 s and 3 s,
past the AWS SDK's 3.1 s connect timeout when the machine is busy. With room for every
connection in the backlog, each connect completes in the kernel at once and waits there for
this server's accept loop, however slowly that runs.

And its standard SQS queues are indexed (sqs_fast.py): moto walks every message of a queue on
each receive, delete and change of visibility, so a 10,000-message soak would crawl.

Usage: serve.py [-H HOST] [-p PORT]
"""

import argparse
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, run_simple

import sqs_fast


class AtomicDynamoDb:
    """WSGI middleware: DynamoDB requests (X-Amz-Target DynamoDB_*) run one at a time."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            # The body is produced inside the lock: a lazy iterable would do the work after it.
            return list(self.app(environ, start_response))


def listen_backlog():
    """The kernel's ceiling on a listen backlog (net.core.somaxconn); listen() caps to it."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(int(f.read()), 128)
    except (OSError, ValueError):
        return 4096


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5055)
    args = parser.parse_args()
    # moto builds some URLs (queue URLs among them) from this.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    BaseWSGIServer.request_queue_size = listen_backlog()
    sqs_fast.install()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        AtomicDynamoDb(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
