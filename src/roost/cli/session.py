"""What every client command shares: the broker URL, ``--json``, one run per invocation.

A command is a coroutine ``body(client)``; ``run`` connects to ``--url``, awaits it under its own
``asyncio.run`` (so the CLI works in-process, under ``CliRunner``, as well as from a shell) and
turns failures into one line. Rules: a ``RoostError`` (the broker said no), an unreachable
broker, or a ``CliError`` (the command's own refusal, such as a queue without a dead-letter
topic) prints ``error: <message>`` on stderr and exits 1, never with a traceback. Misused
options are click's usage errors (exit 2). Ctrl-C exits 130, or 0 where it is the way to stop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from rich.console import Console

from roost.client.api import Client
from roost.client.network import DEFAULT_PORT, connect, redacted
from roost.errors import RoostError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = f"roost://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_ADMIN_URL = "http://127.0.0.1:7480"
EXIT_INTERRUPTED = 130


class Settings(msgspec.Struct, kw_only=True):
    """The group's options, handed to every command as ``ctx.obj``."""

    url: str = DEFAULT_URL
    #: The broker's HTTP admin API, for the commands that use it (users, tokens, grants).
    admin_url: str = DEFAULT_ADMIN_URL
    #: An API token to present, or ``NAME[:PASSWORD]`` to authenticate as: never printed.
    token: str | None = None
    user: str | None = None
    #: TLS, for a roosts:// ``url`` (``roost.connect``'s options of the same names).
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class CliError(Exception):
    """A command refusing on its own account; printed like a broker's error."""


def json_option(command: F) -> F:
    """``--json``: print machine-readable JSON instead of a table or a line."""
    decorate = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON instead of a table or a line."
    )
    return decorate(command)


def run(body: Callable[[Client], Awaitable[T]], *, interrupt_is_exit: bool = False) -> T:
    """Connect to the group's ``--url``, await ``body(client)``, close; see the module doc.

    ``interrupt_is_exit``: Ctrl-C is how the command ends (``--watch``), so exit 0.
    """
    ctx = click.get_current_context()
    settings = ctx.find_object(Settings) or Settings()
    url = settings.url
    username, password = _user_and_password(settings.user)
    try:
        connecting = connect(
            url,
            ca_file=settings.ca_file,
            cert_file=settings.cert_file,
            key_file=settings.key_file,
            # --user and --token log in over the native protocol too, unless the URL says how.
            username=None if "@" in url else username,
            password=None if "@" in url else password,
            token=None if "@" in url else settings.token,
        )
    except ValueError as e:
        fail(ctx, str(e))
    except OSError as e:  # a TLS file that cannot be read
        fail(ctx, f"cannot read {e.filename}: {e.strerror or e}")

    async def session() -> T:
        async with connecting as client:
            return await body(client)

    try:
        return asyncio.run(session())
    except (RoostError, CliError) as e:
        fail(ctx, str(e))
    except OSError as e:
        fail(ctx, f"cannot reach the broker at {redacted(url)}: {e.strerror or e}")
    except KeyboardInterrupt:
        ctx.exit(0 if interrupt_is_exit else EXIT_INTERRUPTED)


def _user_and_password(user: str | None) -> tuple[str | None, str | None]:
    """``--user NAME[:PASSWORD]`` split; the password asked for when it is not given."""
    if user is None:
        return None, None
    name, colon, password = user.partition(":")
    if not colon:
        password = click.prompt(f"password of {name}", hide_input=True, err=True)
    return name, password


def fail(ctx: click.Context, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    ctx.exit(1)


def echo_json(value: object) -> None:
    """``value`` (structs, lists, dicts) as one JSON document on stdout; bytes as base64."""
    click.echo(json.dumps(msgspec.to_builtins(value)))


def done(as_json: bool, value: object, line: str) -> None:
    """Report a command's result: ``value`` as JSON, or ``line`` for people."""
    if as_json:
        echo_json(value)
    else:
        click.echo(line)


#: Columns a table may take when stdout is not a terminal: no width to fit, so none is cut.
PIPED_WIDTH = 100_000


def console() -> Console:
    """stdout for people: a terminal's width, or (piped, redirected) wide enough that no
    table is cut or wrapped for a reader such as ``grep`` or ``awk`` (rich would take 80)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPED_WIDTH, soft_wrap=True)


def show(*renderables: object) -> None:
    """Rich tables (or anything rich prints) on stdout."""
    console().print(*renderables)
