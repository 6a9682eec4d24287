"""``roost user``, ``token`` and ``acl`` offline (``--data``), in-process under CliRunner,
against a temporary data directory: what they print, what they store, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from roost.cli.admin_api import authorization
from roost.cli.main import main
from roost.clock import ManualClock
from roost.server.access import Grant
from roost.server.identities import Identities
from roost.storage import LocalEngine
from roost.storage.engine import open_metadata

PASSWORD = "correct horse"


def roost(data: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--data", data], input=input)


def ok(data: str, *args: str, input: str | None = None) -> Any:
    """``roost ARGS --data DATA --json``, parsed."""
    result = roost(data, *args, "--json", input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def failed(data: str, *args: str, input: str | None = None) -> str:
    """A command refused: its one line on stderr."""
    result = roost(data, *args, input=input)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def stored(data: str) -> Identities:
    """What the directory holds, read the way a broker would."""
    with open_metadata(data) as store:
        return Identities(store, ManualClock())


def test_users_add_list_passwd_delete(data_dir: str) -> None:
    added = ok(data_dir, "user", "add", "root", "--admin", "--password-stdin", input=PASSWORD)
    assert (added["name"], added["admin"]) == ("root", True)
    assert stored(data_dir).authenticate_password("root", PASSWORD).admin
    human = roost(data_dir, "user", "add", "ada", "--password-stdin", input=PASSWORD + "\r\n")
    assert (human.exit_code, human.stdout) == (0, "added user ada\n")
    assert stored(data_dir).authenticate_password("ada", PASSWORD).name == "ada"

    assert [(u["name"], u["admin"]) for u in ok(data_dir, "user", "list")] == [
        ("ada", False), ("root", True),
    ]  # fmt: skip
    table = roost(data_dir, "user", "list").stdout
    assert "ada" in table and "root" in table and "yes" in table

    assert ok(data_dir, "user", "passwd", "ada", "--password-stdin", input="new password\n") == {
        "user": "ada", "password_changed": True,
    }  # fmt: skip
    assert stored(data_dir).authenticate_password("ada", "new password").name == "ada"

    assert ok(data_dir, "user", "delete", "ada") == {"deleted": "ada"}
    assert [u["name"] for u in ok(data_dir, "user", "list")] == ["root"]
    assert failed(data_dir, "user", "delete", "ada") == "error: unknown user 'ada'"


def test_the_password_prompt_asks_twice(data_dir: str) -> None:
    typed = roost(data_dir, "user", "add", "ada", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert typed.exit_code == 0, typed.stderr
    assert PASSWORD not in typed.stdout + typed.stderr, "never echoed"
    assert stored(data_dir).authenticate_password("ada", PASSWORD).name == "ada"
    mistyped = roost(data_dir, "user", "add", "bob", input=f"{PASSWORD}\nsomething else\n")
    assert mistyped.exit_code != 0 and "do not match" in mistyped.stderr
    assert [u.name for u in stored(data_dir).list_users()] == ["ada"]


def test_user_refusals(data_dir: str) -> None:
    assert failed(data_dir, "user", "list") == f"error: no data directory at {data_dir}"
    assert not Path(data_dir).exists(), "only user add makes the directory"
    ok(data_dir, "user", "add", "ada", "--password-stdin", input=PASSWORD)
    assert "already exists" in failed(
        data_dir, "user", "add", "ada", "--password-stdin", input=PASSWORD
    )
    line = failed(data_dir, "user", "add", "bob", "--password-stdin", input="short")
    assert "between 8 and 1024" in line and "short" not in line
    assert "invalid user name" in failed(
        data_dir, "user", "add", "b b", "--password-stdin", input=PASSWORD
    )
    assert failed(data_dir, "user", "passwd", "nobody", "--password-stdin", input=PASSWORD) == (
        "error: unknown user 'nobody'"
    )


def test_a_running_broker_holds_the_directory(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    try:
        line = failed(data_dir, "user", "add", "ada", "--password-stdin", input=PASSWORD)
        assert line == (
            f"error: a broker is running on {data_dir}: leave out --data to go through its "
            "admin API"
        )
        assert "a broker is running" in failed(data_dir, "acl", "list")
        assert engine.metadata.names("users") == []
    finally:
        engine.close()


def test_tokens_create_list_revoke(data_dir: str) -> None:
    ok(data_dir, "user", "add", "ada", "--password-stdin", input=PASSWORD)
    made = roost(data_dir, "token", "create", "ada", "--expires", "30d", "--description", "ci")
    assert made.exit_code == 0, made.stderr
    secret = made.stdout.strip()
    assert made.stdout == secret + "\n", "the secret alone on stdout"
    assert "not shown again" in made.stderr and secret not in made.stderr
    identities = stored(data_dir)
    assert identities.authenticate_token(secret).name == "ada"
    assert secret.encode() not in Path(data_dir, "metadata.json.journal").read_bytes()

    as_json = ok(data_dir, "token", "create", "ada")
    assert as_json["secret"].startswith(f"rst_{as_json['id']}_") and as_json["expires_ms"] is None
    [first, second] = ok(data_dir, "token", "list")
    assert "secret" not in first and first["description"] == "ci"
    day_ms = 86_400_000
    assert 30 * day_ms - 60_000 < first["expires_ms"] - first["created_ms"] <= 30 * day_ms
    assert ok(data_dir, "token", "list", "--user", "ada") == [first, second]
    listed = roost(data_dir, "token", "list")
    assert first["id"] in listed.stdout and secret not in listed.stdout
    assert failed(data_dir, "token", "list", "--user", "bob") == "error: unknown user 'bob'"

    assert ok(data_dir, "token", "revoke", first["id"]) == {"revoked": first["id"]}
    assert [t["id"] for t in ok(data_dir, "token", "list")] == [second["id"]]
    assert "unknown token" in failed(data_dir, "token", "revoke", first["id"])
    assert failed(data_dir, "token", "create", "bob") == "error: unknown user 'bob'"


@pytest.mark.parametrize("expires", ["0d", "30", "d", "1y", "-1h", "1.5h"])
def test_token_expiry_must_be_a_count_and_a_unit(data_dir: str, expires: str) -> None:
    result = roost(data_dir, "token", "create", "ada", "--expires", expires)
    assert result.exit_code == 2 and "30d, 12h, 90m" in result.stderr


def test_acl_grant_list_revoke(data_dir: str) -> None:
    ok(data_dir, "user", "add", "ada", "--password-stdin", input=PASSWORD)
    granted = ok(data_dir, "acl", "grant", "ada", "publish", "topic:orders.*")
    orders = {"operation": "publish", "kind": "topic", "pattern": "orders.*"}
    assert granted == {"user": "ada", "grant": orders, "changed": True, "grants": [orders]}
    assert ok(data_dir, "acl", "grant", "ada", "publish", "topic:orders.*")["changed"] is False
    again = roost(data_dir, "acl", "grant", "ada", "publish", "topic:orders.*")
    assert again.stdout == "ada already holds publish topic:orders.*\n"
    assert roost(data_dir, "acl", "grant", "ada", "monitor").stdout == "granted ada monitor\n"
    ok(data_dir, "acl", "grant", "ada", "consume", "queue:emails")
    ada = stored(data_dir).principal("ada")
    assert ada.may("publish", "topic", "orders.eu") and ada.monitor
    assert ada.may("consume", "group", "emails") and not ada.may("publish", "topic", "orders")

    monitor = {"operation": "monitor", "kind": "broker", "pattern": ""}
    emails = {"operation": "consume", "kind": "queue", "pattern": "emails"}
    assert ok(data_dir, "acl", "list", "ada") == {"ada": [orders, monitor, emails]}
    ok(data_dir, "user", "add", "root", "--admin", "--password-stdin", input=PASSWORD)
    assert ok(data_dir, "acl", "list")["root"] == [{**monitor, "operation": "admin"}]
    table = roost(data_dir, "acl", "list").stdout
    assert "topic:orders.*" in table and "broker" in table

    revoked = ok(data_dir, "acl", "revoke", "ada", "publish", "topic:orders.*")
    assert revoked["grants"] == [monitor, emails]
    assert failed(data_dir, "acl", "revoke", "ada", "publish", "topic:orders.*") == (
        "error: user 'ada' holds no grant 'publish topic:orders.*'"
    )
    assert stored(data_dir).list_grants("ada") == [
        Grant("monitor"),
        Grant("consume", "queue", "emails"),
    ]
    assert failed(data_dir, "acl", "grant", "bob", "monitor") == "error: unknown user 'bob'"
    assert failed(data_dir, "acl", "list", "bob") == "error: unknown user 'bob'"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["read", "topic:x"], "invalid operation='read'"),
        (["publish"], "KIND:PATTERN"),
        (["publish", "table:x"], "invalid resource kind='table'"),
        (["publish", "topic:x*"], "whole words"),
        (["admin", "topic:x"], "broker-wide"),
    ],
)
def test_acl_refuses_a_malformed_grant_as_a_usage_error(
    data_dir: str, args: list[str], says: str
) -> None:
    result = roost(data_dir, "acl", "grant", "ada", *args)
    assert result.exit_code == 2 and says in result.stderr


def test_credentials_become_one_authorization_header() -> None:
    assert authorization("rst_x_y", None) == "Bearer rst_x_y"
    assert authorization(None, "ada:pass:word") == "Basic YWRhOnBhc3M6d29yZA=="
    assert authorization(None, None) is None
    both = CliRunner().invoke(main, ["--token", "t", "--user", "ada:pw", "user", "list"])
    assert both.exit_code == 2 and "not both" in both.stderr
