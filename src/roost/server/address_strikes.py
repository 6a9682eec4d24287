"""What each peer address did wrong lately, counted in a sliding window.

The broker counts two kinds of strikes per address: failed logins (``failed_logins``) and
connections ended by a protocol error (``protocol_strikes``). Each is a table of addresses,
each with the times of its recent strikes; past ``limit`` strikes within ``window_ms`` an
address must wait until its oldest strike leaves the window. What waiting means is the
caller's: a login is refused at once, a new connection is held unread for a while.

Counting by address is what one misbehaving host cannot get round by opening more
connections; a distributed one still can (docs/security.md, docs/operations.md).

    strikes = AddressStrikes(clock, limit=20, window_ms=10_000)
    strikes.strike("10.0.0.1")
    strikes.wait_ms("10.0.0.1")      # 0 while under the limit
"""

from __future__ import annotations

from collections import deque
from typing import Final

from roost.clock import Clock

#: Addresses remembered at most: a flood of addresses cannot grow the table without bound.
MAX_ADDRESSES: Final = 10_000


def peer_address(peer: object) -> str:
    """The address part of a peer name (``(host, port)``, or more for IPv6)."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class AddressStrikes:
    def __init__(
        self, clock: Clock, limit: int, window_ms: int, max_addresses: int = MAX_ADDRESSES
    ) -> None:
        self._clock = clock
        self.limit = limit
        self.window_ms = window_ms
        self.max_addresses = max_addresses
        #: address -> when (monotonic ms) each recent strike was, oldest first.
        self._strikes: dict[str, deque[int]] = {}

    def wait_ms(self, address: str) -> int:
        """How long ``address`` must wait: 0 while it has fewer than ``limit`` strikes within
        the window, else until its oldest one leaves it."""
        recent = self._recent(address)
        if recent is None or len(recent) < self.limit:
            return 0
        return max(recent[0] + self.window_ms - self._clock.monotonic_ms(), 0)

    def strike(self, address: str) -> None:
        """Count one strike of ``address`` now."""
        recent = self._recent(address)
        if recent is None:
            if len(self._strikes) >= self.max_addresses:
                self._forget_quiet()
            recent = self._strikes[address] = deque()
        recent.append(self._clock.monotonic_ms())
        while len(recent) > self.limit:
            recent.popleft()

    def __len__(self) -> int:
        """Addresses remembered now (quiet ones may still be among them)."""
        return len(self._strikes)

    def _recent(self, address: str) -> deque[int] | None:
        recent = self._strikes.get(address)
        if recent is None:
            return None
        cutoff = self._clock.monotonic_ms() - self.window_ms
        while recent and recent[0] <= cutoff:
            recent.popleft()
        if not recent:
            del self._strikes[address]
            return None
        return recent

    def _forget_quiet(self) -> None:
        """Drop the addresses with nothing in the window; if none, the oldest half."""
        for address in list(self._strikes):
            self._recent(address)
        if len(self._strikes) >= self.max_addresses:
            for address in list(self._strikes)[: self.max_addresses // 2]:
                del self._strikes[address]
