"""The dev front door: one port that routes path prefixes like the Kubernetes Ingress.

werkzeug's ``ProxyMiddleware`` forwards each prefix to the owning service's
own port; anything else is a problem+json 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from werkzeug.middleware.http_proxy import ProxyMiddleware
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

# Prefix -> service, as in deploy/k8s (the Ingress) and ARCHITECTURE.md.
ROUTES: dict[str, str] = {
    "/open311/": "grid",
    "/sla/": "grid",
    "/board/": "disclosure",
}


def routes_for(services: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """ProxyMiddleware targets for services by name -> base URL (``http://host:port``)."""
    targets: dict[str, dict[str, Any]] = {}
    for name, base in services.items():
        prefix = f"/api/v1/{name}/"
        targets[prefix] = {"target": f"{base}{prefix}"}
    for prefix, name in ROUTES.items():
        if name in services:
            targets[prefix] = {"target": f"{services[name]}{prefix}"}
    return targets


@Request.application
def _not_found(request: Request) -> Response:
    body = {
        "type": "about:blank",
        "title": "Not found",
        "status": 404,
        "detail": f"no service serves {request.path}",
    }
    return Response(json.dumps(body), status=404, mimetype="application/problem+json")


class FrontDoor:
    """A threaded werkzeug server in this process (the ``shequ up`` process)."""

    def __init__(self, host: str, port: int, services: Mapping[str, str]) -> None:
        app = ProxyMiddleware(_not_found, routes_for(services))
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
