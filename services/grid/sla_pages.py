"""The ops SLA board's routes (``/sla/``): a signed-in page for staff on duty.

A mixin of ``GridService``, which owns the incidents and their clocks; the
views are ``sla.py``'s and the queries the repository's. The board is not
public: the routes are declared ``public`` only so that the platform's
bearer check lets a browser through, and each one then asks for an
identity itself, from the ``Authorization`` header (checked by the
platform) or from the session cookie, which holds the same bearer token and
is verified exactly like the header on every request (signature, expiry,
issuer, audience, known roles).

Signing in: a browser cannot send a bearer header when it follows a link,
so ``GET /sla/`` without credentials answers 401 with a form where staff
paste a token (from the district's identity provider, or ``shequ token``
in development). ``POST /sla/session`` checks it and sets it as an
HttpOnly, ``SameSite=Strict`` cookie scoped to ``/sla/``, lasting until the
token expires. Both forms carry a random token that must equal a cookie the
form's page set (a double-submit token), and a request a browser marks as
coming from another site (``Sec-Fetch-Site``) is refused, so another site
can neither sign a browser in as someone else nor out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jwt
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request, Response

from shequ.auth import Identity
from shequ.errors import InvalidInput, NotFound, Unauthorized
from shequ.http import PAGE_HEADERS, load_query, page_response, route, token_verifier
from shequ_services.grid import sla
from shequ_services.grid.schemas import (
    SLA_PAGE_DOC,
    SlaQuerySchema,
    SlaSignInSchema,
    SlaSignOutSchema,
)

HTML = "text/html"
FORM = "application/x-www-form-urlencoded"
TAGS = ("sla",)
SESSION_COOKIE = "shequ_sla"
CSRF_COOKIE = "shequ_sla_csrf"
COOKIE_PATH = f"{sla.PREFIX}/"
#: The platform's page headers, and no copy of an ops page in any cache.
SLA_HEADERS = {**PAGE_HEADERS, "Cache-Control": "no-store"}
#: ``Sec-Fetch-Site`` values of a request this site's own page (or the address bar) made.
OWN_SITE = frozenset({"same-origin", "none"})
_STATIC = resources.files("shequ_services.grid") / "static"
STATIC_FILES = {
    "sla.css": ((_STATIC / "sla.css").read_bytes(), "text/css; charset=utf-8"),
    "icon.svg": ((_STATIC / "icon.svg").read_bytes(), "image/svg+xml"),
}
EXPIRED = "登录已失效（令牌已过期或无效），请重新登录。"


class SlaSettings(DependencyProvider):
    """The board's settings: refresh interval and how to verify the session's token."""

    def setup(self) -> None:
        config = self.container.config
        self.settings = {
            "refresh": int(config.get("GRID_SLA_REFRESH_SECONDS", sla.DEFAULT_REFRESH_SECONDS)),
            "charts": sla.Recent(
                float(config.get("GRID_SLA_CHART_SECONDS", sla.DEFAULT_CHART_SECONDS))
            ),
            # The routes' own verifier: a production grid (a JWKS URL) takes the
            # identity provider's tokens here too, and never one signed with the
            # development secret.
            "verifier": token_verifier(config),
        }

    def get_dependency(self, worker_ctx: Any) -> dict[str, Any]:
        return self.settings


class SlaPages:
    """The board's routes; the service class provides ``incidents`` and ``reference``."""

    incidents: Any
    reference: Any
    sla_settings = SlaSettings()

    @route(
        "GET",
        "/sla/",
        public=True,
        summary="The ops SLA board: open incidents by deadline, counts and 30 days (HTML)",
        query=SlaQuerySchema,
        response=SLA_PAGE_DOC,
        media_type=HTML,
        responses={
            401: "no or an expired session: the sign-in page",
            403: "the caller's roles do not read the board: an HTML page saying so",
            422: "the filters are invalid: an HTML page naming each field",
        },
        tags=TAGS,
    )
    def sla_board(self, request: Request) -> Response:
        """Also takes ``Authorization: Bearer``; a browser signs in instead (``/sla/session``)."""
        identity, expired = self._sla_identity(request)
        if identity is None:
            return self._sign_in_page(request, EXPIRED if expired else "", status=401)
        try:
            grants = sla.board_grants(identity)
        except sla.NotAReader:
            return self._forbidden_page(request, identity)
        try:
            query = load_query(request, SlaQuerySchema())
        except InvalidInput as exc:
            return self._invalid_page(request, identity, exc)
        return self._board_page(request, identity, grants, query)

    @route(
        "POST",
        "/sla/session",
        public=True,
        summary="Sign in to the SLA board: a pasted bearer token becomes the session cookie",
        body=SlaSignInSchema,
        body_media_type=FORM,
        response=SLA_PAGE_DOC,
        status=303,
        media_type=HTML,
        responses={
            401: "the token is invalid or expired: the sign-in page again",
            403: "a form from another site, or roles that do not read the board",
            422: "the form is incomplete: the sign-in page again",
        },
        tags=TAGS,
    )
    def sla_sign_in(self, request: Request) -> Response:
        refused = self._foreign_form(request)
        if refused is not None:
            return refused
        form = {name: request.form.get(name, "") for name in request.form}
        errors = SlaSignInSchema().validate(form)
        if errors or set(form) - {"token", "csrf"}:
            return self._sign_in_page(request, "请粘贴访问令牌后再登录。", status=422)
        if not _same(form["csrf"], request.cookies.get(CSRF_COOKIE)):
            return self._stale_form(request)
        token = form["token"].strip()
        try:
            identity = self._verify(token)
        except Unauthorized:
            return self._sign_in_page(request, "令牌无效或已过期，请检查后重新粘贴。", status=401)
        if not identity.roles & sla.READER_ROLES:
            return self._forbidden_page(request, identity)
        expires = datetime.fromtimestamp(
            jwt.decode(token, options={"verify_signature": False})["exp"], UTC
        )
        response = _redirect(f"{sla.PREFIX}/")
        response.set_cookie(
            SESSION_COOKIE,
            token,
            expires=expires,
            path=COOKIE_PATH,
            secure=_is_https(request),
            httponly=True,
            samesite="Strict",
        )
        return response

    @route(
        "POST",
        "/sla/session/end",
        public=True,
        summary="Sign out of the SLA board: the session cookie is cleared",
        body=SlaSignOutSchema,
        body_media_type=FORM,
        response=SLA_PAGE_DOC,
        status=303,
        media_type=HTML,
        responses={403: "a form from another site or a stale form"},
        tags=TAGS,
    )
    def sla_sign_out(self, request: Request) -> Response:
        refused = self._foreign_form(request)
        if refused is not None:
            return refused
        if not _same(request.form.get("csrf", ""), request.cookies.get(CSRF_COOKIE)):
            return self._stale_form(request)
        response = _redirect(f"{sla.PREFIX}/")
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
        return response

    @route(
        "GET",
        "/sla/static/<name>",
        public=True,
        summary="The SLA board's style sheet (sla.css) and icon (icon.svg)",
        response={"type": "string", "description": "a CSS or SVG file"},
        media_type="text/css",
        responses={404: "no such file"},
        tags=TAGS,
    )
    def sla_static(self, request: Request, name: str) -> Response:
        if name not in STATIC_FILES:
            raise NotFound(f"the SLA board has no static file {name}")
        body, content_type = STATIC_FILES[name]
        return page_response(
            body, content_type=content_type, headers={"Cache-Control": "public, max-age=3600"}
        )

    # Helpers.

    def _verify(self, token: str) -> Identity:
        identity: Identity = self.sla_settings["verifier"].verify(token)
        return identity

    def _sla_identity(self, request: Request) -> tuple[Identity | None, bool]:
        """The caller from the bearer header, else from the session cookie; and whether a
        cookie was there but no longer holds a valid token (expired, or the key rotated)."""
        if request.identity is not None:  # type: ignore[attr-defined]
            return request.identity, False  # type: ignore[attr-defined]
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None, False
        try:
            return self._verify(token), False
        except Unauthorized:
            return None, True

    def _board_page(
        self, request: Request, identity: Identity, grants: list[Any], query: dict[str, Any]
    ) -> Response:
        reference = self.reference
        tz = reference.policy.calendar.tz
        now = datetime.now(UTC)
        filters = sla.Filters(query.get("community", ""), query.get("department", ""))
        chosen = {key: value for key, value in vars(filters).items() if value}
        ordinary = frozenset(c.code for c in reference.categories.values() if not c.sensitive)
        page = query["page"]
        cells = self.incidents.sla_counts(grants, ordinary, {}, now)
        total = sla.total_of(cells, chosen)
        records = self.incidents.sla_page(
            grants,
            ordinary,
            chosen,
            skip=(page - 1) * sla.PAGE_SIZE,
            limit=sla.PAGE_SIZE,
            total=total,
        )
        labels = self._labels()
        days, start, end = sla.window(now.astimezone(tz).date(), sla.CHART_DAYS, tz)

        def charts() -> tuple[sla.Chart, ...]:
            history = self.incidents.sla_history(grants, ordinary, chosen, start=start, end=end)
            clocks = [rule.name for rule in reference.policy.clocks]
            return sla.charts(sla.series(history, days=days, now=now, tz=tz, clocks=clocks))

        scope = (tuple(grants), tuple(sorted(chosen.items())), days[-1])
        drawn = self.sla_settings["charts"].get(scope, time.monotonic(), charts)
        everything = identity.has_role("admin", "auditor")
        communities = {c.community for c in cells} | set(identity.communities)
        departments = {c.department for c in cells if c.department}
        if identity.department:
            departments.add(identity.department)
        if everything:
            communities |= set(labels.communities)
            departments |= set(labels.departments)
        communities |= {filters.community} - {""}
        departments |= {filters.department} - {""}
        refresh = self.sla_settings["refresh"]
        return self._page(
            request,
            identity,
            "sla_index.html",
            title="时限看板",
            refresh=refresh if refresh > 0 else 0,
            as_of=sla.local_time(now, tz),
            as_of_iso=sla.iso(now),
            scope=_scope_text(identity, labels, everything),
            filters=filters,
            filters_url=lambda name, value: sla.Filters(**{name: value}).url(),
            communities=sorted((c, labels.communities.get(c, c)) for c in communities),
            departments=sorted((d, labels.department(d)) for d in departments),
            by_community=sla.tallies(cells, "community", labels),
            by_department=sla.tallies(cells, "department", labels),
            rows=[sla.row(record, now=now, labels=labels, tz=tz) for record in records],
            pager=sla.pager(filters, page=page, total=total),
            charts=drawn,
            days=sla.CHART_DAYS,
        )

    def _labels(self) -> sla.Labels:
        reference = self.reference
        registry = reference.registry
        return sla.Labels(
            categories={code: c.name_zh for code, c in reference.categories.items()},
            communities={k: c.name for k, c in registry.communities.items()} if registry else {},
            departments={k: d.name_zh for k, d in reference.departments.items()},
            sensitive=frozenset(c.code for c in reference.categories.values() if c.sensitive),
        )

    def _sign_in_page(self, request: Request, message: str, *, status: int) -> Response:
        response = self._page(
            request, None, "sla_signin.html", status=status, title="登录", message=message
        )
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(
                SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict"
            )
        return response

    def _forbidden_page(self, request: Request, identity: Identity) -> Response:
        return self._page(
            request,
            identity,
            "sla_error.html",
            status=403,
            title="无权查看",
            heading="无权查看时限看板",
            message="时限看板供社区工作人员、网格员、职能部门、审计人员和管理员使用；"
            "您的令牌不含这些角色。请退出后用有权限的令牌登录。",
            errors=[],
        )

    def _invalid_page(self, request: Request, identity: Identity, exc: InvalidInput) -> Response:
        errors = [
            (name, "；".join(map(str, messages)) if isinstance(messages, list) else str(messages))
            for name, messages in sorted(exc.errors.items())
        ]
        return self._page(
            request,
            identity,
            "sla_error.html",
            status=422,
            title="筛选条件有误",
            heading="筛选条件有误",
            message="下面的条件无法识别，请修改后重试。",
            errors=errors,
        )

    def _stale_form(self, request: Request) -> Response:
        return self._page(
            request,
            None,
            "sla_error.html",
            status=403,
            title="表单已失效",
            heading="表单已失效",
            message="这个表单不是本页刚刚给出的（可能已过期）。请重新打开时限看板再试。",
            errors=[],
        )

    def _foreign_form(self, request: Request) -> Response | None:
        """A form another site made the browser post is refused before anything is read."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is None or site in OWN_SITE:
            return None
        return self._page(
            request,
            None,
            "sla_error.html",
            status=403,
            title="拒绝跨站提交",
            heading="拒绝跨站提交",
            message="这个表单来自其他网站，已被拒绝。请直接打开时限看板登录。",
            errors=[],
        )

    def _page(
        self,
        request: Request,
        identity: Identity | None,
        template: str,
        *,
        status: int = 200,
        **context: Any,
    ) -> Response:
        """A page with the board's headers and the form token every form on it carries."""
        csrf = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not (16 <= len(csrf) <= 128)
        if fresh:
            csrf = secrets.token_urlsafe(32)
        context.setdefault("refresh", 0)
        html = sla.render(
            template,
            signed_in=identity is not None,
            who=_who(identity),
            csrf=csrf,
            **context,
        )
        response = page_response(html, status=status, headers=SLA_HEADERS)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                csrf,
                path=COOKIE_PATH,
                secure=_is_https(request),
                httponly=True,
                samesite="Strict",
            )
        return response


