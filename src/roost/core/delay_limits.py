"""How long a message may be delayed on a topic: ``MAX_DELAY_MS``, and never past its retention.

A record delayed longer than its topic keeps records would be deleted by retention before it
could be delivered: such a delay is refused when it is asked for (publish, nack), naming both,
rather than lost later without a word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from roost.errors import InvalidRequest
from roost.storage import Topic

if TYPE_CHECKING:
    from roost.core.publishing import Outgoing


def check_delay_fits(topic: Topic, delay_ms: int) -> int:
    """``delay_ms`` if ``topic`` keeps records at least that long; else ``InvalidRequest``."""
    retention_ms = topic.config.retention_ms
    if retention_ms is not None and delay_ms > retention_ms:
        raise InvalidRequest(
            f"a delay of {delay_ms} ms is longer than topic {topic.name!r} keeps records "
            f"(retention_ms={retention_ms}): the message would be deleted before it is due"
        )
    return delay_ms


def check_publish_delays(topic: Topic, messages: Sequence[Outgoing], now_ms: int) -> None:
    """``check_delay_fits`` for every delayed message of a publish to ``topic``."""
    if topic.config.retention_ms is None:
        return
    for message in messages:
        if message.delay_ms is not None and type(message.delay_ms) is int:
            check_delay_fits(topic, message.delay_ms)
        if message.deliver_at_ms is not None and type(message.deliver_at_ms) is int:
            check_delay_fits(topic, max(0, message.deliver_at_ms - now_ms))
