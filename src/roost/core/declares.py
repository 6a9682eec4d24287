"""Declaring what exists: the same settings are fine, other settings are a conflict.

    differences(existing_spec, requested_spec, skip={"journal"})
    # -> [("visibility_timeout_ms", 30000, 60000), ("retry.base_ms", 1000, 500)]

Every create in the core is a declare, as AMQP's and SQS's are: an application declares its
queues at every start, and the second start must not fail (nor need a ``try``). What counts
as "the same" is every setting the caller can give, compared after defaults are applied, so
``create_queue("q")`` twice agrees and ``create_queue("q", visibility_timeout=60)`` after it
names the one setting that differs.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from roost.errors import Difference


def differences(
    existing: msgspec.Struct,
    requested: msgspec.Struct,
    skip: Collection[str] = (),
    prefix: str = "",
) -> list[Difference]:
    """The settings of two specs of one type that differ, nested structs by dotted name."""
    found: list[Difference] = []
    for field in existing.__struct_fields__:
        if field in skip:
            continue
        have, want = getattr(existing, field), getattr(requested, field)
        if have == want:
            continue
        if isinstance(have, msgspec.Struct) and type(have) is type(want):
            found.extend(differences(have, want, prefix=f"{prefix}{field}."))
        else:
            found.append((f"{prefix}{field}", have, want))
    return found
