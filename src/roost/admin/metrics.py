"""Prometheus metrics for one host: a collector that reads the broker's numbers when Prometheus
scrapes, and ``render`` for the HTTP layer's ``/metrics``.

    registry = host_registry(host)      # once per host, never the global registry
    body, content_type = render(registry, request.headers.get("accept"))

Rules:

- Nothing on a hot path calls prometheus_client. The core, the flusher and the listeners keep
  plain ints (and bucket counts, once per flush round); this collector reads them per scrape.
- Everything comes from one ``read_broker`` (core/readings.py), which the dashboard's feed
  reads too; its gauges are ``Broker.stats`` (core/stats.py), what `roost stats` shows: the
  CLI, the dashboard and Prometheus read one set of numbers, computed one way.
- Counters count since the process started; Prometheus handles the reset after a restart.
- Labels are names an operator chose (topic, subscription, listener) and partition numbers,
  never message keys or ids: cardinality is bounded by the definitions.
- Each host has its own registry: tests run many hosts in one process, and a host's metrics
  must go when it does.
- Scrape on the host's event loop: the core's state has no locks.
- ``/metrics`` is open to scrapers unless ``metrics_auth``; the gate (auth.py) decides that,
  so this route never looks at who is asking.

Every metric is in ``METRICS`` (docs/operations.md describes each; tests hold both to it).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from roost import __version__
from roost.core.readings import Counters, TopicReading
from roost.core.recovery_status import RecoveryStatus
from roost.core.stats import StreamStats, SubscriptionStats
from roost.server.access import TRUSTED
from roost.server.host import Host
from roost.server.meters import Histogram, ListenerStats
from roost.server.native_handshake import NEWEST_PROTOCOL

Kind = Literal["counter", "gauge", "histogram"]
PARTITION = ("topic", "partition")
SUBSCRIPTION = ("topic", "subscription")
SUBSCRIPTION_PARTITION = ("topic", "subscription", "partition")
LISTENER = ("listener",)


class Spec(NamedTuple):
    name: str  # as exposed: a counter's ends in _total
    kind: Kind
    labels: tuple[str, ...]
    help: str


def _specs(*specs: Spec) -> dict[str, Spec]:
    return {spec.name: spec for spec in specs}


METRICS = _specs(
    # -- partitions ------------------------------------------------------------------------
    Spec("roost_partition_published_total", "counter", PARTITION,
         "Records appended to the partition: publishes, dead letters moved in, redrives."),
    Spec("roost_partition_end_offset", "gauge", PARTITION,
         "The offset the next record appended to the partition will get."),
    Spec("roost_partition_start_offset", "gauge", PARTITION,
         "The first offset the partition still stores (retention moves it up)."),
    Spec("roost_partition_size_bytes", "gauge", PARTITION,
         "Bytes of the partition's segment files."),
    Spec("roost_partition_retention_deleted_segments_total", "counter", PARTITION,
         "Segments deleted by retention: time, size, or consumed by every subscription."),
    Spec("roost_partition_write_failed", "gauge", PARTITION,
         "1 if a write or fsync failed and the log refuses writes until it is repaired "
         "(automatically once the disk takes writes, or roost repair). State journals are "
         "included, as topic=\"journal:<name>\" partition=\"0\"."),
    Spec("roost_partition_quarantined", "gauge", PARTITION,
         "1 if damage was found in the partition's files: it refuses reads and writes until "
         "an operator acts (roost check)."),
    # -- queue and keyed subscriptions, per partition ------------------------------------
    Spec("roost_subscription_depth", "gauge", SUBSCRIPTION_PARTITION,
         "Messages a consumer could receive now: not done, not leased, not delayed."),
    Spec("roost_subscription_backlog", "gauge", SUBSCRIPTION_PARTITION,
         "Messages not done (acked or dead-lettered), leased and delayed ones included."),
    Spec("roost_subscription_in_flight", "gauge", SUBSCRIPTION_PARTITION,
         "Messages leased to a consumer and not yet acked, nacked or expired."),
    Spec("roost_subscription_delayed", "gauge", SUBSCRIPTION_PARTITION,
         "Messages waiting for a delay or retry backoff, or parked behind their key."),
    Spec("roost_subscription_oldest_age_seconds", "gauge", SUBSCRIPTION_PARTITION,
         "Age of the oldest message not done, from its publish timestamp; 0 when none."),
    Spec("roost_subscription_delivered_total", "counter", SUBSCRIPTION_PARTITION,
         "Messages delivered (leased; for a stream, fetched), redeliveries included."),
    Spec("roost_subscription_redelivered_total", "counter", SUBSCRIPTION_PARTITION,
         "Deliveries of a message that had been delivered before."),
    Spec("roost_subscription_acked_total", "counter", SUBSCRIPTION_PARTITION,
         "Messages acked."),
    Spec("roost_subscription_nacked_total", "counter", SUBSCRIPTION_PARTITION,
         "Leases given back by a consumer (nack)."),
    Spec("roost_subscription_expired_total", "counter", SUBSCRIPTION_PARTITION,
         "Leases that ran out before the consumer acked or nacked."),
    Spec("roost_subscription_dead_lettered_total", "counter", SUBSCRIPTION_PARTITION,
         "Messages moved to the dead-letter topic (max deliveries, rejected, expired)."),
    Spec("roost_subscription_messages_expired_total", "counter", SUBSCRIPTION_PARTITION,
         "Messages whose TTL passed before delivery: dead-lettered (expired), else done."),
    # -- stream subscriptions (consumer groups), per partition ---------------------------
    Spec("roost_subscription_committed_offset", "gauge", SUBSCRIPTION_PARTITION,
         "A stream subscription's committed offset: the next record it will read."),
    Spec("roost_subscription_lag", "gauge", SUBSCRIPTION_PARTITION,
         "A stream subscription's lag: the partition's end offset less the committed offset."),
    # -- per subscription ----------------------------------------------------------------
    Spec("roost_subscription_dead_letters", "gauge", SUBSCRIPTION,
         "Dead letters waiting in the subscription's dead-letter topic (not redriven)."),
    Spec("roost_subscription_members", "gauge", SUBSCRIPTION,
         "Members of a stream subscription's consumer group."),
    Spec("roost_subscription_quarantined", "gauge", SUBSCRIPTION,
         "1 if the subscription's state journal or snapshot is damaged: it is out of service."),
    Spec("roost_producer_state_quarantined", "gauge", ("topic",),
         "1 if the topic's producer state (idempotent producers, dedup ids) is damaged: "
         "idempotent and deduplicated publishes to it are refused."),
    # -- listeners -----------------------------------------------------------------------
    Spec("roost_listener_connections", "gauge", LISTENER, "Connections open now."),
    Spec("roost_listener_accepted_connections_total", "counter", LISTENER,
         "Connections accepted."),
    Spec("roost_listener_refused_connections_total", "counter", LISTENER,
         "Connections refused: max_connections were open, or too many from one address were "
         "held for breaking the protocol."),
    Spec("roost_listener_held_connections_total", "counter", LISTENER,
         "Connections held before their handshake because their address broke the protocol "
         "too often lately."),
    Spec("roost_listener_frames_received_total", "counter", LISTENER,
         "Protocol frames received from clients."),
    Spec("roost_listener_protocol_errors_total", "counter", LISTENER,
         "Connections closed because the client broke the protocol."),
    Spec("roost_listener_timed_out_connections_total", "counter", LISTENER,
         "Connections closed because the handshake, a frame or the heartbeat was overdue."),
    Spec("roost_listener_evicted_connections_total", "counter", LISTENER,
         "Connections closed to make room at max_connections (in their handshake, or silent)."),
    Spec("roost_listener_memory_blocked", "gauge", LISTENER,
         "1 while the broker is over max_memory and the listener does not read publishers."),
    Spec("roost_listener_memory_alarms_total", "counter", LISTENER,
         "Times the memory alarm blocked the listener's publishers."),
    # -- storage -------------------------------------------------------------------------
    Spec("roost_flush_rounds_total", "counter", (),
         "Group commits: flush rounds, each syncing every log that was due."),
    Spec("roost_flush_rounds_on_loop_total", "counter", (),
         "Flush rounds small enough to run on the event loop itself (the rest ran in the "
         "flusher's thread)."),
    Spec("roost_fsyncs_total", "counter", (),
         "Synchronous writes and syncs done by flush rounds (O_DSYNC writes, fdatasync, "
         "directory fsync)."),
    Spec("roost_flush_wal_writes_total", "counter", (),
         "Flush rounds' writes to the shared write-ahead log: one O_DSYNC write per round, "
         "covering every log in it (also counted in roost_fsyncs_total)."),
    Spec("roost_flush_wal_checkpoints_total", "counter", (),
         "WAL checkpoints done: old WAL files whose written files were fdatasynced, then removed."),
    Spec("roost_flush_wal_checkpoint_failures_total", "counter", (),
         "WAL checkpoints that failed (their WAL files stay; the next try is a second later)."),
    Spec("roost_compaction_runs_total", "counter", (),
         "Compaction passes finished, one partition each (storage/compaction.py)."),
    Spec("roost_compaction_segments_total", "counter", (),
         "Segments a compaction pass replaced by their compacted file."),
    Spec("roost_compaction_reclaimed_bytes_total", "counter", (),
         "Bytes of segment files compaction freed."),
    Spec("roost_compaction_removed_records_total", "counter", (),
         "Records compaction removed: replaced by a later record of their key, or tombstones "
         "past their retention."),
    Spec("roost_compaction_last_run_seconds", "gauge", (),
         "How long the last compaction pass took, reading and writing included."),
    Spec("roost_flushed_records_total", "counter", (),
         "Records made durable by flush rounds, journal entries included."),
    Spec("roost_fsync_duration_seconds", "histogram", (),
         "Per flush round: time spent writing and syncing (on the loop or in the thread)."),
    Spec("roost_append_latency_seconds", "histogram", (),
         "Per flush round: from the first append it covers asking for durability until "
         "durable, the longest any confirm in the round waited on storage."),
    Spec("roost_recovery_truncated_bytes_total", "counter", (),
         "Bytes recovery cut from logs (torn tails, repairs) when the broker started."),
    Spec("roost_recovery_segments_dropped_total", "counter", (),
         "Segments recovery dropped after a cut when the broker started."),
    Spec("roost_recovery_logs_cut_total", "counter", (),
         "Logs (partitions and state journals) recovery cut anything from at start."),
    Spec("roost_recovery_offsets_skipped_total", "counter", (),
         "Offsets put in gap batches at start: a log ended below what its subscriptions had "
         "seen, and new records must not take those offsets (docs/durability.md)."),
    Spec("roost_data_filesystem_avail_bytes", "gauge", (),
         "Bytes free for the broker on the data directory's filesystem."),
    Spec("roost_data_filesystem_size_bytes", "gauge", (),
         "Size of the data directory's filesystem in bytes."),
    Spec("roost_disk_min_free_bytes", "gauge", (),
         "The free-space watermark: below it publishes are refused (0: off)."),
    Spec("roost_disk_publishes_refused", "gauge", (),
         "1 while free space is below the watermark and publishes are refused with disk_full."),
    Spec("roost_log_repairs_total", "counter", (),
         "Failed logs reopened in place (storage repair), automatically or by roost repair."),
    Spec("roost_storage_open_files", "gauge", (),
         "Segment files storage holds open now (the pool of descriptors)."),
    Spec("roost_storage_max_open_files", "gauge", (),
         "The ceiling on open segment files (max_open_files); idle ones are closed past it."),
    Spec("roost_storage_file_evictions_total", "counter", (),
         "Idle segment files closed to stay under the ceiling or after EMFILE."),
    Spec("roost_storage_file_opens_total", "counter", (),
         "Segment files opened (first use, or used again after an eviction)."),
    Spec("roost_storage_open_refused_total", "counter", (),
         "Opens that failed for want of descriptors even after closing idle files: each "
         "failed one operation with too_many_open_files."),
    Spec("roost_build_info", "gauge", ("version", "python", "protocol"),
         "Always 1: the broker's version, its Python's and the newest native protocol "
         "version it speaks, as labels."),
)  # fmt: skip


#: ``roost_build_info``'s labels: what this process is.
BUILD = (__version__, platform.python_version(), NEWEST_PROTOCOL)


class _Scrape:
    """One family per spec, filled by one collect: every metric is exposed, with or without
    samples, so its HELP and TYPE are there from the first scrape."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {name: _family(spec) for name, spec in METRICS.items()}

    def add(self, name: str, labels: Sequence[object], value: float) -> None:
        family = self.families[name]
        assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
        family.add_metric([str(label) for label in labels], value)

    def add_histogram(self, name: str, histogram: Histogram) -> None:
        family = self.families[name]
        assert isinstance(family, HistogramMetricFamily)
        buckets = [(_bound(bound), float(count)) for bound, count in histogram.cumulative()]
        family.add_metric([], buckets, histogram.sum)


