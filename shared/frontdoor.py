"""The dev front door: one port that routes path prefixes like the Kubernetes Ingress.

werkzeug's ``ProxyMiddleware`` forwards each prefix to the owning service's
own port; anything else is a problem+json 404.

Like the Ingress (nginx's ``proxy-body-size``), the front door refuses a body
over the platform's limit itself, with the same problem+json 413 a service
gives. Left to the service, the refusal races the proxy still streaming the
body: the service answers and closes, the proxy's upload breaks, and the
client sees a 502 instead of the 413.

It also appends the caller's address to ``X-Forwarded-For``, as the Ingress
does, so a service's per-client rate limit sees the caller and not the front
door (``TRUSTED_PROXY_HOPS``), and answers its own problems with the same
security headers a service adds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from werkzeug.middleware.http_proxy import ProxyMiddleware
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from shequ.http import DEFAULT_MAX_BODY_BYTES, SECURITY_HEADERS

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


def _problem(status: int, title: str, detail: str) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(
        json.dumps(body),
        status=status,
        headers=dict(SECURITY_HEADERS),
        mimetype="application/problem+json",
    )


@Request.application
def _not_found(request: Request) -> Response:
    return _problem(404, "Not found", f"no service serves {request.path}")


class BodyLimit:
    """WSGI middleware: a declared body over ``max_body`` bytes is 413, never proxied.

    It records the caller in ``X-Forwarded-For`` on the way through.
    """

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = environ.get("REMOTE_ADDR") or "unknown"
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        environ["HTTP_X_FORWARDED_FOR"] = f"{forwarded}, {peer}" if forwarded else peer
        length = Request(environ).content_length
        if length is not None and length > self.max_body:
            response = _problem(
                413,
                "Request body too large",
                f"the body has {length} bytes; the limit is {self.max_body}",
            )
            return response(environ, start_response)
        return self.app(environ, start_response)


class FrontDoor:
    """A threaded werkzeug server in this process (the ``shequ up`` process)."""

    def __init__(
        self,
        host: str,
        port: int,
        services: Mapping[str, str],
        max_body: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        app = BodyLimit(ProxyMiddleware(_not_found, routes_for(services)), max_body)
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
