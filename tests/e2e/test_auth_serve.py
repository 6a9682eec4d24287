"""Authentication against a real ``roost serve`` process whose data directory has a user: the
blocking client and the CLI (``ROOST_URL`` with credentials) reach it, wrong credentials are
refused with ``not_authenticated``, and a password never shows in what the CLI prints."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from roost import sync
from roost.cli.main import main
from roost.clock import SystemClock
from roost.errors import NotAuthenticated
from roost.server.identities import Identities
from roost.storage import LocalEngine
from tests.e2e.test_serve import Server

PASSWORD = "s3cret: p@ss"  # ':' '@' and ' ' must be percent-encoded in a URL
ENCODED = "s3cret%3A%20p%40ss"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("auth") / "data"
    engine = LocalEngine.open(str(data), SystemClock())
    try:
        Identities(engine.metadata, SystemClock()).add_user("ada", PASSWORD, admin=True)
    finally:
        engine.close()
    server = Server(data)
    yield server
    server.stop()


def with_user(url: str, userinfo: str) -> str:
    return url.replace("roost://", f"roost://{userinfo}@")


def test_the_blocking_client_authenticates(server: Server) -> None:
    with sync.connect(with_user(server.url, f"ada:{ENCODED}")) as broker:
        broker.create_topic("sync-auth")
    with sync.connect(server.url, username="ada", password=PASSWORD) as broker:
        assert "sync-auth" in broker.list_topics()
    with pytest.raises(NotAuthenticated, match="wrong user name or password"):
        sync.connect(server.url, username="ada", password="not it at all")
    with pytest.raises(NotAuthenticated, match="requires authentication"):
        sync.connect(server.url)


def test_the_cli_takes_credentials_from_roost_url(server: Server) -> None:
    def cli(url: str) -> Result:
        return CliRunner().invoke(main, ["topic", "list", "--json"], env={"ROOST_URL": url})

    good = cli(with_user(server.url, f"ada:{ENCODED}"))
    assert good.exit_code == 0, (good.stdout, good.stderr)

    bad = cli(with_user(server.url, "ada:guess-number-one"))
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: authentication failed")
    assert "guess-number-one" not in bad.stderr

    gone = cli("roost://ada:guess-number-two@127.0.0.1:1")
    assert gone.exit_code == 1 and "cannot reach" in gone.stderr
    assert "guess-number-two" not in gone.stderr, "the password is not printed"
