"""Liveness and readiness, for a supervisor or a load balancer.

``/healthz`` answers while the process serves HTTP at all. ``/readyz`` answers 200 only while
the broker can take writes (``Host.check_ready``: not shutting down, the storage engine open
with no failed log, no partition or subscription quarantined for damage, the data directory
accepting a file), else 503 with the error's code (``storage_failure``,
``partition_quarantined``, ``subscription_quarantined``...) and message.
``/api/v1/recovery`` (``monitor``) is the full recovery report behind it.

Both are open to anyone, with or without credentials, even once users exist: a supervisor's
liveness probe and a load balancer's or Kubernetes' readiness probe carry no credentials, and
all either tells is whether this process serves and takes writes (when it does not, the
storage error's code and message: what an operator at the probe needs, nothing about what
the broker holds). Everything else about the broker asks for a principal (auth.py).
"""

from __future__ import annotations

from roost.admin.endpoints import Call, Endpoint
from roost.admin.schemas import Health
from roost.core.recovery_status import RecoveryStatus


async def alive(call: Call) -> Health:
    return Health("ok")


async def recovery(call: Call) -> RecoveryStatus:
    return call.door.recovery()


async def ready(call: Call) -> Health:
    await call.door.check_ready()
    return Health("ready")


ENDPOINTS = [
    Endpoint("GET", "/healthz", "Alive", alive, Health, tag="health", public=True),
    Endpoint(
        "GET", "/readyz", "Ready: storage open and writable", ready, Health, errors=(503,),
        tag="health", public=True,
    ),
    Endpoint(
        "GET", "/api/v1/recovery",
        "What recovery found and did at startup, per log, and what is quarantined now",
        recovery, RecoveryStatus, tag="health",
    ),
]  # fmt: skip
