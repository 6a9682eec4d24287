"""Users, their API tokens and their grants: every endpoint here is for administrators.

Each handler calls the door's user, token and grant commands, which need ``admin``
(``NotAuthorised``: 403), as the other endpoints call the door's broker commands. A token's
secret is in the answer that creates it and nowhere else: listing shows ids, users and expiry.
Passwords and secrets travel only in request and response bodies, which are never logged.

Granting what a user already holds answers 200 instead of 201; revoking what they do not
hold is 404, so a typo in a revoke is not mistaken for success.
"""

from __future__ import annotations

from roost.admin.endpoints import Answer, Call, Endpoint
from roost.admin.schemas import NewPassword, NewUser, TokenRequest, TokensQuery
from roost.server.access import Grant
from roost.server.identities import NewToken, TokenInfo, UserInfo

USERS = "/api/v1/users"
USER = USERS + "/{user}"
GRANTS = USER + "/grants"
TOKENS = "/api/v1/tokens"
TOKEN = TOKENS + "/{token}"


async def list_users(call: Call) -> list[UserInfo]:
    return call.door.list_users()


async def create_user(call: Call) -> UserInfo:
    body: NewUser = call.body
    return call.door.add_user(body.name, body.password, admin=body.admin)


async def describe_user(call: Call) -> UserInfo:
    return call.door.describe_user(call.path["user"])


async def delete_user(call: Call) -> None:
    call.door.delete_user(call.path["user"])


async def set_password(call: Call) -> None:
    body: NewPassword = call.body
    call.door.set_password(call.path["user"], body.password)


async def list_grants(call: Call) -> list[Grant]:
    return call.door.list_grants(call.path["user"])


async def grant(call: Call) -> Answer:
    name, body = call.path["user"], call.body
    held = body in call.door.list_grants(name)
    return Answer(200 if held else 201, call.door.grant(name, body).grants)


async def revoke(call: Call) -> None:
    call.door.revoke(call.path["user"], call.body)


async def list_tokens(call: Call) -> list[TokenInfo]:
    query: TokensQuery = call.query
    return call.door.list_tokens(query.user)


async def create_token(call: Call) -> NewToken:
    body: TokenRequest = call.body
    return call.door.create_token(body.user, body.expires_in_ms, body.description)


async def revoke_token(call: Call) -> None:
    call.door.revoke_token(call.path["token"])


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
