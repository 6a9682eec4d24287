"""Numbers on the command line, checked before anything is sent: finite, in range, in the
unit the option says (seconds), or a usage error naming the option (exit 2).

    @click.option("--delay", type=Seconds(high=MAX_DELAY_MS / 1000))

``nan``, ``inf`` and ``1e20`` are numbers to Python's ``float``; to an option that means a
time they are mistakes, said as such rather than sent to the broker (or past a failed
connection) to be refused there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from roost.client.api import MAX_WIRE_MS
from roost.core.model import MAX_DELAY_MS, MAX_QUEUE_DELAY_MS, MAX_VISIBILITY_MS
from roost.core.rate_limits import MAX_BURST
from roost.storage.config import MAX_PARTITIONS


class Seconds(click.ParamType[float]):
    """A finite number of seconds from ``low`` to ``high`` (``low`` itself excluded if
    ``low_open``)."""

    name = "seconds"
    unit = "seconds"

    def __init__(self, low: float = 0.0, high: float = MAX_WIRE_MS / 1000, *,
                 low_open: bool = False) -> None:  # fmt: skip
        self.low, self.high, self.low_open = low, high, low_open

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(str(value))
            except ValueError:
                self.fail(f"{value!r} is not a number of {self.unit}", param, ctx)
        below = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or below or number > self.high:
            low = f"more than {_plain(self.low)}" if self.low_open else _plain(self.low)
            self.fail(f"{value}: a finite number of {self.unit}, from {low} to "
                      f"{_plain(self.high)}", param, ctx)  # fmt: skip
        return number


def _plain(number: float) -> str:
    """``number`` as a person writes it: 31536000, not 3.1536e+07; 0.1 as 0.1."""
    return f"{number:.0f}" if number == int(number) else f"{number:g}"


class PositiveRate(Seconds):
    """A finite number above zero (a rate: messages a second)."""

    name = "rate"
    unit = "messages a second"

    def __init__(self) -> None:
        super().__init__(0.0, 1e9, low_open=True)


VISIBILITY = Seconds(high=MAX_VISIBILITY_MS / 1000)
DELAY = Seconds(high=MAX_DELAY_MS / 1000)
#: A queue's own delay, on every message (``create_queue(delay=...)``): shorter.
QUEUE_DELAY = Seconds(high=MAX_QUEUE_DELAY_MS / 1000)
RETENTION = Seconds(low=0.001)
PARTITIONS = click.IntRange(1, MAX_PARTITIONS)
#: As the broker bounds a subscription's ``max_deliveries``.
MAX_DELIVERIES = click.IntRange(1, 1000)


F = TypeVar("F", bound=Callable[..., Any])


def rate_limit_options(command: F) -> F:
    """``--rate-limit`` and ``--rate-burst``: deliveries a second, and at once, at most."""
    command = click.option(
        "--rate-burst", type=click.IntRange(1, MAX_BURST), default=None,
        help="Deliveries at once at most (default: a second's worth).",
    )(command)  # fmt: skip
    return click.option(
        "--rate-limit", type=PositiveRate(), default=None, metavar="PER_SECOND",
        help="Deliveries a second at most, over all consumers (default: no limit).",
    )(command)  # fmt: skip