def _same(given: str, expected: str | None) -> bool:
    return bool(given) and expected is not None and hmac.compare_digest(given, expected)


def _redirect(location: str) -> Response:
    return Response("", status=303, headers={**SLA_HEADERS, "Location": location})


def _is_https(request: Request) -> bool:
    """Behind the Ingress TLS ends at the proxy, which says so in ``X-Forwarded-Proto``."""
    return request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https"


def _who(identity: Identity | None) -> str:
    """Who is signed in, as roles: the subject id is a person's account, not shown."""
    if identity is None:
        return ""
    names = {
        "admin": "管理员",
        "auditor": "审计",
        "community_staff": "社区工作人员",
        "grid_worker": "网格员",
        "department": "职能部门",
    }
    shown = [names[role] for role in sorted(identity.roles) if role in names]
    return "已登录：" + ("、".join(shown) or "无看板角色")


def _scope_text(identity: Identity, labels: sla.Labels, everything: bool) -> str:
    if everything:
        return "全部社区和部门"
    parts = []
    if identity.communities and identity.has_role("community_staff", "grid_worker"):
        names = "、".join(labels.communities.get(c, c) for c in identity.communities)
        parts.append(f"社区 {names}")
    if identity.department and identity.has_role("department"):
        parts.append(f"部门 {labels.department(identity.department)}（含协办）")
    return "；".join(parts) or "无"
