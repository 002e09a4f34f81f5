"""A bureau's consumer of Shequ events: plain pika, standard library otherwise.

Copy this file and change ``process()``. What the rest already does for you:

* parses each message as a CloudEvents 1.0 structured-mode JSON object and
  checks the envelope;
* reads the payload version from ``dataschema`` and handles only the
  versions listed in ``UNDERSTOOD``; other versions of a type are acked and
  skipped (during a deprecation period the platform publishes a change in
  both the old and the new version, so you receive each change once per
  version);
* processes each event id once: the event's row in ``processed`` and your
  effects commit in one SQLite transaction, so a redelivered or duplicated
  event (delivery is at least once) changes nothing;
* acks only after that commit, so a crash before it means a redelivery,
  never a loss;
* reconnects with exponential back-off (and jitter) when the broker goes
  away or ``process()`` fails (the unacked message then comes back), and
  stops cleanly on SIGINT/SIGTERM.

Run ``python subscriber.py --help``. It prints one JSON line per message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

import pika
import pika.exceptions

log = logging.getLogger("bureau_subscriber")

#: The payload versions this consumer was written against, per event type.
#: ``None`` means any type is recorded (the generic ``process`` below handles
#: every type the bureau was given); list the types you rely on instead.
UNDERSTOOD: dict[str, set[int]] | None = None
DEFAULT_VERSIONS = {1}

_DATASCHEMA = re.compile(r"^urn:shequ:schema:(?P<name>[a-z_]+\.[a-z_.]+):v(?P<version>\d+)$")
_REQUIRED = ("specversion", "id", "source", "type", "subject", "time", "dataschema", "data")

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    processed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time TEXT NOT NULL,
    data TEXT NOT NULL
);
"""


class ProcessingFailed(RuntimeError):
    """``process()`` failed: nothing was committed, so the message is retried later."""


class BadEvent(ValueError):
    """Not a Shequ CloudEvent: retrying cannot help, so it is rejected, not requeued."""


def parse(body: bytes) -> tuple[dict[str, Any], int]:
    """The event and its payload version, or ``BadEvent``."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise BadEvent("not a JSON object")
    missing = [name for name in _REQUIRED if name not in event]
    if missing:
        raise BadEvent(f"missing CloudEvents attributes: {', '.join(missing)}")
    if event["specversion"] != "1.0":
        raise BadEvent(f"unsupported specversion {event['specversion']!r}")
    match = _DATASCHEMA.match(str(event["dataschema"]))
    if not match:
        raise BadEvent(f"unrecognised dataschema {event['dataschema']!r}")
    if event["type"] != f"shequ.{match['name']}":
        raise BadEvent(f"type {event['type']!r} does not match dataschema {match['name']!r}")
    if not isinstance(event["data"], dict):
        raise BadEvent("data is not an object")
    return event, int(match["version"])


def understood(event_type: str, version: int) -> bool:
    if UNDERSTOOD is None:
        return version in DEFAULT_VERSIONS
    return version in UNDERSTOOD.get(event_type, set())


def process(db: sqlite3.Connection, event: dict[str, Any], version: int) -> None:
    """Your bureau's work; it runs inside the transaction that marks the event processed.

    Keep side effects outside the database (calling another system) idempotent
    on ``event["id"]`` too, or do them after the commit from a table of your own.
    """
    db.execute(
        "INSERT INTO events (event_id, type, subject, time, data) VALUES (?, ?, ?, ?, ?)",
        (event["id"], event["type"], event["subject"], event["time"], json.dumps(event["data"])),
    )


def handle(db: sqlite3.Connection, body: bytes) -> dict[str, Any]:
    """Process one message exactly once; returns what happened (for the log line)."""
    try:
        event, version = parse(body)
    except BadEvent as exc:
        return {"outcome": "rejected", "error": str(exc)}
    outcome = "processed" if understood(event["type"], version) else "skipped_version"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with db:  # one transaction: the mark and the effects, or neither
        inserted = db.execute(
            "INSERT OR IGNORE INTO processed (event_id, type, version, outcome, processed_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (event["id"], event["type"], version, outcome, now),
        ).rowcount
        if not inserted:
            outcome = "duplicate"
        elif outcome == "processed":
            process(db, event, version)
    return {
        "outcome": outcome,
        "id": event["id"],
        "type": event["type"],
        "version": version,
        "subject": event["subject"],
    }


class Subscriber:
    def __init__(self, uri: str, queue: str, db_path: str, prefetch: int = 20) -> None:
        self.uri = uri
        self.queue = queue
        self.prefetch = prefetch
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.db.isolation_level = "DEFERRED"
        self.stopped = threading.Event()
        self.channel: Any = None

    def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            result = handle(self.db, body)
        except Exception as exc:
            # Rolled back and not acked: leaving the connection returns the
            # message to the queue, and it is tried again after the back-off.
            raise ProcessingFailed(f"{type(exc).__name__}: {exc}") from exc
        result["redelivered"] = bool(method.redelivered)
        if result["outcome"] == "rejected":
            # Dead-letters it if you gave your queue an x-dead-letter-exchange.
            channel.basic_reject(method.delivery_tag, requeue=False)
        else:
            channel.basic_ack(method.delivery_tag)
        print(json.dumps(result), flush=True)

    def run(self, max_backoff: float = 30.0) -> None:
        """Consume until stopped, reconnecting with back-off whenever the connection fails."""
        backoff = 1.0
        while not self.stopped.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(pika.URLParameters(self.uri))
                self.channel = connection.channel()
                self.channel.basic_qos(prefetch_count=self.prefetch)
                self.channel.basic_consume(self.queue, self.on_message)
                print(json.dumps({"outcome": "consuming", "queue": self.queue}), flush=True)
                backoff = 1.0
                self.channel.start_consuming()
            except pika.exceptions.ProbableAuthenticationError:
                log.error("the broker refused these credentials; ask the district for new ones")
                raise
            except (pika.exceptions.AMQPError, OSError, ProcessingFailed) as exc:
                if self.stopped.is_set():
                    break
                wait = min(backoff, max_backoff) * random.uniform(0.5, 1.0)
                log.warning(
                    "consuming stopped (%s: %s); reconnecting in %.1f s",
                    type(exc).__name__,
                    exc,
                    wait,
                )
                print(
                    json.dumps({"outcome": "reconnecting", "in_seconds": round(wait, 2)}),
                    flush=True,
                )
                self.stopped.wait(wait)
                backoff *= 2
            finally:
                if connection is not None and connection.is_open:
                    connection.close()

    def stop(self) -> None:
        """Finish the message in hand, then leave (safe from a signal handler)."""
        self.stopped.set()
        if self.channel is not None and self.channel.is_open:
            self.channel.connection.add_callback_threadsafe(self.channel.stop_consuming)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Consume Shequ events from a bureau's queue.")
    parser.add_argument(
        "--uri",
        default=os.environ.get("SHEQU_BUREAU_AMQP_URI"),
        help="amqp_uri from `shequ bureau add` (or SHEQU_BUREAU_AMQP_URI)",
    )
    parser.add_argument(
        "--queue",
        default=os.environ.get("SHEQU_BUREAU_QUEUE"),
        help="queue from `shequ bureau add` (or SHEQU_BUREAU_QUEUE)",
    )
    parser.add_argument("--db", default="events.sqlite", help="SQLite file (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.uri or not args.queue:
        parser.error("--uri and --queue are required (or set the environment variables)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    subscriber = Subscriber(args.uri, args.queue, args.db)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: subscriber.stop())
    try:
        subscriber.run()
    except pika.exceptions.ProbableAuthenticationError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
