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
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402

from shequ.config import interpolate  # noqa: E402
from shequ.discovery import load_service, service_config  # noqa: E402


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
        if not stopping.ready():
            stopping.send(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    runner.start()
    logging.getLogger(__name__).info(
        "%s serving on %s", args.service, config.get("WEB_SERVER_ADDRESS")
    )

    def stop_when_asked() -> None:
        stopping.wait()
        with eventlet.Timeout(20, False):
            runner.stop()
        runner.kill()

    eventlet.spawn(stop_when_asked)
    try:
        runner.wait()
    except Exception:
        logging.getLogger(__name__).exception("%s stopped with an error", args.service)
        return 1
    return 0 if stopping.ready() else 1


if __name__ == "__main__":
    sys.exit(main())
