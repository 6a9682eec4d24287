"""``roost.sync``: the blocking client (see ``roost.client.sync``)."""

from roost.client.sync import SyncBroker, connect, open

__all__ = ["SyncBroker", "connect", "open"]
