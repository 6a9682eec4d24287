"""``roost user ...``, ``roost token ...`` and ``roost acl ...``: who may connect, and what
they may do.

Two ways to reach the users, the same commands and answers either way:

- online (the default): through the admin API of the running broker at ``--admin-url``,
  authenticating with ``--token`` (``ROOST_TOKEN``) or ``--user NAME[:PASSWORD]``;
- offline, ``--data DIR``: straight into that data directory's metadata store, while no
  broker runs. Only the metadata is opened, under the directory's LOCK; if a broker holds it,
  the command says so and stops (two writers would lose each other's changes). This is how
  the first administrator is made before a broker ever serves the directory; ``user add``
  makes the directory when it is missing, the other commands never do.

Rules: passwords come from a prompt (asked twice) or, with ``--password-stdin``, from the
first line of stdin; never from an argument, which ``ps`` and shell history would keep. A
token's secret is printed once, when made: alone on stdout, so ``$(roost token create ada)``
captures it, with what it is on stderr. Nothing here logs. Failures print one line, as the
client commands' do (``session.fail``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from roost.cli import render
from roost.cli.admin_api import RemoteIdentities, admin_api
from roost.cli.session import CliError, done, echo_json, fail, json_option, show
from roost.clock import SystemClock
from roost.errors import DirectoryInUse, RoostError
from roost.server.access import Grant
from roost.server.identities import Identities, NewToken, TokenInfo, UserInfo
from roost.storage.engine import open_metadata

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: ``30d``, ``12h``: a count and a unit.
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class Users(Protocol):
    """What the commands need: ``Identities`` offline, ``RemoteIdentities`` online."""

    def list_users(self) -> list[UserInfo]: ...
    def describe_user(self, name: str) -> UserInfo: ...
    def add_user(self, name: str, password: str, admin: bool = False) -> UserInfo: ...
    def delete_user(self, name: str) -> None: ...
    def set_password(self, name: str, password: str) -> None: ...
    def list_grants(self, name: str) -> list[Grant]: ...
    def grant(self, name: str, grant: Grant) -> UserInfo: ...
    def revoke(self, name: str, grant: Grant) -> UserInfo: ...
    def list_tokens(self, user: str | None = None) -> list[TokenInfo]: ...
    def create_token(
        self, user: str, expires_ms: int | None = None, description: str = ""
    ) -> NewToken: ...
    def revoke_token(self, token_id: str) -> None: ...


def data_option(command: F) -> F:
    decorate = click.option(
        "--data",
        type=click.Path(file_okay=False),
        default=None,
        metavar="DIR",
        help="Change the data directory DIR itself, while no broker runs on it.",
    )
    return decorate(command)


def with_users(data: str | None, body: Callable[[Users], T], create: bool = False) -> T:
    """``body`` over the users of ``--data`` (offline) or of the broker (online); any
    failure is one line and exit 1."""
    ctx = click.get_current_context()
    try:
        if data is None:
            return body(_remote(ctx))
        if not create and not os.path.isdir(data):
            raise CliError(f"no data directory at {data}")
        with open_metadata(data, create=create) as store:
            return body(Identities(store, SystemClock()))
    except DirectoryInUse:
        fail(ctx, f"a broker is running on {data}: leave out --data to go through its admin API")
    except (RoostError, CliError) as e:
        fail(ctx, str(e))


def _remote(ctx: click.Context) -> RemoteIdentities:
    return RemoteIdentities(admin_api(ctx))


def _password(from_stdin: bool, name: str) -> str:
    if from_stdin:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    return str(
        click.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True, err=True)
    )


def _password_option(command: F) -> F:
    decorate = click.option(
        "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
    )
    return decorate(command)


def _grant(operation: str, resource: str | None) -> Grant:
    try:
        return Grant.parse(operation, resource or "")
    except RoostError as e:
        raise click.BadParameter(str(e)) from None


# -- users ----------------------------------------------------------------------------------


@click.group("user")
def user_group() -> None:
    """Users: who may connect (with a password, or with their API tokens)."""


@user_group.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Grant admin: everything, users included.")
@_password_option
@data_option
@json_option
def user_add(name: str, admin: bool, password_stdin: bool, data: str | None, as_json: bool) -> None:
    """Add user NAME (the password is asked for twice)."""
    password = _password(password_stdin, name)
    info = with_users(data, lambda users: users.add_user(name, password, admin), create=True)
    done(as_json, info, f"added user {name}" + (" (admin)" if info.admin else ""))


@user_group.command("list")
@data_option
@json_option
def user_list(data: str | None, as_json: bool) -> None:
    """Every user, with their grants."""
    found = with_users(data, lambda users: users.list_users())
    if as_json:
        echo_json(found)
    else:
        show(render.users_table(found))


@user_group.command("passwd")
@click.argument("name")
@_password_option
@data_option
@json_option
def user_passwd(name: str, password_stdin: bool, data: str | None, as_json: bool) -> None:
    """Set user NAME's password (their tokens and grants stay)."""

    def check_then_ask(users: Users) -> None:
        users.describe_user(name)  # an unknown user before a password is typed twice
        users.set_password(name, _password(password_stdin, name))

    with_users(data, check_then_ask)
    done(as_json, {"user": name, "password_changed": True}, f"changed the password of {name}")


