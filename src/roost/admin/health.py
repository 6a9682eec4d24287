"""Liveness and readiness, for a supervisor or a load balancer.

``/healthz`` answers while the process serves HTTP at all. ``/readyz`` answers 200 only while
the broker can take writes (``Host.check_ready``: not shutting down, the storage engine open
with no failed log, the data directory accepting a file), else 503 with the storage error's
code.
"""

from __future__ import annotations

from roost.admin.endpoints import Call, Endpoint
from roost.admin.schemas import Health


async def alive(call: Call) -> Health:
    return Health("ok")


async def ready(call: Call) -> Health:
    await call.door.check_ready()
    return Health("ready")


ENDPOINTS = [
    Endpoint("GET", "/healthz", "Alive", alive, Health, tag="health"),
    Endpoint(
        "GET", "/readyz", "Ready: storage open and writable", ready, Health, errors=(503,),
        tag="health",
    ),
]  # fmt: skip
