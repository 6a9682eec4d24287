"""How many logins each address got wrong lately, and when it must wait.

A delay after a wrong password slows one connection, not a client that hangs up at the first
silence and guesses again on many connections at once. So failures are counted per peer
address, across every listener: past ``limit`` failures within ``window_ms`` the address is
refused at once, without a check (no PBKDF2, nothing learnt), until its oldest counted failure
leaves the window. A success does not clear the count: the same address may be guessing for
another user.

Counting by name instead would let anyone lock any user out; counting by address is what a
distributed guesser gets round, which is why passwords must still be long (docs/security.md).

    failures = FailedLogins(clock)
    failures.check(address)          # NotAuthenticated if it must wait
    failures.failed(address)         # after a wrong password, token or certificate
"""

from __future__ import annotations

from collections import deque
from typing import Final

from roost.clock import Clock
from roost.errors import NotAuthenticated

#: Failures an address may have within the window before it must wait.
LIMIT: Final = 20
WINDOW_MS: Final = 60_000
#: Addresses remembered at most: a flood of addresses cannot grow the table without bound.
MAX_ADDRESSES: Final = 10_000


class FailedLogins:
    def __init__(self, clock: Clock, limit: int = LIMIT, window_ms: int = WINDOW_MS) -> None:
        self._clock = clock
        self.limit = limit
        self.window_ms = window_ms
        #: address -> when (monotonic ms) each recent failure was, oldest first.
        self._failures: dict[str, deque[int]] = {}

    def check(self, address: str) -> None:
        """Raise ``NotAuthenticated`` (saying how long to wait) while ``address`` has had
        ``limit`` failures within the window."""
        recent = self._recent(address)
        if recent is not None and len(recent) >= self.limit:
            wait_s = (recent[0] + self.window_ms - self._clock.monotonic_ms()) / 1000
            raise NotAuthenticated(
                f"too many failed logins from this address: try again in {max(wait_s, 0):.0f} s"
            )

    def failed(self, address: str) -> None:
        """Count one failure of ``address`` now."""
        recent = self._recent(address)
        if recent is None:
            if len(self._failures) >= MAX_ADDRESSES:
                self._forget_quiet()
            recent = self._failures[address] = deque()
        recent.append(self._clock.monotonic_ms())
        while len(recent) > self.limit:
            recent.popleft()

    def _recent(self, address: str) -> deque[int] | None:
        recent = self._failures.get(address)
        if recent is None:
            return None
        cutoff = self._clock.monotonic_ms() - self.window_ms
        while recent and recent[0] <= cutoff:
            recent.popleft()
        if not recent:
            del self._failures[address]
            return None
        return recent

    def _forget_quiet(self) -> None:
        """Drop the addresses with nothing in the window; if none, the oldest half."""
        for address in list(self._failures):
            self._recent(address)
        if len(self._failures) >= MAX_ADDRESSES:
            for address in list(self._failures)[: MAX_ADDRESSES // 2]:
                del self._failures[address]
