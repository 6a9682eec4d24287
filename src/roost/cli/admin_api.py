"""The admin API from the command line: a small synchronous HTTP client, and the users,
tokens and grants of a running broker behind the same methods as ``Identities``.

    api = AdminApi("http://127.0.0.1:7480", authorization("rst_...", None))
    RemoteIdentities(api).list_users()

Rules: the standard library's HTTP (one request per call, no pooling: a command makes a few);
credentials go in the ``Authorization`` header, a token as ``Bearer``, a ``NAME:PASSWORD`` as
``Basic``, and are never printed. An error answer becomes ``ApiError`` carrying the broker's
stable code and its message, which the command prints as it would a local ``RoostError``;
a broker that cannot be reached is ``ApiError`` with code ``unreachable``.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TypeVar

import click
import msgspec

from roost.cli.session import CliError, Settings
from roost.clock import Clock, SystemClock
from roost.server.access import Grant
from roost.server.identities import NewToken, TokenInfo, UserInfo

T = TypeVar("T")

USERS = "/api/v1/users"
TOKENS = "/api/v1/tokens"
TIMEOUT_S = 30.0


class ApiError(CliError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def authorization(token: str | None, credentials: str | None) -> str | None:
    """The ``Authorization`` header for a token or ``NAME:PASSWORD``; None for neither."""
    if token is not None:
        return f"Bearer {token}"
    if credentials is not None:
        return "Basic " + base64.b64encode(credentials.encode()).decode()
    return None


class AdminApi:
    def __init__(
        self,
        url: str,
        authorization: str | None,
        timeout_s: float = TIMEOUT_S,
        ca_file: str | None = None,
    ) -> None:
        """``ca_file``: for an ``https://`` admin API, the CA its certificate is checked
        against (else the system's trust store); host names are always checked."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"admin URL {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.url = url.rstrip("/")
        self._authorization = authorization
        self._timeout_s = timeout_s
        self._tls = ssl.create_default_context(cafile=ca_file) if parsed.scheme == "https" else None

    def call(
        self,
        method: str,
        path: str,
        answer: type[T],
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> T:
        """Send ``body`` (msgspec-encodable), decode the answer as ``answer``."""
        return msgspec.json.decode(self._send(method, path, body, query), type=answer)

    def send(self, method: str, path: str, body: Any = None) -> None:
        """Send ``body``; the answer's body, if any, is not needed."""
        self._send(method, path, body, None)

    def _send(self, method: str, path: str, body: Any, query: dict[str, str] | None) -> bytes:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        if method not in ("GET", "HEAD"):
            # The admin API refuses a state change that is not JSON, body or not (CSRF).
            headers["Content-Type"] = "application/json"
        data = None if body is None else msgspec.json.encode(body)
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(url, data, headers, method=method)
        try:
            with urllib.request.urlopen(
                request, timeout=self._timeout_s, context=self._tls
            ) as response:
                content: bytes = response.read()
                return content
        except urllib.error.HTTPError as e:
            raise _error(e.code, e.read()) from None
        except OSError as e:  # URLError is one; refused, reset, timed out
            reason = getattr(e, "reason", None) or e.strerror or e
            raise ApiError(
                0, "unreachable", f"cannot reach the admin API at {self.url}: {reason}"
            ) from None


def admin_api(ctx: click.Context) -> AdminApi:
    """The admin API the group's ``--admin-url`` names, with its ``--token`` or ``--user``
    (a password not given is asked for)."""
    settings = ctx.find_object(Settings) or Settings()
    credentials = settings.user
    if credentials is not None and ":" not in credentials:
        password = click.prompt(f"password of {credentials}", hide_input=True, err=True)
        credentials = f"{credentials}:{password}"
    return AdminApi(
        settings.admin_url, authorization(settings.token, credentials), ca_file=settings.ca_file
    )


def _error(status: int, content: bytes) -> ApiError:
    try:
        error = json.loads(content)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, "http_error", f"the admin API answered HTTP {status}")


class RemoteIdentities:
    """``Identities``' methods, over the admin API of a running broker."""

    def __init__(self, api: AdminApi, clock: Clock | None = None) -> None:
        self._api = api
        self._clock = clock or SystemClock()

    def list_users(self) -> list[UserInfo]:
        return self._api.call("GET", USERS, list[UserInfo])

    def describe_user(self, name: str) -> UserInfo:
        return self._api.call("GET", _user(name), UserInfo)

    def add_user(self, name: str, password: str, admin: bool = False) -> UserInfo:
        body = {"name": name, "password": password, "admin": admin}
        return self._api.call("POST", USERS, UserInfo, body)

    def delete_user(self, name: str) -> None:
        self._api.send("DELETE", _user(name))

    def set_password(self, name: str, password: str) -> None:
        self._api.send("PUT", _user(name) + "/password", {"password": password})

    def list_grants(self, name: str) -> list[Grant]:
        return self._api.call("GET", _user(name) + "/grants", list[Grant])

    def grant(self, name: str, grant: Grant) -> UserInfo:
        self._api.send("POST", _user(name) + "/grants", grant)
        return self.describe_user(name)

    def revoke(self, name: str, grant: Grant) -> UserInfo:
        self._api.send("DELETE", _user(name) + "/grants", grant)
        return self.describe_user(name)

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        query = {"user": user} if user is not None else None
        return self._api.call("GET", TOKENS, list[TokenInfo], query=query)

    def create_token(
        self, user: str, expires_ms: int | None = None, description: str = ""
    ) -> NewToken:
        """As ``Identities.create_token``; the broker is sent how long from now, so a clock
        of its that differs from ours moves nothing."""
        body: dict[str, Any] = {"user": user, "description": description}
        if expires_ms is not None:
            body["expires_in_ms"] = max(1, expires_ms - self._clock.now_ms())
        return self._api.call("POST", TOKENS, NewToken, body)

    def revoke_token(self, token_id: str) -> None:
        self._api.send("DELETE", f"{TOKENS}/{_quote(token_id)}")


def _user(name: str) -> str:
    return f"{USERS}/{_quote(name)}"


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
