"""The metrics follow Prometheus' conventions, the table in admin/metrics.py is what a scrape
exposes, the docs describe every metric, and the shipped alert rules use only real ones."""

from __future__ import annotations

import asyncio
import platform
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import roost
from roost.admin.metrics import METRICS, Spec, host_registry, render
from roost.clock import ManualClock
from roost.protocols.native.codec import VERSIONS
from roost.server.host import Host
from roost.server.meters import LATENCY_BOUNDS_S, Histogram
from roost.server.native_server import close_native, serve_native
from tests.metrics_support import Series, metered_host, scrape, value

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: roost_build_info's labels are bounded too: one series per process.
ALLOWED_LABELS = {"topic", "partition", "subscription", "listener", "version", "python",
                  "protocol"}  # fmt: skip
UNITS = ("seconds", "bytes")


def sample_names(spec: Spec) -> set[str]:
    if spec.kind == "histogram":
        return {spec.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    return {spec.name}


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Sample names of one scrape of a broker with a queue, a stream, a listener, traffic."""
    data_dir = str(tmp_path_factory.mktemp("metrics") / "data")

    async def main() -> set[str]:
        async with metered_host(data_dir, ManualClock()) as (host, client):
            server = await serve_native(host, "127.0.0.1", 0)
            try:
                await client.create_queue("jobs")
                await client.create_subscription("jobs", "audit", mode="stream")
                await client.join("jobs", "audit")
                await client.publish("jobs", b"x")
                return {name for name, _ in scrape(host_registry(host))}
            finally:
                await close_native(server)

    return asyncio.run(main())


#: The client library's standard series (``ProcessCollector``, ``PlatformCollector``), not ours.
STANDARD = {
    "process_cpu_seconds_total", "process_max_fds", "process_open_fds",
    "process_resident_memory_bytes", "process_start_time_seconds",
    "process_virtual_memory_bytes", "python_info",
}  # fmt: skip


def test_a_scrape_exposes_exactly_the_table(exposed: set[str]) -> None:
    ours = {name for name in exposed if name.startswith("roost_")}
    assert ours == set().union(*(sample_names(spec) for spec in METRICS.values()))
    assert exposed - ours == STANDARD


@pytest.mark.parametrize("spec", list(METRICS.values()), ids=list(METRICS))
def test_names_follow_prometheus_conventions(spec: Spec) -> None:
    assert re.fullmatch(r"roost_[a-z][a-z0-9_]*[a-z0-9]", spec.name), "roost_ and snake_case"
    assert "__" not in spec.name
    assert spec.name.endswith("_total") == (spec.kind == "counter"), "_total iff a counter"
    unit = spec.name.removesuffix("_total").rsplit("_", 1)[-1]
    if spec.kind == "histogram":
        assert unit in UNITS, "a histogram is of a base unit"
    for word in ("seconds", "bytes", "ms", "millis", "milliseconds", "kb", "mb"):
        if word in spec.name.split("_"):
            assert word == unit and word in UNITS, "base units only, and last"
    assert set(spec.labels) <= ALLOWED_LABELS, "labels are bounded: never keys or ids"
    assert len(set(spec.labels)) == len(spec.labels)
    assert spec.help and spec.help.endswith("."), "every metric says what it is"


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False)))
def test_histogram_buckets_count_what_prometheus_expects(values: list[float]) -> None:
    histogram = Histogram()
    for v in values:
        histogram.observe(v)
    buckets = histogram.cumulative()
    assert [bound for bound, _ in buckets] == [*LATENCY_BOUNDS_S, float("inf")]
    for bound, count in buckets:
        assert count == sum(1 for v in values if v <= bound), "le is inclusive and cumulative"
    assert histogram.count == len(values)
    assert histogram.sum == pytest.approx(sum(values))


def alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load((DOCS / "alerts.yml").read_text())
    assert set(document) == {"groups"}
    rules: list[dict[str, object]] = []
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        rules += group["rules"]
    return rules


def test_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].count("(") == rule["expr"].count(")")
        labels = rule["labels"]
        assert isinstance(labels, dict) and labels["severity"] in {"info", "warning", "critical"}
        annotations = rule["annotations"]
        assert isinstance(annotations, dict) and {"summary", "description"} <= set(annotations)
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", str(rule["for"]))


def test_alert_rules_use_only_metrics_the_broker_exports(exposed: set[str]) -> None:
    used: set[str] = set()
    for rule in alert_rules():
        found = set(re.findall(r"\broost_[a-z0-9_]+", str(rule["expr"])))
        assert found, f"{rule['alert']} uses no roost metric"
        assert found <= exposed, f"{rule['alert']} uses {sorted(found - exposed)}"
        used |= found
    # The pages the issue asks for: DLQ growth, oldest age, lag growth, a stalled consumer,
    # a disk almost full.
    assert {
        "roost_subscription_dead_lettered_total",
        "roost_subscription_oldest_age_seconds",
        "roost_subscription_lag",
        "roost_subscription_acked_total",
        "roost_subscription_depth",
        "roost_data_filesystem_avail_bytes",
    } <= used


def test_the_operations_guide_describes_every_metric() -> None:
    guide = (DOCS / "operations.md").read_text()
    missing = [name for name in METRICS if f"`{name}`" not in guide]
    assert missing == []


def test_render_speaks_openmetrics_when_asked(tmp_path: Path) -> None:
    async def main() -> None:
        async with metered_host(str(tmp_path / "data"), ManualClock()) as (host, client):
            await client.create_queue("jobs")
            registry = host_registry(host)
            text, text_type = render(registry)
            assert text_type.startswith("text/plain")
            assert b"roost_subscription_acked_total{" in text
            body, content_type = render(registry, "application/openmetrics-text; version=1.0.0")
            assert content_type.startswith("application/openmetrics-text")
            assert body.endswith(b"# EOF\n")
            assert b"# TYPE roost_subscription_acked counter" in body

    asyncio.run(main())


def test_only_the_admin_layer_imports_prometheus_client() -> None:
    """The hot paths keep plain ints; prometheus_client is for the scrape alone."""
    src = Path(__file__).resolve().parents[2] / "src" / "roost"
    importers = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if re.search(r"^\s*(from|import) prometheus_client", path.read_text(), re.MULTILINE)
    ]
    assert importers and all(name.startswith("admin/") for name in importers), importers


def test_build_info_says_what_runs(tmp_path: Path) -> None:
    async def main() -> dict[Series, float]:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        try:
            return scrape(host_registry(host))
        finally:
            await host.aclose()

    samples = asyncio.run(main())
    labels = {"version": roost.__version__, "python": platform.python_version(),
              "protocol": str(max(VERSIONS))}  # fmt: skip
    assert value(samples, "roost_build_info", **labels) == 1
    assert value(samples, "process_open_fds") > 0
