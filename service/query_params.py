"""Unknown query parameters are a 422 naming them, as unknown body fields are."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.routes import HTTPRoute

from command.errors import ValidationError


class KnownQueryParameters:
    """The query parameters each route handler declares, read from Litestar's own kwargs models.

    Derived from the handlers (and their dependencies) rather than kept as a list, so a
    parameter added to a handler is accepted without touching this check. A handler that
    takes the raw ``query`` mapping accepts any name.
    """

    def __init__(self) -> None:
        self._allowed: dict[int, frozenset[str] | None] | None = None

    def _learn(self, app: Litestar) -> dict[int, frozenset[str] | None]:
        allowed: dict[int, frozenset[str] | None] = {}
        for route in app.routes:
            if not isinstance(route, HTTPRoute):
                continue
            for handler, kwargs_model in route.route_handler_map.values():
                names = frozenset(p.field_alias for p in kwargs_model.expected_query_params)
                allowed[id(handler)] = None if "query" in kwargs_model.expected_reserved_kwargs else names
        return allowed

    async def check(self, request: Request[Any, Any, Any]) -> None:
        """Raise a 422 naming every query parameter the matched handler does not declare.

        A coroutine, as every hook here is: Litestar runs a plain function hook in a thread
        (a thread hop for every request, for a few microseconds of work).
        """
        # The API only: a probe or scraper that adds a cache-busting parameter to /health,
        # /ready or /metrics is not a client making a mistake worth a 422.
        if not request.scope.get("query_string") or not request.url.path.startswith("/api/"):
            return
        if self._allowed is None:
            self._allowed = self._learn(request.app)
        allowed = self._allowed.get(id(request.route_handler), frozenset())
        if allowed is None:
            return
        unknown = sorted({name for name in request.query_params if name not in allowed})
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise ValidationError(f"unknown query parameter{'s' if len(unknown) > 1 else ''}:"
                                  f" {', '.join(unknown)} (this endpoint takes: {known})", field=unknown[0],
                                  extra={"errors": [{"field": name, "reason": "unknown query parameter"}
                                                    for name in unknown]})