@user_group.command("delete")
@click.argument("name")
@data_option
@json_option
def user_delete(name: str, data: str | None, as_json: bool) -> None:
    """Delete user NAME and their tokens."""
    with_users(data, lambda users: users.delete_user(name))
    done(as_json, {"deleted": name}, f"deleted user {name} and their tokens")


# -- tokens ---------------------------------------------------------------------------------


class Duration(click.ParamType[int]):
    """``45s``, ``90m``, ``12h``, ``30d``, ``2w``: milliseconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        found = _DURATION.fullmatch(str(value).strip())
        if found is None or int(found.group(1)) == 0:
            self.fail(f"{value!r}: a positive count and a unit, e.g. 30d, 12h, 90m", param, ctx)
        return int(found.group(1)) * _UNIT_MS[found.group(2)]


@click.group("token")
def token_group() -> None:
    """API tokens: a secret a program presents instead of a password."""


@token_group.command("create")
@click.argument("user")
@click.option("--expires", type=Duration(), default=None, help="Valid this long: 30d, 12h...")
@click.option("--description", default="", help="What it is for (shown by token list).")
@data_option
@json_option
def token_create(
    user: str, expires: int | None, description: str, data: str | None, as_json: bool
) -> None:
    """A new token for USER; its secret is printed now and never again."""
    expires_ms = None if expires is None else SystemClock().now_ms() + expires
    made = with_users(data, lambda users: users.create_token(user, expires_ms, description))
    if as_json:
        echo_json(made)
        return
    click.echo(made.secret)
    until = (
        "never expires" if made.expires_ms is None else f"expires {render.when(made.expires_ms)}"
    )
    click.echo(
        f"token {made.id} for {user} ({until}): keep it now, it is not shown again", err=True
    )


@token_group.command("list")
@click.option("--user", default=None, help="Only this user's tokens.")
@data_option
@json_option
def token_list(user: str | None, data: str | None, as_json: bool) -> None:
    """Tokens (their ids, never their secrets), oldest first."""

    def listed(users: Users) -> list[TokenInfo]:
        if user is not None:
            users.describe_user(user)  # unknown user: an error, not an empty list
        return users.list_tokens(user)

    found = with_users(data, listed)
    if as_json:
        echo_json(found)
        return
    show(render.tokens_table(found))


@token_group.command("revoke")
@click.argument("token_id", metavar="ID")
@data_option
@json_option
def token_revoke(token_id: str, data: str | None, as_json: bool) -> None:
    """Revoke token ID: it is refused from now on."""
    with_users(data, lambda users: users.revoke_token(token_id))
    done(as_json, {"revoked": token_id}, f"revoked token {token_id}")


# -- grants ---------------------------------------------------------------------------------

_OPERATIONS_HELP = """OPERATION is publish, consume or manage on a RESOURCE written KIND:PATTERN
(KIND topic, queue, exchange or group; PATTERN with * for one word, # for any), or
admin or monitor alone, broker-wide."""


@click.group("acl")
def acl_group() -> None:
    """Grants: what each user may do."""


@acl_group.command("grant", epilog=_OPERATIONS_HELP)
@click.argument("user")
@click.argument("operation")
@click.argument("resource", required=False)
@data_option
@json_option
def acl_grant(
    user: str, operation: str, resource: str | None, data: str | None, as_json: bool
) -> None:
    """Let USER do OPERATION (on RESOURCE): acl grant ada publish topic:orders.*"""
    grant = _grant(operation, resource)

    def granting(users: Users) -> tuple[bool, UserInfo]:
        held = grant in users.list_grants(user)
        return not held, users.grant(user, grant)

    changed, info = with_users(data, granting)
    line = f"granted {user} {grant}" if changed else f"{user} already holds {grant}"
    done(as_json, {"user": user, "grant": grant, "changed": changed, "grants": info.grants}, line)


@acl_group.command("revoke", epilog=_OPERATIONS_HELP)
@click.argument("user")
@click.argument("operation")
@click.argument("resource", required=False)
@data_option
@json_option
def acl_revoke(
    user: str, operation: str, resource: str | None, data: str | None, as_json: bool
) -> None:
    """Take OPERATION (on RESOURCE) from USER, exactly as it was granted."""
    grant = _grant(operation, resource)
    info = with_users(data, lambda users: users.revoke(user, grant))
    done(as_json, {"user": user, "revoked": grant, "grants": info.grants},
         f"revoked {grant} from {user}")  # fmt: skip


@acl_group.command("list")
@click.argument("user", required=False)
@data_option
@json_option
def acl_list(user: str | None, data: str | None, as_json: bool) -> None:
    """USER's grants (default: every user's)."""

    def listed(users: Users) -> list[UserInfo]:
        return [users.describe_user(user)] if user is not None else users.list_users()

    found = with_users(data, listed)
    if as_json:
        echo_json({info.name: info.grants for info in found})
        return
    show(render.grants_table(found))
