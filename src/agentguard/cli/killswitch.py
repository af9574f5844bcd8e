"""``kill``, ``revive``, ``check`` and ``active``: the kill switches themselves."""

from __future__ import annotations

import os
import sys
import time

import click
from click.shell_completion import CompletionItem

from ..client import Client
from ..errors import InvalidInputError, RevivePendingError
from ..targets import TARGET_TYPES, parse_duration
from . import output as out
from .errors import API_KEY_ENV, EXIT_KILLED
from .live import AcksProgress
from .options import (
    DEFAULT_URL,
    URL_ENV,
    Seconds,
    json_option,
    limit_option,
    remote,
    skip_option,
    target_type_argument,
)


def _complete_killed(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Complete a revive's ID from the server's active kill switches (quietly, 2 s at most)."""
    url = ctx.params.get("url") or os.environ.get(URL_ENV, DEFAULT_URL)
    api_key = ctx.params.get("api_key") or os.environ.get(API_KEY_ENV)
    target_type = ctx.params.get("target_type")
    try:
        with Client(url, api_key=api_key, timeout=2.0) as client:
            rows = client.active(limit=1000).data
    except Exception:  # completion must never fail loudly
        return []
    return [
        CompletionItem(k.target_id, help=k.reason or None)
        for k in rows
        if k.target_id.startswith(incomplete) and target_type in (None, k.target_type)
    ]


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A kill's duration, checked here so a typo is a usage error, not a server's 422."""
    if value is None:
        return None
    try:
        parse_duration("--for", value)
    except InvalidInputError as exc:
        raise click.BadParameter(exc.message) from None
    return value.strip().lower()


@click.command()
@target_type_argument
@click.argument("target_id", metavar="ID")
@click.option("--reason", "-r", help="Why: recorded, audited, and told to every refused agent.")
@click.option(
    "--for",
    "duration",
    metavar="DURATION",
    callback=_duration,
    help="A time-limited kill: the server revives it (as 'expiry') after 90s, 15m, 1h30m, 2d...",
)
@click.option(
    "--until-run-ends",
    is_flag=True,
    help="A run only: the kill ends when the run does (its instances exit, or it is finished).",
)
@click.option(
    "--wait", is_flag=True, help="Then wait until every live instance has acknowledged the kill."
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=Seconds(0, 3600),
    help="Seconds --wait waits.",
)
@json_option
@remote
def kill(
    client: Client,
    target_type: str,
    target_id: str,
    reason: str | None,
    duration: str | None,
    until_run_ends: bool,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Kill a target.

    Every instance of it refuses its next guarded call. TYPE is agent, run, mission or
    tool. With --for, until the server revives it then (a guard that has not heard of that
    revive keeps refusing). Exit code 3 if it is already killed. With --wait, progress goes to
    stderr, and the exit code is 1 if not every live instance acknowledged within --timeout
    (the kill stays in force).
    """
    until = "run_end" if until_run_ends else None
    change = client.kill(target_type, target_id, reason=reason, duration=duration, until=until)
    if not wait:
        if as_json:
            out.echo_json(change.kill_switch)
        else:
            click.echo(out.kill_switch("kill", change.kill_switch, change.version))
        return
    if not as_json:
        click.echo(out.kill_switch("kill", change.kill_switch, change.version))
    with AcksProgress() as progress:
        acks = client.wait_for_acks(target_type, target_id, timeout=timeout, progress=progress)
    waited = time.monotonic() - progress.started
    if as_json:
        out.echo_json(
            {
                "kill_switch": change.kill_switch.model_dump(mode="json"),
                "version": change.version,
                "acks": acks.model_dump(mode="json", exclude_unset=True),
                "complete": acks.complete,
                "waited_s": round(waited, 3),
            }
        )
    if not acks.complete:
        raise click.ClickException(out.acks_missing(acks, timeout))
    if not as_json:
        click.echo(out.acks_done(acks))


@click.command()
@click.argument("target_type", metavar="TYPE", type=click.Choice(TARGET_TYPES), required=False)
@click.argument("target_id", metavar="ID", shell_complete=_complete_killed, required=False)
@click.option(
    "--reason", "-r", help="Why: audited (required by a server run with --require-reason)."
)
@click.option(
    "--approve",
    "approve_id",
    metavar="REQUEST",
    help="Approve another person's revive request (the last approval revives the kill).",
)
@click.option(
    "--reject", "reject_id", metavar="REQUEST", help="Reject a revive request, or withdraw yours."
)
@click.option("--pending", is_flag=True, help="List the revive requests waiting for approval.")
@json_option
@remote
def revive(
    client: Client,
    target_type: str | None,
    target_id: str | None,
    reason: str | None,
    approve_id: str | None,
    reject_id: str | None,
    pending: bool,
    as_json: bool,
) -> None:
    """Revive a killed target, or answer revive requests.

    Its agents resume. Where the server wants approvals (serve --revive-approvals), the
    revive becomes a request that another person approves with --approve REQUEST; --pending
    lists them. Exit code 3 if the target is not killed.
    """
    chosen = [flag for flag, on in (("--approve", approve_id), ("--reject", reject_id),
                                    ("--pending", pending)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} do not go together")
    if chosen:
        if target_type is not None:
            raise click.UsageError(f"{chosen[0]} takes no TYPE or ID")
        if pending:
            page = client.revive_requests()
            if as_json:
                out.echo_json(page)
            else:
                out.show(out.revive_requests(page.data, page.count))
        elif approve_id is not None:
            request = client.approve_revive(approve_id, reason=reason)
            if as_json:
                out.echo_json(request)
            else:
                click.echo(out.revive_request_answer("approved", request))
        else:
            assert reject_id is not None
            request = client.reject_revive(reject_id, reason=reason)
            if as_json:
                out.echo_json(request)
            else:
                click.echo(out.revive_request_answer("rejected", request))
        return
    if target_type is None or target_id is None:
        raise click.UsageError("give TYPE and ID to revive, or --approve, --reject or --pending")
    try:
        change = client.revive(target_type, target_id, reason=reason)
    except RevivePendingError as pending_revive:
        if as_json:
            out.echo_json(pending_revive.request)
        else:
            click.echo(out.revive_requested(pending_revive.request))
        return
    if as_json:
        out.echo_json(change.kill_switch)
    else:
        click.echo(out.kill_switch("revive", change.kill_switch, change.version))


@click.command()
@target_type_argument
@click.argument("target_id", metavar="ID")
@click.option(
    "--exit-status", is_flag=True, help="Exit code 4 if the target is killed, 0 if it is not."
)
@json_option
@remote
def check(
    client: Client, target_type: str, target_id: str, exit_status: bool, as_json: bool
) -> None:
    """Whether a target is killed.

    Exit code 0 either way, unless --exit-status: then 4 if it is killed (still printed).
    Scripts may also read is_killed from --json.
    """
    status = client.check(target_type, target_id)
    if as_json:
        out.echo_json(status)
    else:
        click.echo(out.status(status))
    if exit_status and status.is_killed:
        sys.exit(EXIT_KILLED)


@click.command()
@limit_option
@skip_option
@json_option
@remote
def active(client: Client, limit: int, skip: int, as_json: bool) -> None:
    """Active kill switches, newest first."""
    page = client.active(skip=skip, limit=limit)
    if as_json:
        out.echo_json(page)
    else:
        out.show(out.kill_switches(page.data, page.count))


@click.command("stop-all")
@click.option(
    "--reason", "-r", required=True, help="Why: recorded, audited, and told to every refused agent."
)
@click.option(
    "--for",
    "duration",
    metavar="DURATION",
    callback=_duration,
    help="Resume by itself after 90s, 15m, 1h30m, 2d... (as 'expiry').",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Do not ask to type the organization's id (needed when not on a terminal).",
)
@json_option
@remote
def stop_all(client: Client, reason: str, duration: str | None, yes: bool, as_json: bool) -> None:
    """Stop the whole organization: every guarded call of every agent is refused.

    Until `agentguard resume-all`. Needs an admin key (or an operator key on a server started
    with --operators-can-stop-all). On a terminal, asks to type the organization's id;
    elsewhere, give --yes. Exit code 3 if it is already stopped.
    """
    organization_id = client.state().organization_id
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                "stop-all stops every agent of the organization; give --yes to confirm "
                "when not on a terminal"
            )
        typed = click.prompt(
            f"This refuses every guarded call of organization {organization_id!r}. "
            "Type its id to confirm",
            default="",
            show_default=False,
        )
        if typed != organization_id:
            raise click.ClickException("the id typed is not the organization's; nothing stopped")
    change = client.kill("organization", organization_id, reason=reason, duration=duration)
    if as_json:
        out.echo_json(change.kill_switch)
    else:
        click.echo(out.kill_switch("kill", change.kill_switch, change.version))


@click.command("resume-all")
@json_option
@remote
def resume_all(client: Client, as_json: bool) -> None:
    """End the organization-wide stop: agents run again (their own kills still hold).

    Exit code 3 if the organization is not stopped.
    """
    organization_id = client.state().organization_id
    change = client.revive("organization", organization_id)
    if as_json:
        out.echo_json(change.kill_switch)
    else:
        click.echo(out.kill_switch("revive", change.kill_switch, change.version))


COMMANDS = (kill, revive, check, active, stop_all, resume_all)
