"""Users, their API tokens and their grants: every endpoint here is for administrators.

Each handler first checks that the caller holds ``admin`` (``NotAuthorised``: 403), then calls
``host.identities`` on the loop, as the other endpoints call the broker. A token's secret is
in the answer that creates it and nowhere else: listing shows ids, users and expiry only.
Passwords and secrets travel only in request and response bodies, which are never logged.

Granting what a user already holds answers 200 instead of 201; revoking what they do not
hold is 404, so a typo in a revoke is not mistaken for success.
"""

from __future__ import annotations

from roost.admin.endpoints import Answer, Call, Endpoint
from roost.admin.schemas import NewPassword, NewUser, TokenRequest, TokensQuery
from roost.server.access import Grant
from roost.server.identities import Identities, NewToken, TokenInfo, UserInfo

USERS = "/api/v1/users"
USER = USERS + "/{user}"
GRANTS = USER + "/grants"
TOKENS = "/api/v1/tokens"
TOKEN = TOKENS + "/{token}"


def _identities(call: Call) -> Identities:
    call.principal.check("admin", "broker")
    return call.host.identities


async def list_users(call: Call) -> list[UserInfo]:
    return _identities(call).list_users()


async def create_user(call: Call) -> UserInfo:
    body: NewUser = call.body
    return _identities(call).add_user(body.name, body.password, admin=body.admin)


async def describe_user(call: Call) -> UserInfo:
    return _identities(call).describe_user(call.path["user"])


async def delete_user(call: Call) -> None:
    _identities(call).delete_user(call.path["user"])


async def set_password(call: Call) -> None:
    body: NewPassword = call.body
    _identities(call).set_password(call.path["user"], body.password)


async def list_grants(call: Call) -> list[Grant]:
    return _identities(call).list_grants(call.path["user"])


async def grant(call: Call) -> Answer:
    identities, name, body = _identities(call), call.path["user"], call.body
    held = body in identities.list_grants(name)
    return Answer(200 if held else 201, identities.grant(name, body).grants)


async def revoke(call: Call) -> None:
    _identities(call).revoke(call.path["user"], call.body)


async def list_tokens(call: Call) -> list[TokenInfo]:
    query: TokensQuery = call.query
    identities = _identities(call)
    if query.user is not None:
        identities.describe_user(query.user)  # 404 for an unknown user, not []
    return identities.list_tokens(query.user)


async def create_token(call: Call) -> NewToken:
    body: TokenRequest = call.body
    identities = _identities(call)
    expires_ms = None
    if body.expires_in_ms is not None:
        expires_ms = call.host.clock.now_ms() + body.expires_in_ms
    return identities.create_token(body.user, expires_ms, body.description)


async def revoke_token(call: Call) -> None:
    _identities(call).revoke_token(call.path["token"])


ENDPOINTS = [
    Endpoint("GET", USERS, "List users", list_users, list[UserInfo], errors=(403,), tag="users"),
    Endpoint(
        "POST", USERS, "Create a user", create_user, UserInfo, 201, NewUser,
        errors=(400, 403, 409), tag="users",
    ),
    Endpoint(
        "GET", USER, "Describe a user and their grants", describe_user, UserInfo,
        errors=(403, 404), tag="users",
    ),
    Endpoint(
        "DELETE", USER, "Delete a user and their tokens", delete_user, None, 204,
        errors=(403, 404), tag="users",
    ),
    Endpoint(
        "PUT", USER + "/password", "Set a user's password", set_password, None, 204,
        NewPassword, errors=(400, 403, 404), tag="users",
    ),
    Endpoint(
        "GET", GRANTS, "List a user's grants", list_grants, list[Grant], errors=(403, 404),
        tag="users",
    ),
    Endpoint(
        "POST", GRANTS, "Grant a user an operation (already held: 200); answers their grants",
        grant, list[Grant], 201, Grant, errors=(400, 403, 404), tag="users", also=(200,),
    ),
    Endpoint(
        "DELETE", GRANTS, "Revoke a grant, given as the body", revoke, None, 204, Grant,
        errors=(400, 403, 404), tag="users",
    ),
    Endpoint(
        "GET", TOKENS, "List API tokens, without their secrets", list_tokens, list[TokenInfo],
        query=TokensQuery, errors=(403, 404), tag="tokens",
    ),
    Endpoint(
        "POST", TOKENS, "Create an API token: its secret is in this answer only",
        create_token, NewToken, 201, TokenRequest, errors=(400, 403, 404), tag="tokens",
    ),
    Endpoint(
        "DELETE", TOKEN, "Revoke an API token", revoke_token, None, 204, errors=(403, 404),
        tag="tokens",
    ),
]  # fmt: skip
