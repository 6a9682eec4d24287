"""``roost user``, ``token`` and ``acl`` online: through the admin API of a real ``roost
serve``, run in-process by CliRunner. One server for the module.

The first user made is an administrator, and every command after it authenticates as that
user (``--user``) or with a token of theirs (``--token``), as they must once a broker has
users.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from roost.cli.main import main
from tests.e2e.test_serve import Server

PASSWORD = "correct horse"
ROOT = ["--user", f"root:{PASSWORD}"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("cli-identities") / "data")
    yield server
    server.stop()


def roost(server: Server, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--admin-url", server.admin_url, *args], input=input)


def ok(server: Server, *args: str, input: str | None = None) -> Any:
    result = roost(server, *args, "--json", input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def failed(server: Server, *args: str) -> str:
    result = roost(server, *args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


@pytest.fixture(scope="module")
def root(server: Server) -> list[str]:
    """The administrator every test authenticates as."""
    ok(server, "user", "add", "root", "--admin", "--password-stdin", input=PASSWORD)
    return ROOT


def test_users_through_the_admin_api(server: Server, root: list[str]) -> None:
    added = ok(server, *root, "user", "add", "u-ada", "--password-stdin", input=PASSWORD)
    assert (added["name"], added["admin"]) == ("u-ada", False)
    assert "u-ada" in [u["name"] for u in ok(server, *root, "user", "list")]
    assert "u-ada" in roost(server, *root, "user", "list").stdout
    assert ok(server, *root, "user", "passwd", "u-ada", "--password-stdin",
              input="new password")["password_changed"]  # fmt: skip
    assert ok(server, *root, "user", "delete", "u-ada") == {"deleted": "u-ada"}
    assert "u-ada" not in [u["name"] for u in ok(server, *root, "user", "list")]
    assert failed(server, *root, "user", "delete", "u-ada") == "error: unknown user 'u-ada'"
    assert (
        "already exists"
        in roost(server, *root, "user", "add", "root", "--password-stdin", input=PASSWORD).stderr
    )


def test_tokens_through_the_admin_api(server: Server, root: list[str]) -> None:
    made = roost(server, *root, "token", "create", "root", "--expires", "1h",
                 "--description", "e2e")  # fmt: skip
    assert made.exit_code == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("rst_") and secret not in made.stderr

    # The token alone is enough to go on with.
    listed = ok(server, "--token", secret, "token", "list", "--user", "root")
    [mine] = [t for t in listed if t["description"] == "e2e"]
    assert "secret" not in mine
    assert 3_600_000 - 60_000 < mine["expires_ms"] - mine["created_ms"] <= 3_600_000
    assert secret not in roost(server, *root, "token", "list").stdout
    assert ok(server, *root, "token", "revoke", mine["id"]) == {"revoked": mine["id"]}
    assert mine["id"] not in [t["id"] for t in ok(server, *root, "token", "list")]
    assert "unknown token" in failed(server, *root, "token", "revoke", mine["id"])


def test_grants_through_the_admin_api(server: Server, root: list[str]) -> None:
    ok(server, *root, "user", "add", "g-ada", "--password-stdin", input=PASSWORD)
    granted = ok(server, *root, "acl", "grant", "g-ada", "publish", "topic:orders.*")
    assert (granted["changed"], [str(g["pattern"]) for g in granted["grants"]]) == (
        True, ["orders.*"],
    )  # fmt: skip
    assert (
        ok(server, *root, "acl", "grant", "g-ada", "publish", "topic:orders.*")["changed"] is False
    )
    assert (
        roost(server, *root, "acl", "grant", "g-ada", "monitor").stdout == "granted g-ada monitor\n"
    )
    assert [g["operation"] for g in ok(server, *root, "acl", "list", "g-ada")["g-ada"]] == [
        "publish", "monitor",
    ]  # fmt: skip
    ok(server, *root, "acl", "revoke", "g-ada", "monitor")
    assert failed(server, *root, "acl", "revoke", "g-ada", "monitor") == (
        "error: user 'g-ada' holds no grant 'monitor'"
    )
    assert failed(server, *root, "acl", "grant", "nobody", "monitor") == (
        "error: unknown user 'nobody'"
    )


def test_offline_commands_refuse_a_served_directory(server: Server, root: list[str]) -> None:
    line = failed(server, "user", "list", "--data", str(server.data_dir))
    assert line == (
        f"error: a broker is running on {server.data_dir}: leave out --data to go through "
        "its admin API"
    )


def test_an_unreachable_admin_api_is_one_line(server: Server) -> None:
    result = CliRunner().invoke(main, ["--admin-url", "http://127.0.0.1:1", "user", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the admin API at http://127.0.0.1:1")
    assert len(result.stderr.splitlines()) == 1
    bad = CliRunner().invoke(main, ["--admin-url", "roost://127.0.0.1:7420", "user", "list"])
    assert bad.exit_code == 1 and "expected http://HOST:PORT" in bad.stderr


def test_user_and_token_log_in_over_the_native_protocol_too(
    server: Server, root: list[str]
) -> None:
    """Once users exist the broker's commands need a login as well: ``--user`` and
    ``--token`` give it, as they do for the admin API."""
    anonymous = CliRunner().invoke(main, ["--url", server.url, "topic", "list"])
    assert anonymous.exit_code == 1
    assert "authentication failed" in anonymous.stderr
    listed = CliRunner().invoke(main, ["--url", server.url, *root, "topic", "list", "--json"])
    assert listed.exit_code == 0, listed.stderr
    token = ok(server, *root, "token", "create", "root")["secret"]
    with_token = ["--url", server.url, "--token", token, "topic", "list", "--json"]
    assert CliRunner().invoke(main, with_token).exit_code == 0
