"""Who may reach the broker unauthenticated, decided once at start and per connection.

The rule (docs/security.md): with no users defined the broker serves anonymously, as an
administrator, but only on loopback addresses, so ``make run`` and the quickstart stay one
command and nothing else on the network can reach an open broker. Once a user exists every
connection on every listener authenticates. Serving anonymously on any other address takes an
explicit ``--allow-anonymous``, which is logged as a warning at start.

``check_exposure`` refuses an unsafe start with one sentence saying how to fix it;
``anonymous_allowed`` is what a listener asks for each connection (users may be added or
deleted while it runs).
"""

from __future__ import annotations

import ipaddress
import logging

from roost.errors import InvalidConfig

log = logging.getLogger("roost.security")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP literal or a host name, as given to ``listen``) can only be
    reached from this machine. ``0.0.0.0`` and ``::`` are every interface: not loopback."""
    address = address.strip("[]")
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def anonymous_allowed(address: str, any_users: bool, allow_anonymous: bool) -> bool:
    """Whether a connection to a listener bound at ``address`` may go unauthenticated."""
    return not any_users and (allow_anonymous or is_loopback(address))


def check_exposure(listeners: dict[str, str], any_users: bool, allow_anonymous: bool) -> None:
    """Refuse to start (``InvalidConfig``, one sentence with the fix) when a listener in
    ``listeners`` (name -> address) would serve anonymously off loopback; with
    ``allow_anonymous``, warn instead."""
    if any_users:
        return
    exposed = {name: address for name, address in listeners.items() if not is_loopback(address)}
    if not exposed:
        return
    where = ", ".join(f"{name} on {address}" for name, address in exposed.items())
    if allow_anonymous:
        log.warning(
            "serving WITHOUT authentication on %s (--allow-anonymous): anyone who can reach "
            "it may do anything",
            where,
        )
        return
    raise InvalidConfig(
        "listen",
        where,
        "no users are defined, so the broker would serve anyone anonymously: add one first "
        "(roost user add NAME --admin --data DIR), listen on 127.0.0.1, or pass "
        "--allow-anonymous",
    )
