"""Starlette routes for the declared endpoints: auth, validation, the handler, error mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from urllib.parse import quote

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ..inputs import dump, parse_body, parse_headers, parse_path, parse_query
from ..problems import from_exception
from ..store.database import Outage
from .authenticator import Authenticator
from .call import Call, request_id
from .endpoints import Endpoint

Respond = Callable[[Request], Awaitable[Response]]
Bound = Callable[[Call], Awaitable[BaseModel | Response]]  # a handler bound to its object


def build_routes(
    endpoints: Sequence[Endpoint],
    handlers: Sequence[object],
    *,
    auth: Authenticator,
    outage: Outage,
) -> list[Route]:
    """Routes running each endpoint on the one of ``handlers`` whose class declares it.

    One route per path, so a 405 lists every method of the path in ``Allow``.
    """
    by_path: dict[str, dict[str, Respond]] = {}
    for e in endpoints:
        by_path.setdefault(e.path, {})[e.method] = _endpoint(e, _bind(e, handlers), auth, outage)
    return [
        Route(path, _dispatch(methods), methods=list(methods)) for path, methods in by_path.items()
    ]


def _bind(endpoint: Endpoint, handlers: Sequence[object]) -> Bound:
    """The endpoint's handler bound to the object whose class declares it."""
    name = getattr(endpoint.handler, "__name__", "")
    for owner in handlers:
        if getattr(type(owner), name, None) is endpoint.handler:
            return partial(endpoint.handler, owner)
    raise LookupError(f"no handler object given for {endpoint.operation_id!r}")


def _dispatch(handlers: dict[str, Respond]) -> Respond:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return dispatch


def _endpoint(
    endpoint: Endpoint,
    handler: Bound,
    auth: Authenticator,
    outage: Outage,
) -> Respond:
    async def run(request: Request) -> Response:
        rid = request_id(request)
        try:
            principal = await auth.require(request, endpoint.permission)
            call = Call(request, principal, rid)
            if endpoint.path_params is not None:
                call.path = parse_path(endpoint.path_params, request)
            if endpoint.header_params is not None:
                call.header_params = parse_headers(endpoint.header_params, request)
            if endpoint.query is not None:
                call.query = parse_query(endpoint.query, request)
            if endpoint.body is not None:
                call.body = await parse_body(endpoint.body, request)
            result = await handler(call)
        except Exception as exc:
            error = from_exception(exc, outage)
            if error is None:
                raise
            response = error.response()
        else:
            etag = call.headers.get("ETag")
            if isinstance(result, Response):  # a handler that answers for itself
                response = result
            elif etag is not None and request.headers.get("if-none-match") == etag:
                response = Response(status_code=304, headers=call.headers)
            else:
                response = Response(
                    dump(result),
                    status_code=call.status or endpoint.status,
                    media_type="application/json",
                    headers=call.headers,
                )
        response.headers["x-request-id"] = rid
        return response

    return run


class SlashRedirect:
    """A 307 to the path with the trailing slash added or removed, if that one has a route.

    ``Location`` is the path alone (relative to the host the client used), never built from
    the ``Host`` header. Otherwise, the router's usual 404.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self.not_found: ASGIApp = router.not_found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            if other not in ("", "/") and not other.startswith("//"):
                moved = {**scope, "path": other}
                if any(r.matches(moved)[0] is not Match.NONE for r in self.router.routes):
                    location = quote(other, safe="/:@!$&'()*+,;=-._~")
                    query = scope.get("query_string", b"").decode("latin-1")
                    if query:
                        location += f"?{query}"
                    await RedirectResponse(location, status_code=307)(scope, receive, send)
                    return
        await self.not_found(scope, receive, send)
