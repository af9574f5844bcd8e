"""The console: the ``/kill-switch`` page, its script modules and style, and console sign-in.

Everything is relative to wherever the server is mounted: the page at ``kill-switch``, its
assets under ``kill-switch/static/``, the session at ``kill-switch/session``; the page talks
to the same ``api/v1/...`` endpoints as every other client.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from importlib import resources
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.authentication import AuthenticationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..api.authenticator import Authenticator
from ..auth.keys import KeyStore
from ..auth.principal import Principal
from ..auth.session import SESSION_COOKIE, ConsoleSessions, SessionData, check_csrf
from ..inputs import parse_body
from ..problems import ApiError, from_exception
from ..store.database import Outage
from ..store.feed import ChangeFeed

PAGE_PATH = "/kill-switch"
SESSION_PATH = "/kill-switch/session"
ASSET_PATH = "/kill-switch/static/{name}"

# Every script module and style sheet in static/ is an asset (a module must come as JavaScript,
# or the browser refuses it); the page itself is served only at PAGE_PATH.
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_ASSETS = {
    file.name: _MEDIA_TYPES[suffix]
    for file in resources.files(__name__).joinpath("static").iterdir()
    if (suffix := PurePosixPath(file.name).suffix) in _MEDIA_TYPES
}
_PAGE = "kill-switch.html"
# The page loads only its own script, style and API; nothing may frame it but its own origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_NO_STORE = {"Cache-Control": "no-store"}


class SignIn(BaseModel):
    """An API key to exchange for a console session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]


class ConsoleSession(BaseModel):
    """Who the console is signed in as, and what the page may offer them."""

    organization_id: str
    user_id: str
    actor: str
    method: str
    key_id: str | None
    scopes: list[str]
    can_kill: bool
    can_stop_all: bool  # stop (and resume) the whole organization
    can_read: bool
    can_manage_webhooks: bool = False
    csrf_token: str | None
    expires_at: datetime | None
    signed_in: bool = True


class SignedOut(BaseModel):
    """``GET session?probe=1`` when nobody is signed in: a 200, so the page logs no error."""

    signed_in: bool = False
    detail: str


class _Asset:
    def __init__(self, body: bytes, media_type: str) -> None:
        self.body = body
        self.media_type = media_type
        self.etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'


class Console:
    """The console's routes, with what they use of the server."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        keys: KeyStore,
        sessions: ConsoleSessions,
        feed: ChangeFeed,
        outage: Outage,
        operators_can_stop_all: bool = False,
    ) -> None:
        self.auth = auth
        self.operators_can_stop_all = operators_can_stop_all
        self.keys = keys
        self.sessions = sessions
        self.feed = feed
        self.outage = outage
        self._assets: dict[str, _Asset] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home, methods=["GET"], name="console_home"),
            Route(PAGE_PATH, self.page, methods=["GET"], name="console"),
            Route(ASSET_PATH, self.asset, methods=["GET"], name="console_asset"),
            Route(
                SESSION_PATH,
                self.session,
                methods=["GET", "POST", "DELETE"],
                name="console_session",
            ),
        ]

    # -- the page -----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """The server's root leads to the console (a relative redirect, so any mount works)."""
        return RedirectResponse("kill-switch", status_code=307)

    async def page(self, request: Request) -> Response:
        return self._serve(request, _PAGE, "text/html; charset=utf-8", _PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            return ApiError("not_found", f"no console asset {name!r}").response()
        return self._serve(request, name, _ASSETS[name], {"X-Content-Type-Options": "nosniff"})

    def _serve(
        self, request: Request, name: str, media_type: str, headers: dict[str, str]
    ) -> Response:
        asset = self._assets.get(name)
        if asset is None:
            body = resources.files(__name__).joinpath("static", name).read_bytes()
            asset = self._assets[name] = _Asset(body, media_type)
        headers = {"Cache-Control": "no-cache", **headers, "ETag": asset.etag}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    # -- the session --------------------------------------------------------------------------

    async def session(self, request: Request) -> Response:
        """``GET``: who is signed in; ``POST``: sign in with an API key; ``DELETE``: sign out.

        ``GET ?probe=1`` answers "nobody" with a 200 ``{"signed_in": false, "detail"}`` instead
        of a 401: the page asks it on every load, and a browser logs every 401 as an error.
        """
        try:
            if request.method == "POST":
                return await self._sign_in(request)
            if request.method == "DELETE":
                return await self._sign_out(request)
            return await self._current(request)
        except Exception as exc:
            error = from_exception(exc, self.outage)
            if error is None:
                raise
            response = error.response()
            if error.status == 401 and request.method == "GET" and _probing(request):
                response = _json(SignedOut(detail=error.body.detail))
            response.headers.update(_NO_STORE)
            if error.status == 401 and SESSION_COOKIE in request.cookies:
                self.sessions.clear_cookie(response, request)
            return response

    async def _current(self, request: Request) -> Response:
        try:  # after catching up: another process may have revoked the session's key
            principal = await self.auth.identify(request)
        except AuthenticationError as exc:
            raise ApiError("unauthorized", str(exc) or "invalid credentials") from None
        if principal is None:
            raise ApiError("unauthorized", "not signed in: sign in with an API key")
        data: SessionData | None = None
        expires = None
        if principal.method == "console":
            data, expires = self.sessions.read(request.cookies[SESSION_COOKIE])
        return _json(_describe(principal, data, expires, self.operators_can_stop_all))

    async def _sign_in(self, request: Request) -> Response:
        body = await parse_body(SignIn, request)  # 415 unless sent as application/json
        self.feed.refresh()  # another process may have revoked the key
        key = await run_in_threadpool(self.keys.verify, body.api_key)
        if key is None:
            raise ApiError("unauthorized", "this API key is not valid or has been revoked")
        sessions = self.sessions
        value, data = sessions.issue(key)
        _, expires = sessions.read(value)
        principal = Principal(
            key.organization_id, key.owner, key.scopes, key_id=key.id, method="console"
        )
        response = _json(_describe(principal, data, expires, self.operators_can_stop_all))
        sessions.set_cookie(response, request, value)
        return response

    async def _sign_out(self, request: Request) -> Response:
        sessions = self.sessions
        value = request.cookies.get(SESSION_COOKIE)
        if value:
            try:
                data, expires = sessions.read(value)
            except AuthenticationError:
                pass  # an expired or forged cookie: just remove it
            else:
                check_csrf(request, data)
                await run_in_threadpool(sessions.sign_out, data, expires)
        response = Response(status_code=204, headers=_NO_STORE)
        sessions.clear_cookie(response, request)
        return response


def _probing(request: Request) -> bool:
    return request.query_params.get("probe", "").lower() in ("1", "true")


def _describe(
    principal: Principal,
    data: SessionData | None,
    expires: datetime | None,
    operators_can_stop_all: bool,
) -> ConsoleSession:
    return ConsoleSession(
        organization_id=principal.organization_id,
        user_id=principal.user_id,
        actor=principal.actor,
        method=principal.method,
        key_id=principal.key_id,
        scopes=sorted(principal.scopes),
        can_kill=principal.allows("kill"),
        can_stop_all="admin" in principal.scopes
        or (operators_can_stop_all and "operator" in principal.scopes),
        can_read=principal.allows("read"),
        can_manage_webhooks=principal.allows("webhooks"),
        csrf_token=data.csrf if data else None,
        expires_at=expires,
    )


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json", headers=_NO_STORE)
