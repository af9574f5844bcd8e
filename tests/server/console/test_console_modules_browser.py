"""The console's script modules in a real Chromium: each one loads under the page's CSP."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import pytest
from playwright.sync_api import ConsoleMessage, Page, Response
from test_console_browser import (  # noqa: F401 - fixtures are used by name
    DESKTOP,
    PREFIX,
    Site,
    open_page,
    sign_in,
    site,
)

pytestmark = pytest.mark.browser

STATIC = resources.files("agentguard.server.console").joinpath("static")
MODULES = sorted(f.name for f in STATIC.iterdir() if f.name.endswith(".js"))


@pytest.mark.parametrize("where", ["standalone", "mounted"])
def test_every_module_loads_under_the_csp_without_an_error(
    site: Site,  # noqa: F811
    open_page: Callable[..., Page],  # noqa: F811
    where: str,
) -> None:
    console_url = site.url if where == "standalone" else f"{site.host_url}{PREFIX}"
    owner = f"modules-{where}"
    token = site.key(f"org_modules_{where}", ["operator"], owner)
    page = open_page(DESKTOP)  # fails the test on any uncaught script error
    errors: list[str] = []
    scripts: dict[str, Response] = {}

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP refusals and wrong media types are logged here
            errors.append(message.text)

    def on_response(response: Response) -> None:
        if response.request.resource_type == "script":
            scripts[response.url.rsplit("/", 1)[1]] = response

    page.on("console", on_console)
    page.on("response", on_response)
    document = page.goto(f"{console_url}/kill-switch")  # after "load": every module is fetched
    assert document is not None
    csp = document.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # One external module script on the page, no inline script.
    tags = page.evaluate(
        "Array.from(document.scripts, (s) => [s.type, s.getAttribute('src'), s.text.trim()])"
    )
    assert tags == [["module", "kill-switch/static/console.js", ""]]
    assert sorted(scripts) == MODULES
    for name, response in scripts.items():
        assert response.status == 200, name
        assert response.headers["content-type"] == "text/javascript; charset=utf-8", name
        assert response.url == f"{console_url}/kill-switch/static/{name}"
    assert errors == []

    sign_in(page, console_url, token, owner)  # the modules run: signed in, the stream live
    assert errors == []
