"""Fuzz targets for the broker's edges that are not the native protocol: the admin API's
request bodies and ``roost serve``'s TOML config file.

Contracts: a body decodes into its endpoint's struct (``endpoints.decode_body``, what the
API runs) or fails as the API answers a bad body (``BadInput``: 400 or 422, or a
``RoostError`` a core type's own check raises), never anything that would be a 500; a body
that decodes encodes back to JSON that decodes to the same. A config file gives ``Settings``
or ``InvalidConfig``, which ``roost serve`` prints as one line.
"""

from __future__ import annotations

import atexit
import os
import shutil

import msgspec

from roost.admin.app import ENDPOINTS
from roost.admin.endpoints import BadInput, decode_body
from roost.errors import InvalidConfig, RoostError
from roost.server.serve import Settings, settings
from tests.fuzz.target import Target, scratch_directory

BODIES = sorted({e.body for e in ENDPOINTS if e.body is not None}, key=lambda t: t.__name__)


def check_body(data: bytes) -> None:
    if not data:
        return
    body = BODIES[data[0] % len(BODIES)]
    try:
        value = decode_body(body, data[1:])
    except (BadInput, RoostError):
        return
    wire = msgspec.json.encode(value)
    assert msgspec.json.encode(msgspec.json.decode(wire, type=body)) == wire


_DIRECTORY = scratch_directory()
atexit.register(shutil.rmtree, _DIRECTORY, True)
_CONFIG = os.path.join(_DIRECTORY, "roost.toml")


def check_config(data: bytes) -> None:
    with open(_CONFIG, "wb") as f:
        f.write(data)
    try:
        found = settings(_CONFIG, {}, {})
    except InvalidConfig:
        return
    assert isinstance(found, Settings)


def body_seeds() -> list[bytes]:
    examples = {
        "NewTopic": b'{"name":"t","config":{"partitions":3},"policy":{"overflow":"reject"}}',
        "RedriveRequest": b'{"rate_per_s":10.0,"where":{"key":"aGk="}}',
        "SeekRequest": b'{"member_id":"m","generation":1,"partition":0,"to":"earliest"}',
    }
    seeds = [bytes([i]) + b"{}" for i in range(len(BODIES))]
    for i, body in enumerate(BODIES):
        if body.__name__ in examples:
            seeds.append(bytes([i]) + examples[body.__name__])
    return seeds


def config_seeds() -> list[bytes]:
    return [
        b'[server]\ndata = "./data"\nport = 7420\nadmin = false\nadmin_hosts = ["a"]\n',
        b'[server]\nmax_frame_bytes = 1048576\n\n[tls]\ncert_file = "c.pem"\n'
        b'client_auth = "none"\n',
        b"",
    ]  # fmt: skip


TARGETS = {
    "admin_bodies": Target(
        "admin_bodies",
        "admin API request bodies (JSON) into each endpoint's struct: the errors the API "
        "answers 400/422 or a RoostError, never a 500; a body re-encodes to itself",
        check_body, body_seeds),
    "config_toml": Target(
        "config_toml",
        "roost serve's TOML file through serve.settings: Settings or InvalidConfig",
        check_config, config_seeds),
}  # fmt: skip
