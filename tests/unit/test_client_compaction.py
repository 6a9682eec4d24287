"""A compacted topic through the Python client (embedded and over the network) and the CLI:
``create_topic(cleanup=..., tombstone_retention=...)``, shown by describe, a keyless publish
refused, and an older broker never sent the settings it could not decode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import roost
from roost.client.api import COMPACTION_VERSION, Client
from roost.clock import ManualClock
from roost.errors import InvalidConfig, InvalidRequest, ProtocolError
from tests.embedded_support import WAYS, OlderBroker, run_either


async def compacted_topic_round_trip(broker: roost.Client) -> None:
    info = await broker.create_topic("prices", cleanup="compact", tombstone_retention=60)
    assert (info.config.cleanup, info.config.tombstone_retention_ms) == ("compact", 60_000)
    described = await broker.describe_topic("prices")
    assert described.config.cleanup == "compact"
    with pytest.raises(InvalidRequest, match="every record needs a key"):
        await broker.publish("prices", b"no key")
    await broker.publish("prices", b"1", key=b"a")
    with pytest.raises(InvalidConfig, match="cleanup"):
        await broker.create_topic("bad", cleanup="compact", retention=60)
    plain = await broker.create_topic("plain")
    assert plain.config.cleanup == "delete"


@pytest.mark.parametrize("where", WAYS)
def test_a_compacted_topic_through_the_client(
    where: str, tmp_path: Path, clock: ManualClock
) -> None:
    run_either(where, tmp_path, clock, compacted_topic_round_trip)


def test_an_older_broker_is_never_sent_the_compaction_settings() -> None:
    client = Client(OlderBroker(COMPACTION_VERSION - 1))  # type: ignore[arg-type]

    async def main() -> None:
        for call in (
            client.create_topic("t", cleanup="compact"),
            client.create_topic("t", tombstone_retention=5),
        ):
            with pytest.raises(ProtocolError, match="needs a broker speaking protocol version 8"):
                await call

    asyncio.run(main())
