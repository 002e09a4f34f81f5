"""Runs one service in this process: ``python -m shequ.runner SERVICE --http HOST:PORT``.

One process per service, as in Kubernetes one pod per service: nameko answers
404 on every route when two HTTP services share a process, and fault tests
need to kill one service alone. eventlet is patched here, first, and nowhere
in service code.
"""

from __future__ import annotations

import eventlet

if __name__ == "__main__":  # patch first, and only in a service process
    eventlet.monkey_patch()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402

from shequ import startup  # noqa: E402
from shequ.config import interpolate  # noqa: E402
from shequ.discovery import load_service, service_config  # noqa: E402

log = logging.getLogger(__name__)

#: How long a graceful stop may take (running workers finish), then a kill.
#: Kubernetes' default grace period is 30 s; ``shequ up`` waits 25 s.
STOP_SECONDS = 20.0
KILL_SECONDS = 3.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shequ.runner", description=__doc__)
    parser.add_argument(
        "service", help="a name from the shequ.services entry points, or module:Class"
    )
    parser.add_argument("--http", help="HOST:PORT for the service's HTTP server")
    args = parser.parse_args(argv)

    try:
        service_cls = load_service(args.service)
    except (LookupError, ImportError, AttributeError) as exc:
        parser.error(str(exc))
    config = service_config(service_cls)
    if args.http:
        config["WEB_SERVER_ADDRESS"] = args.http
    config = interpolate(config)
    logging.basicConfig(
        level=config.get("LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {service_cls.name} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kombu").setLevel(logging.WARNING)

    runner = ServiceRunner(config)
    runner.add_service(service_cls)
    stopping = eventlet.event.Event()

    def request_stop(signum: int, frame: Any) -> None:
        startup.SHUTDOWN.set()  # a start-up step waiting for a server gives up
        if not stopping.ready():
            stopping.send(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Listening from the start: a signal while the service still starts
    # (waiting for its store, say) stops it too.
    eventlet.spawn(stop_when_asked, runner, stopping, args.service)
    try:
        runner.start()
    except Exception:
        if stopping.ready():
            log.info("%s stopped while starting", args.service)
            return 0
        log.exception("%s failed to start", args.service)
        return 1
    log.info("%s serving on %s", args.service, config.get("WEB_SERVER_ADDRESS"))
    try:
        runner.wait()
    except Exception:
        log.exception("%s stopped with an error", args.service)
        return 1
    return 0 if stopping.ready() else 1


def stop_when_asked(runner: ServiceRunner, stopping: eventlet.event.Event, service: str) -> None:
    """Stop gracefully, then by force, then leave: each step within its own bound.

    nameko's stop waits for running workers; its kill still waits for
    extensions, and a queue consumer retrying a broker that is gone never
    finishes. Kubernetes and ``shequ up`` SIGKILL a process that overstays,
    but a service run by hand (or by another supervisor) must end on its own.
    """
    stopping.wait()
    with eventlet.Timeout(STOP_SECONDS, False):
        runner.stop()
        return
    log.warning("%s did not stop within %g s; killing its services", service, STOP_SECONDS)
    with eventlet.Timeout(KILL_SECONDS, False):
        runner.kill()
        return
    log.error("%s did not end within %g s of being killed; exiting", service, KILL_SECONDS)
    logging.shutdown()
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
