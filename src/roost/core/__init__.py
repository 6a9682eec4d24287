"""The core: what the broker means — subscriptions, leases, retries, routing, groups.

Synchronous: commands in, results out. No sockets, no file formats, no wall clock (a ``Clock``
is injected); "wait for data" and "wait for durability" are values the asyncio host acts on.
"""
