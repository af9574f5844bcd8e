"""Client and database errors as click errors: a message and the documented exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from ..client import Client, ConflictError, NotFoundError
from ..errors import (
    AgentGuardError,
    AlreadyKilledError,
    AuthenticationError,
    InvalidInputError,
    NotKilledError,
    PermissionDeniedError,
)
from . import output as out

EXIT_ERROR = 1
EXIT_CONFLICT = 3
EXIT_KILLED = 4  # check --exit-status: the target is killed
API_KEY_ENV = "AGENTGUARD_API_KEY"
# API field names that differ from the CLI parameter holding them.
FIELD_PARAMS = {"type": "intervention_type"}


class ConflictOrNotFound(click.ClickException):
    """A conflict or a missing record: exit code 3."""

    exit_code = EXIT_CONFLICT


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client of ``url``, with its errors turned into messages and exit codes."""
    with api_errors(api_key):
        client = Client(url, api_key=api_key)
        try:
            yield client
        finally:
            client.close()


@contextmanager
def api_errors(api_key: str | None) -> Iterator[None]:
    """Turn client errors into click errors: 3 for conflicts and misses, 2 for bad input."""
    try:
        yield
    except AlreadyKilledError as exc:
        raise ConflictOrNotFound(out.already_killed(exc.kill_switch)) from None
    except (NotKilledError, NotFoundError, ConflictError) as exc:
        raise ConflictOrNotFound(str(exc)) from None
    except InvalidInputError as exc:
        raise bad_parameter(exc) from None
    except AuthenticationError as exc:
        hint = "" if api_key else f" (no API key given: use --api-key or set {API_KEY_ENV})"
        raise click.ClickException(f"the server refused the credentials: {exc}{hint}") from None
    except PermissionDeniedError as exc:
        raise click.ClickException(f"permission denied: {exc}") from None
    except AgentGuardError as exc:
        raise click.ClickException(str(exc)) from None


def bad_parameter(exc: InvalidInputError) -> click.BadParameter:
    """A usage error naming the CLI parameter behind an API field, if there is one."""
    ctx = click.get_current_context(silent=True)
    name = FIELD_PARAMS.get(exc.field, exc.field)
    param = None
    if ctx is not None:
        param = next((p for p in ctx.command.params if p.name == name), None)
    hint = None if param is not None else f"'{exc.field}'"
    return click.BadParameter(exc.message, ctx=ctx, param=param, param_hint=hint)


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn agentguard and database errors into click errors with the right exit code."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except InvalidInputError as exc:
        raise bad_parameter(exc) from None
    except AgentGuardError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {exc.__class__.__name__}: {exc}") from None
