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

from typing import Final

from roost.clock import Clock
from roost.errors import NotAuthenticated
from roost.server.address_strikes import AddressStrikes

#: Failures an address may have within the window before it must wait.
LIMIT: Final = 20
WINDOW_MS: Final = 60_000


class FailedLogins(AddressStrikes):
    def __init__(self, clock: Clock, limit: int = LIMIT, window_ms: int = WINDOW_MS) -> None:
        super().__init__(clock, limit, window_ms)

    def check(self, address: str) -> None:
        """Raise ``NotAuthenticated`` (saying how long to wait) while ``address`` has had
        ``limit`` failures within the window."""
        if wait_ms := self.wait_ms(address):
            raise NotAuthenticated(
                f"too many failed logins from this address: try again in {wait_ms / 1000:.0f} s"
            )

    def failed(self, address: str) -> None:
        """Count one failure of ``address`` now."""
        self.strike(address)
