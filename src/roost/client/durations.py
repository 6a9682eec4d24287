"""Durations as the client takes them: seconds (an int or a float) or a ``timedelta``.

as_seconds("visibility_timeout", timedelta(minutes=2))   # 120.0
"""

from __future__ import annotations

from datetime import timedelta

from roost.errors import InvalidConfig

#: A duration, as every time argument of the client takes it.
Seconds = float | timedelta


def as_seconds(name: str, value: Seconds) -> float:
    """``value`` in seconds: a ``timedelta``'s total, a number as it is; ``InvalidConfig``
    naming the argument for anything else (a str, a bool)."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidConfig(name, value, "a number of seconds or a timedelta")
    return value
