"""The public notice board's routes (``/board/``): read-only pages for residents.

A mixin of ``DisclosureService``, so the board's routes sit together and
apart from the JSON API; they read through the same repository and write
nothing (publishing stays on the API, for staff). Every route is public.

Pages answer a person's browser: a wrong filter or an unknown entry is an
HTML page (422, 404) that says what is wrong, in Chinese, with the same
per-field messages a problem+json would carry. The machine-readable routes
(the Atom feed, ``entries.json``) answer errors as problem+json like the
API. Each page carries ``PAGE_HEADERS`` (a script-free Content-Security-
Policy and the rest) through ``page_response``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Any

from werkzeug.wrappers import Request, Response

from shequ.errors import InvalidInput, NotFound
from shequ.http import load_query, page_response, route
from shequ_services.disclosure import board, domain
from shequ_services.disclosure.schemas import (
    BoardEntrySchema,
    BoardFiguresQuerySchema,
    BoardFiltersSchema,
    BoardPageSchema,
    BoardQuerySchema,
)

HTML = "text/html"
ATOM = "application/atom+xml"
FEED_SIZE = 50
_STATIC = resources.files("shequ_services.disclosure") / "static"
#: The board's static files by name, read once: the only files ``/board/static/`` serves.
STATIC_FILES = {
    "board.css": ((_STATIC / "board.css").read_bytes(), "text/css; charset=utf-8"),
    "icon.svg": ((_STATIC / "icon.svg").read_bytes(), "image/svg+xml"),
}
#: The feed's ``updated`` while the log is empty: any fixed instant would do.
EMPTY_LOG_UPDATED = datetime(1970, 1, 1, tzinfo=UTC)
TAGS = ("board",)
INVALID_PAGE = "the filters are invalid: an HTML page naming each field and what is wrong"


class BoardPages:
    """The board's routes; the service class provides ``entries`` and ``log_key``."""

    entries: Any
    log_key: Any

    @route(
        "GET",
        "/board/",
        public=True,
        summary="The public notice board: entries newest first, filtered (HTML)",
        query=BoardQuerySchema,
        media_type=HTML,
        responses={422: INVALID_PAGE},
        tags=TAGS,
    )
    def board_index(self, request: Request) -> Response:
        try:
            query = load_query(request, BoardQuerySchema())
        except InvalidInput as exc:
            return self._invalid_page(exc)
        filters, found, pager, corrections = self._board_list(query)
        codes = self._codes()
        views = [board.entry_view(e, _listed(corrections.get(e.index)), codes) for e in found]
        return self._page(
            "index.html",
            title="居务公开",
            filters=filters,
            entries=views,
            pager=pager,
            communities=self._communities(filters.community),
        )

    @route(
        "GET",
        "/board/entries.json",
        public=True,
        summary="The board's list as JSON: the same entries and order as the page",
        query=BoardQuerySchema,
        response=BoardPageSchema,
        tags=TAGS,
    )
    def board_entries_json(self, request: Request) -> dict[str, Any]:
        """The API's entry fields plus the board's own: its page and its latest correction."""
        _, found, pager, corrections = self._board_list(load_query(request, BoardQuerySchema()))
        items = []
        for entry in found:
            item = BoardEntrySchema().dump(entry)
            item["url"] = board.entry_url(entry.index)
            item["corrected_by"] = corrections.get(entry.index)
            items.append(item)
        return {
            "items": items,
            "older": _json_link(pager.older_url),
            "newer": _json_link(pager.newer_url),
        }

    @route(
        "GET",
        "/board/entries/<int:index>",
        public=True,
        summary="One entry with its inclusion proof against the latest signed checkpoint (HTML)",
        media_type=HTML,
        responses={404: "no such entry: an HTML page saying so"},
        tags=TAGS,
    )
    def board_entry(self, request: Request, index: int) -> Response:
        try:
            entry = self.entries.get(index)
        except NotFound:
            return self._page(
                "error.html",
                status=404,
                title="找不到该条目",
                heading="找不到该条目",
                message=f"公开日志里没有第 {index} 条。条目从 0 开始编号，只增不删。",
                errors=[],
            )
        checkpoint = self.entries.latest_checkpoint()
        covered = checkpoint is not None and index < checkpoint.size
        path = self.entries.inclusion_proof(index, checkpoint.size) if covered else []
        corrections = self.entries.corrections_of([index])
        return self._page(
            "entry.html",
            title=f"第 {index} 条",
            checkpoint=checkpoint,
            entry=board.entry_view(entry, _listed(corrections.get(index)), self._codes()),
            proof=board.proof_view(entry, checkpoint, path),
            public_key=board.b64(self.log_key.public_key),
        )

    @route(
        "GET",
        "/board/figures",
        public=True,
        summary="A community's monthly figures as charts and tables (HTML)",
        query=BoardFiguresQuerySchema,
        media_type=HTML,
        responses={422: INVALID_PAGE},
        tags=TAGS,
    )
    def board_figures(self, request: Request) -> Response:
        try:
            query = load_query(request, BoardFiguresQuerySchema())
        except InvalidInput as exc:
            return self._invalid_page(exc)
        community, month = query.get("community", ""), query.get("month", "")
        asked = bool(community and month)
        entry = None
        if asked:
            entry = self.entries.latest(
                community=community, month=month, kind="incident_summary", cadence="periodic"
            )
        figures = entry if entry is not None and domain.is_figures(entry) else None
        codes = self._codes()
        view = board.figures_view(figures.body, codes) if figures else None
        return self._page(
            "figures.html",
            title="月度数据",
            filters=board.Filters(community=community, month=month),
            communities=self._communities(community),
            asked=asked,
            month_label=board.period_label(month),
            figures=view,
            figures_entry=board.entry_view(figures, (), codes) if figures else None,
            charts=view.charts if view else (),
            others=view.others if view else (),
        )

    @route(
        "GET",
        "/board/feed.atom",
        public=True,
        summary="The newest entries as an Atom feed (RFC 4287), optionally filtered",
        query=BoardFiltersSchema,
        media_type=ATOM,
        tags=TAGS,
    )
    def board_feed(self, request: Request) -> Response:
        query = load_query(request, BoardFiltersSchema())
        found = self.entries.page(
            community=query.get("community"),
            kind=query.get("kind"),
            period=query.get("month"),
            limit=FEED_SIZE,
            newest_first=True,
        )
        title = "居务公开栏" + (f" · {query['community']}" if query.get("community") else "")
        feed = board.atom_feed(
            found,
            origin=self.log_key.origin,
            title=title,
            updated=found[0].published_at if found else EMPTY_LOG_UPDATED,
            self_href=f"{board.PREFIX}/feed.atom{board.Filters(**query).query()}",
            codes=self._codes(),
        )
        return page_response(feed, content_type=f"{ATOM}; charset=utf-8")

    @route(
        "GET",
        "/board/static/<name>",
        public=True,
        summary="The board's style sheet (board.css) and icon (icon.svg)",
        media_type="text/css",
        responses={404: "no such file"},
        tags=TAGS,
    )
    def board_static(self, request: Request, name: str) -> Response:
        if name not in STATIC_FILES:
            raise NotFound(f"the board has no static file {name}")
        body, content_type = STATIC_FILES[name]
        return page_response(
            body, content_type=content_type, headers={"Cache-Control": "public, max-age=3600"}
        )

    # Helpers.

    def _board_list(
        self, query: dict[str, Any]
    ) -> tuple[board.Filters, list[domain.Entry], board.Pager, dict[int, int]]:
        """One page of the filtered list, newest first, with links to its neighbours.

        Asking for one entry more than a page shows whether there is another
        page in that direction; the other direction costs one more lookup of
        a single entry.
        """
        filters = board.Filters(
            community=query.get("community", ""),
            kind=query.get("kind", ""),
            month=query.get("month", ""),
        )
        match = {
            "community": filters.community or None,
            "kind": filters.kind or None,
            "period": filters.month or None,
        }
        size = board.PAGE_SIZE
        if "after" in query:
            found = self.entries.page(**match, start=query["after"] + 1, limit=size + 1)
            has_newer = len(found) > size
            found = list(reversed(found[:size]))
            has_older = bool(found) and bool(
                self.entries.page(**match, end=found[-1].index, limit=1, newest_first=True)
            )
        else:
            before = query.get("before")
            found = self.entries.page(**match, end=before, limit=size + 1, newest_first=True)
            has_older = len(found) > size
            found = found[:size]
            has_newer = before is not None and bool(
                self.entries.page(**match, start=before, limit=1)
            )
        shown = [entry.index for entry in found]
        pager = board.pager(filters, shown, has_older=has_older, has_newer=has_newer)
        return filters, found, pager, self.entries.corrections_of(shown) if shown else {}

    def _codes(self) -> dict[str, str]:
        return {**board.CODE_LABELS, **self.entries.category_names()}

    def _communities(self, chosen: str) -> list[str]:
        known = self.entries.communities()
        return known if not chosen or chosen in known else sorted([*known, chosen])

    def _invalid_page(self, exc: InvalidInput) -> Response:
        errors = [
            (name, "；".join(map(str, messages)) if isinstance(messages, list) else str(messages))
            for name, messages in sorted(exc.errors.items())
        ]
        return self._page(
            "error.html",
            status=422,
            title="筛选条件有误",
            heading="筛选条件有误",
            message="下面的条件无法识别，请修改后重试（月份写作 2026-03 这样的格式）。",
            errors=errors,
        )

    def _page(self, template: str, *, status: int = 200, **context: Any) -> Response:
        if "checkpoint" not in context:
            context["checkpoint"] = self.entries.latest_checkpoint()
        context["checkpoint"] = board.checkpoint_view(context["checkpoint"])
        return page_response(board.render(template, **context), status=status)


def _listed(index: int | None) -> tuple[int, ...]:
    return () if index is None else (index,)


def _json_link(page_url: str | None) -> str | None:
    """The JSON twin of a page link: the same query on ``entries.json``."""
    if page_url is None:
        return None
    return page_url.replace(f"{board.PREFIX}/?", f"{board.PREFIX}/entries.json?", 1)
