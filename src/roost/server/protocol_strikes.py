"""Holding back an address whose connections keep breaking the protocol.

A fuzzer, or a client of another protocol pointed at this port in a retry loop, reconnects as
soon as it is closed. Each such connection costs the broker an accept, a task, a handshake
begun, an answer and a close (~0.5 ms of CPU here): 8 fuzzing connections made ~300 of them a
second, and a well-behaved client on the same broker lost a quarter of its throughput
(docs/benchmarks.md, "Faults"). So a connection ended by a protocol error is a strike against
its peer's address (``AddressStrikes``, shared by every native listener of the host): past
``LIMIT`` strikes within ``WINDOW_MS``, a new connection from that address is held unread for
``HOLD_MS`` before its handshake begins, then served as any other. A client at that address
that speaks the protocol waits that long once per connection; a fuzzer gets a few connections
a second through instead of hundreds. At most ``MAX_HELD_PER_ADDRESS`` connections of one
address are held at once; more are refused at once (``FAILURE(unavailable)``, retriable).

Only protocol errors count: a timeout or a failed login has its own bound (``watchdog``,
``failed_logins``). Counting by address is what one host cannot get round; many hosts can,
and then ``max_connections`` and the other bounds still hold (docs/operations.md).

    strikes = protocol_strikes(clock)           # one per host
    tarpit = Tarpit(strikes, listener_stats)     # one per listener
    if await tarpit.admit(stream, address):      # False: refused, or closed while held
        ...serve it...
    strikes.strike(address)                      # its connection broke the protocol
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from roost.clock import Clock
from roost.protocols.native import messages as m
from roost.protocols.native.codec import Frame, Kind, encode
from roost.server.address_strikes import AddressStrikes

if TYPE_CHECKING:  # the handshake's module imports the package, which imports the host
    from roost.server.framed import FramedStream
    from roost.server.meters import ListenerStats
    from roost.server.native_handshake import Sleep

#: Protocol errors an address may cause within the window before its connections are held.
LIMIT: Final = 20
WINDOW_MS: Final = 10_000
#: How long a connection from an address over its strikes waits, unread, to be served.
HOLD_MS: Final = 1_000
#: Connections of one address held at once; more are refused.
MAX_HELD_PER_ADDRESS: Final = 64
#: The hold on reading a held connection (``FramedStream.hold_reading``).
STRIKES = "strikes"


def protocol_strikes(clock: Clock) -> AddressStrikes:
    return AddressStrikes(clock, LIMIT, WINDOW_MS)


class Tarpit:
    def __init__(
        self,
        strikes: AddressStrikes,
        stats: ListenerStats,
        sleep: Sleep = asyncio.sleep,
        hold_ms: int = HOLD_MS,
        max_held_per_address: int = MAX_HELD_PER_ADDRESS,
    ) -> None:
        self.strikes = strikes
        self._stats = stats
        self.hold_ms = hold_ms
        self.max_held_per_address = max_held_per_address
        self._sleep = sleep
        #: address -> its connections held now.
        self._held: dict[str, set[FramedStream]] = {}

    @property
    def holding(self) -> int:
        return sum(len(streams) for streams in self._held.values())

    async def admit(self, stream: FramedStream, address: str) -> bool:
        """True: serve ``stream`` now (at once, or once it was held for ``hold_ms`` because
        its address is over its strikes). False: it was refused, or closed while held."""
        if not self.strikes.wait_ms(address):
            return True
        held = self._held.setdefault(address, set())
        if len(held) >= self.max_held_per_address:
            if not held:
                del self._held[address]
            self._stats.refused += 1
            failure = m.Failure(
                "unavailable",
                f"too many connections from {address} broke the protocol lately "
                f"(more than {self.strikes.limit} in {self.strikes.window_ms / 1000:.0f} s) "
                f"and {len(held)} of its connections are waiting already: try again later",
                True,
            )
            stream.write(encode(Frame(Kind.FAILURE, 0, failure)))
            stream.close()
            return False
        self._stats.held += 1
        held.add(stream)
        stream.hold_reading(STRIKES)
        try:
            waited = asyncio.ensure_future(self._sleep(self.hold_ms / 1000))
            lost = asyncio.ensure_future(stream.wait_closed())
            try:
                await asyncio.wait((waited, lost), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waited, lost):
                    task.cancel()
                await asyncio.gather(waited, lost, return_exceptions=True)
            if lost.done() and not lost.cancelled():
                return False
        finally:
            held.discard(stream)
            if not held:
                del self._held[address]
        stream.release_reading(STRIKES)
        return True

    def close(self) -> None:
        """Close every connection held now (the listener is shutting down)."""
        for streams in list(self._held.values()):
            for stream in list(streams):
                stream.abort()