def _family(spec: Spec) -> Metric:
    labels = list(spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=labels)
    return HistogramMetricFamily(spec.name, spec.help, labels=labels)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class HostCollector:
    """Reads one host's numbers per scrape (see the module's rules)."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def describe(self) -> Iterable[Metric]:
        return _Scrape().families.values()

    def collect(self) -> Iterable[Metric]:
        host = self._host
        scrape = _Scrape()
        reading = host.door(TRUSTED).readings()  # a scrape's rights were checked over HTTP
        for topic in reading.topics:
            _partitions(scrape, topic)
        for sub in reading.subscriptions:
            if isinstance(sub.stats, StreamStats):
                _stream(scrape, sub.stats, sub.counters)
            else:
                _queue(scrape, sub.stats, sub.counters)
        for name, stats in sorted(host.listeners.items()):
            _listener(scrape, name, stats)
        recovery = host.door(TRUSTED).recovery()
        _recovery(scrape, recovery)
        damaged = {state.topic for state in recovery.quarantined_producer_states}
        for topic in reading.topics:
            if topic.name not in damaged:
                scrape.add("roost_producer_state_quarantined", (topic.name,), 0)
        _storage(scrape, host)
        scrape.add("roost_build_info", BUILD, 1)
        return scrape.families.values()


def _partitions(scrape: _Scrape, topic: TopicReading) -> None:
    for p in topic.partitions:
        labels = (topic.name, p.partition)
        scrape.add("roost_partition_published_total", labels, p.published)
        scrape.add("roost_partition_end_offset", labels, p.end_offset)
        scrape.add("roost_partition_start_offset", labels, p.start_offset)
        scrape.add("roost_partition_size_bytes", labels, p.size_bytes)
        scrape.add(
            "roost_partition_retention_deleted_segments_total",
            labels,
            p.retention_deleted_segments,
        )
        scrape.add("roost_partition_write_failed", labels, p.write_failed)
        scrape.add("roost_partition_quarantined", labels, p.quarantined)


def _queue(scrape: _Scrape, stats: SubscriptionStats, counters: Sequence[Counters]) -> None:
    names = (stats.topic, stats.subscription)
    for p, counted in zip(stats.partitions, counters, strict=True):
        labels = (*names, p.partition)
        scrape.add("roost_subscription_depth", labels, p.depth)
        scrape.add("roost_subscription_backlog", labels, p.backlog)
        scrape.add("roost_subscription_in_flight", labels, p.in_flight)
        scrape.add("roost_subscription_delayed", labels, p.delayed)
        age_s = (p.oldest_age_ms or 0) / 1000
        scrape.add("roost_subscription_oldest_age_seconds", labels, age_s)
        scrape.add("roost_subscription_delivered_total", labels, counted.delivered)
        scrape.add("roost_subscription_redelivered_total", labels, counted.redelivered)
        scrape.add("roost_subscription_acked_total", labels, counted.acked)
        scrape.add("roost_subscription_nacked_total", labels, counted.nacked)
        scrape.add("roost_subscription_expired_total", labels, counted.expired)
        scrape.add("roost_subscription_dead_lettered_total", labels, counted.dead_lettered)
        scrape.add("roost_subscription_messages_expired_total", labels, counted.ttl_expired)
    if stats.dead_letter_topic is not None:
        scrape.add("roost_subscription_dead_letters", names, stats.dead_letters)
    scrape.add("roost_subscription_quarantined", names, 0)  # serving (the 1s: ``_recovery``)


def _stream(scrape: _Scrape, stats: StreamStats, counters: Sequence[Counters]) -> None:
    names = (stats.topic, stats.subscription)
    for p, counted in zip(stats.partitions, counters, strict=True):
        labels = (*names, p.partition)
        scrape.add("roost_subscription_committed_offset", labels, p.committed)
        scrape.add("roost_subscription_lag", labels, p.lag)
        scrape.add("roost_subscription_delivered_total", labels, counted.delivered)
    scrape.add("roost_subscription_members", names, len(stats.members))
    scrape.add("roost_subscription_quarantined", names, 0)


def _recovery(scrape: _Scrape, status: RecoveryStatus) -> None:
    cut = [log for log in status.logs if log.lost_data]
    scrape.add("roost_recovery_truncated_bytes_total", (), sum(c.bytes_truncated for c in cut))
    scrape.add("roost_recovery_segments_dropped_total", (), sum(c.segments_dropped for c in cut))
    scrape.add("roost_recovery_logs_cut_total", (), len(cut))
    scrape.add("roost_recovery_offsets_skipped_total", (), sum(c.offsets_skipped for c in cut))
    for sub in status.quarantined_subscriptions:
        scrape.add("roost_subscription_quarantined", (sub.topic, sub.subscription), 1)
    for state in status.quarantined_producer_states:
        scrape.add("roost_producer_state_quarantined", (state.topic,), 1)  # 0s: ``collect``


def _listener(scrape: _Scrape, name: str, stats: ListenerStats) -> None:
    labels = (name,)
    scrape.add("roost_listener_connections", labels, stats.connections)
    scrape.add("roost_listener_accepted_connections_total", labels, stats.accepted)
    scrape.add("roost_listener_refused_connections_total", labels, stats.refused)
    scrape.add("roost_listener_held_connections_total", labels, stats.held)
    scrape.add("roost_listener_frames_received_total", labels, stats.frames_received)
    scrape.add("roost_listener_protocol_errors_total", labels, stats.protocol_errors)
    scrape.add("roost_listener_timed_out_connections_total", labels, stats.timed_out)
    scrape.add("roost_listener_evicted_connections_total", labels, stats.evicted)
    alarm = stats.alarm
    scrape.add("roost_listener_memory_blocked", labels, int(alarm is not None and alarm.blocked))
    scrape.add("roost_listener_memory_alarms_total", labels, 0 if alarm is None else alarm.alarms)


def _storage(scrape: _Scrape, host: Host) -> None:
    flusher = host.flusher
    scrape.add("roost_flush_rounds_total", (), flusher.rounds)
    scrape.add("roost_flush_rounds_on_loop_total", (), flusher.meters.rounds_on_loop)
    scrape.add("roost_fsyncs_total", (), flusher.meters.syncs)
    scrape.add("roost_flushed_records_total", (), flusher.meters.records)
    scrape.add("roost_flush_wal_writes_total", (), flusher.meters.wal_writes)
    wal = host.engine.wal
    scrape.add("roost_flush_wal_checkpoints_total", (), 0 if wal is None else wal.checkpoints)
    scrape.add(
        "roost_flush_wal_checkpoint_failures_total",
        (),
        0 if wal is None else wal.checkpoint_failures,
    )
    compactor = host.compactor
    scrape.add("roost_compaction_runs_total", (), compactor.runs)
    scrape.add("roost_compaction_segments_total", (), compactor.segments_compacted)
    scrape.add("roost_compaction_reclaimed_bytes_total", (), compactor.bytes_reclaimed)
    scrape.add("roost_compaction_removed_records_total", (), compactor.records_removed)
    scrape.add("roost_compaction_last_run_seconds", (), compactor.last_run_ms / 1000)
    scrape.add_histogram("roost_fsync_duration_seconds", flusher.meters.sync_duration)
    scrape.add_histogram("roost_append_latency_seconds", flusher.meters.append_latency)
    for journal in host.engine.journals():
        failed = journal.log.failure is not None
        scrape.add("roost_partition_write_failed", (f"journal:{journal.name}", 0), failed)
    scrape.add("roost_disk_min_free_bytes", (), host.storage.disk.min_free_bytes)
    scrape.add("roost_disk_publishes_refused", (), host.storage.disk.low)
    scrape.add("roost_log_repairs_total", (), host.storage.repairs_total)
    pool = host.engine.pool
    scrape.add("roost_storage_open_files", (), pool.open_count)
    scrape.add("roost_storage_max_open_files", (), pool.max_open or 0)
    scrape.add("roost_storage_file_evictions_total", (), pool.evictions)
    scrape.add("roost_storage_file_opens_total", (), pool.opens)
    scrape.add("roost_storage_open_refused_total", (), pool.refused)
    try:
        fs = os.statvfs(host.engine.path)
    except OSError:
        return  # the directory is gone: no sample, and an absent() alert can say so
    scrape.add("roost_data_filesystem_avail_bytes", (), fs.f_bavail * fs.f_frsize)
    scrape.add("roost_data_filesystem_size_bytes", (), fs.f_blocks * fs.f_frsize)


def host_registry(host: Host) -> CollectorRegistry:
    """A registry of its own holding ``host``'s collector (never the process-wide one), and
    the client library's standard ``process_*`` (CPU, memory, descriptors, start time) and
    ``python_info`` series, as every Prometheus-instrumented Python service exports them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(host))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def metrics_route(host: Host) -> Route:
    """``GET /metrics`` for the admin app: one registry for the host's life."""
    registry = host_registry(host)

    async def scrape(request: Request) -> Response:
        body, content_type = render(registry, request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return Route("/metrics", scrape, methods=["GET"])


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The scrape body and its content type: OpenMetrics if ``accept`` (the request's Accept
    header) asks for it, else Prometheus text."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
