"""``serve``: the API under uvicorn, with a first admin key on an empty database."""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

import click

from ..errors import InvalidInputError
from .database import open_keys
from .errors import database_errors
from .options import Seconds, database_option, duration_seconds, org_option


def _retry_for(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A duration such as 30m, 24h or 3d."""
    if value is None:
        return None
    seconds = duration_seconds(value)
    if seconds is None or seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 30m, 24h or 3d")
    return seconds


def _request_ttl(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """How long a revive request waits: a duration of at most 30 days."""
    seconds = _retry_for(ctx, param, value)
    if seconds is not None and seconds > 30 * 86400:
        raise click.BadParameter(f"{value!r} is more than 30 days")
    return seconds


@click.command()
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--rule",
    "rules",
    multiple=True,
    metavar="SPEC",
    help="A server rule on fleet-wide totals, repeatable: budget:limit_usd=100,window=3600, "
    "rate:limit=10000,window=60 or error-rate:max_rate=0.2,min_calls=50,window=300 "
    "(fields of BudgetRule, RateRule, ErrorRateRule; per agent). Default: AGENTGUARD_RULES, "
    "the same specs separated by ';'.",
)
@click.option(
    "--require-reason",
    is_flag=True,
    help="Refuse kills, revives and revive approvals without a reason (422 naming reason).",
)
@click.option(
    "--revive-approvals",
    "revive_approvals",
    multiple=True,
    metavar="RULE",
    help="Revives that need more people, repeatable: 2 (every revive: the requester and one "
    "approver), agent:payments*=2 (targets matching), acme/*=2 (one organization), "
    "acme/agent:payments=3. The largest matching number applies. Default: "
    "AGENTGUARD_REVIVE_APPROVALS, the rules separated by ';'.",
)
@click.option(
    "--revive-request-ttl",
    metavar="DURATION",
    callback=_request_ttl,
    help="How long a revive request waits for its approvals before it expires: 30m, 1h, 1d "
    "(default 1h).",
)
@click.option(
    "--operators-can-stop-all",
    is_flag=True,
    help="Let operator keys stop and resume the whole organization (stop-all, resume-all); "
    "by default only admin keys may.",
)
@click.option(
    "--max-streams-per-key",
    type=click.IntRange(min=1),
    default=None,
    help="Open change streams one credential may hold per worker; one more gets 429 "
    "(default 100, or AGENTGUARD_MAX_STREAMS_PER_KEY).",
)
@click.option(
    "--max-streams-per-organization",
    type=click.IntRange(min=1),
    default=None,
    help="Open change streams one organization may hold per worker "
    "(default 1000, or AGENTGUARD_MAX_STREAMS_PER_ORGANIZATION).",
)
@click.option(
    "--admin-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="On an empty database, write the first admin key to this new file (mode 0600) "
    "instead of printing it (so it stays out of container logs). It must not exist yet.",
)
@click.option(
    "--webhooks-allow-private",
    is_flag=True,
    help="Let webhooks go to loopback, private and link-local addresses (refused by default, "
    "so a webhook URL cannot reach this server's own network).",
)
@click.option(
    "--webhook-timeout",
    type=Seconds(0.1, 300),
    default=None,
    help="Seconds one webhook delivery attempt may take, connection to answer (default 10).",
)
@click.option(
    "--webhook-retry-for",
    metavar="DURATION",
    callback=_retry_for,
    help="How long failed webhook deliveries are retried, with exponential backoff: 30m, "
    "24h, 3d (default 24h).",
)
@click.option(
    "--drill-every",
    metavar="DURATION",
    callback=_retry_for,
    help="Drill every agent with live instances once per interval (24h, 30m...), once across "
    "replicas and workers; a failed drill fires the drill.failed webhook event.",
)
@click.option(
    "--drill-timeout",
    type=Seconds(0.001, 60),
    help="Seconds a scheduled drill waits for every live instance's answer (default 5).",
)
@org_option
def serve(
    database_url: str,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    rules: tuple[str, ...],
    require_reason: bool,
    operators_can_stop_all: bool,
    revive_approvals: tuple[str, ...],
    revive_request_ttl: int | None,
    max_streams_per_key: int | None,
    max_streams_per_organization: int | None,
    admin_key_file: Path | None,
    webhooks_allow_private: bool,
    webhook_timeout: float | None,
    webhook_retry_for: int | None,
    drill_every: int | None,
    drill_timeout: float | None,
    organization_id: str,
) -> None:
    """Run the API with uvicorn. On an empty database, create an admin key and print it once
    (or write it to --admin-key-file)."""
    import uvicorn

    from ..server.approvals import REVIVE_APPROVALS_ENV, REVIVE_REQUEST_TTL_ENV, ReviveApprovals
    from ..server.asgi import DATABASE_URL_ENV as SERVER_DATABASE_URL_ENV
    from ..server.asgi import (
        DRILL_EVERY_ENV,
        DRILL_TIMEOUT_ENV,
        MAX_STREAMS_PER_KEY_ENV,
        MAX_STREAMS_PER_ORG_ENV,
        OPERATORS_CAN_STOP_ALL_ENV,
        REQUIRE_REASON_ENV,
        RULES_ENV,
        WEBHOOK_RETRY_FOR_ENV,
        WEBHOOK_TIMEOUT_ENV,
        WEBHOOKS_ALLOW_PRIVATE_ENV,
        rules_from,
    )
    from ..server.auth.session import SESSION_SECRET_ENV

    for spec in rules:
        if ";" in spec:
            raise click.BadParameter("give each rule its own --rule", param_hint="--rule")
    specs = ";".join(rules) if rules else os.environ.get(RULES_ENV, "")
    try:
        server_rules = rules_from(specs)
    except InvalidInputError as exc:
        hint = "--rule" if rules else RULES_ENV
        raise click.BadParameter(exc.message, param_hint=hint) from None
    for spec in revive_approvals:
        if ";" in spec:
            raise click.BadParameter(
                "give each rule its own --revive-approvals", param_hint="--revive-approvals"
            )
    approval_specs = (
        ";".join(revive_approvals) if revive_approvals else os.environ.get(REVIVE_APPROVALS_ENV, "")
    )
    try:
        approvals = ReviveApprovals.parse(approval_specs)
    except InvalidInputError as exc:
        hint = "--revive-approvals" if revive_approvals else REVIVE_APPROVALS_ENV
        raise click.BadParameter(exc.message, param_hint=hint) from None
    for env, limit in (
        (MAX_STREAMS_PER_KEY_ENV, max_streams_per_key),
        (MAX_STREAMS_PER_ORG_ENV, max_streams_per_organization),
    ):
        if limit is not None:
            os.environ[env] = str(limit)
        elif os.environ.get(env, "").strip() and not re.fullmatch(
            r"[1-9][0-9]{0,8}", os.environ[env].strip()
        ):
            raise click.BadParameter(
                f"must be a whole number of at least 1; got {os.environ[env]!r}", param_hint=env
            )

    with database_errors():
        keys = open_keys(database_url)
        if keys.count() == 0:
            key_file = _new_secret_file(admin_key_file) if admin_key_file else None
            try:
                key, token = keys.create(
                    organization_id,
                    owner="admin",
                    scopes=["admin"],
                    name="first admin key",
                    actor="agentguard serve",
                )
            except BaseException:
                if admin_key_file is not None and key_file is not None:
                    os.close(key_file)
                    admin_key_file.unlink()
                raise
            if key_file is not None:
                with os.fdopen(key_file, "w") as f:
                    f.write(token + "\n")
                click.echo(
                    f"Created the first admin key {key.id} for organization "
                    f"{organization_id!r}; wrote it to {admin_key_file} (mode 0600)."
                )
            else:
                click.echo(
                    f"Created the first admin key {key.id} for organization "
                    f"{organization_id!r}.\n"
                    f"It is shown only this once; store it now:\n\n    {token}\n"
                )
            sys.stdout.flush()
    os.environ[SERVER_DATABASE_URL_ENV] = database_url
    os.environ[RULES_ENV] = specs  # every worker builds the same rules
    if require_reason:
        os.environ[REQUIRE_REASON_ENV] = "1"
    if operators_can_stop_all:
        os.environ[OPERATORS_CAN_STOP_ALL_ENV] = "1"
    os.environ[REVIVE_APPROVALS_ENV] = approval_specs  # every worker applies the same rules
    if revive_request_ttl is not None:
        os.environ[REVIVE_REQUEST_TTL_ENV] = str(revive_request_ttl)
    if approvals:
        click.echo(f"Revives need approval: {approvals}")
    if webhooks_allow_private:
        os.environ[WEBHOOKS_ALLOW_PRIVATE_ENV] = "1"
        click.echo("Webhooks may go to private and loopback addresses (--webhooks-allow-private).")
    if webhook_timeout is not None:
        os.environ[WEBHOOK_TIMEOUT_ENV] = str(webhook_timeout)
    if webhook_retry_for is not None:
        os.environ[WEBHOOK_RETRY_FOR_ENV] = str(webhook_retry_for)
    if drill_every is not None:
        os.environ[DRILL_EVERY_ENV] = str(drill_every)
        click.echo(f"Drilling every agent with live instances every {drill_every:g} s.")
    if drill_timeout is not None:
        os.environ[DRILL_TIMEOUT_ENV] = str(drill_timeout)
    for rule in server_rules:
        click.echo(f"Server rule: {rule}")
    # Every worker must sign console sessions alike, or a request landing on another worker
    # would find its session invalid. Set AGENTGUARD_SESSION_SECRET to keep them over restarts.
    os.environ.setdefault(SESSION_SECRET_ENV, secrets.token_urlsafe(32))
    click.echo(f"Console: http://{host}:{port}/kill-switch   API: http://{host}:{port}/api/v1")
    sys.stdout.flush()
    uvicorn.run(
        "agentguard.server.asgi:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )


def _new_secret_file(path: Path) -> int:
    """Create ``path`` readable by its owner only; a usage error if it exists or cannot be."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.BadParameter(
            f"{path} exists already; remove it or name a new file", param_hint="--admin-key-file"
        ) from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot create {path}: {exc.strerror}", param_hint="--admin-key-file"
        ) from None


COMMANDS = (serve,)
