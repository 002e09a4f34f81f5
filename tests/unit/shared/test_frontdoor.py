"""The front door's own rules: prefix routing and the Ingress-like body limit."""

from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from shequ.frontdoor import BodyLimit, routes_for


@Request.application
def _echo_length(request: Request) -> Response:
    return Response(str(len(request.get_data())), status=200)


def test_a_body_over_the_limit_is_413_problem_json_and_never_forwarded() -> None:
    client = Client(BodyLimit(_echo_length, max_body=10))
    response = client.post("/api/v1/grid/incidents", data=b"x" * 11)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Request body too large",
        "status": 413,
        "detail": "the body has 11 bytes; the limit is 10",
    }


def test_a_body_at_the_limit_is_forwarded() -> None:
    client = Client(BodyLimit(_echo_length, max_body=10))
    response = client.post("/api/v1/grid/incidents", data=b"x" * 10)
    assert response.status_code == 200
    assert response.text == "10"


def test_each_service_gets_its_api_prefix_and_the_grid_the_open311_prefix() -> None:
    targets = routes_for({"grid": "http://127.0.0.1:1", "notify": "http://127.0.0.1:2"})
    assert targets["/api/v1/grid/"] == {"target": "http://127.0.0.1:1/api/v1/grid/"}
    assert targets["/api/v1/notify/"] == {"target": "http://127.0.0.1:2/api/v1/notify/"}
    assert targets["/open311/"] == {"target": "http://127.0.0.1:1/open311/"}
    assert "/board/" not in targets


@Request.application
def _echo_forwarded(request: Request) -> Response:
    return Response(request.headers.get("X-Forwarded-For", ""), status=200)


def test_the_callers_address_is_appended_to_x_forwarded_for() -> None:
    client = Client(BodyLimit(_echo_forwarded, max_body=10))
    plain = client.get("/", environ_overrides={"REMOTE_ADDR": "192.0.2.5"})
    assert plain.text == "192.0.2.5"
    claimed = client.get(
        "/", headers={"X-Forwarded-For": "6.6.6.6"}, environ_overrides={"REMOTE_ADDR": "192.0.2.5"}
    )
    assert claimed.text == "6.6.6.6, 192.0.2.5"


def test_the_front_doors_own_problems_carry_the_security_headers() -> None:
    response = Client(BodyLimit(_echo_length, max_body=1)).post("/x", data=b"xx")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
