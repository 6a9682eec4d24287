"""Scraping a host's registry the way Prometheus would: render, then parse the text back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from roost.admin.metrics import render
from roost.client.api import Client
from roost.client.embedded import LocalBackend
from roost.clock import ManualClock
from roost.server.host import Host

#: A sample's name and its labels, sorted: one time series.
Series = tuple[str, tuple[tuple[str, str], ...]]


def scrape(registry: CollectorRegistry) -> dict[Series, float]:
    """Every sample of one scrape, parsed from the exposition text."""
    body, _ = render(registry)
    samples: dict[Series, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Mapping[Series, float], name: str, **labels: object) -> float:
    """The sample ``name`` with exactly ``labels``; KeyError if it was not exposed."""
    return samples[series(name, **labels)]


def moved(
    before: Mapping[Series, float], after: Mapping[Series, float], prefix: str = "roost_"
) -> dict[Series, float]:
    """Series whose value changed (a series new in ``after`` counts from 0), histogram
    buckets, the flusher's own counters and the descriptor pool's left out: they move with
    every flush, and with every file first used."""
    noisy = ("roost_fsync", "roost_append_latency", "roost_flush", "roost_data_filesystem",
             "roost_storage_")  # fmt: skip
    changes = {}
    for series, now in after.items():
        name = series[0]
        if name.startswith(noisy) or not name.startswith(prefix):
            continue
        if now != before.get(series, 0.0):
            changes[series] = now - before.get(series, 0.0)
    return changes


@asynccontextmanager
async def metered_host(data_dir: str, clock: ManualClock) -> AsyncIterator[tuple[Host, Client]]:
    """A host, a client in this process over it (the handlers `roost stats` goes through)."""
    host = await Host.start(data_dir, clock)
    try:
        yield host, Client(LocalBackend(host))
    finally:
        await host.aclose()


def series(name: str, **labels: object) -> Series:
    return (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
