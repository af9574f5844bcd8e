"""One request to the API, as its handler sees it: authenticated, validated, with an id."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from ..auth.principal import Principal

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class Call:
    """One authenticated, validated request."""

    request: Request
    principal: Principal
    request_id: str
    query: Any = None
    body: Any = None
    path: Any = None
    header_params: Any = None  # the request headers the endpoint reads, validated
    headers: dict[str, str] = field(default_factory=dict)  # sent with the answer
    status: int | None = None  # of the answer, if not the endpoint's (one of its alternatives)

    @property
    def org(self) -> str:
        return self.principal.organization_id


# A handler as declared: a method of its resource's handler class, unbound.
Handler = Callable[[Any, Call], Awaitable[BaseModel | Response]]


def request_id(request: Request) -> str:
    """The caller's ``X-Request-ID`` if it is sensible, else a new one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex
