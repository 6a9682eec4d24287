"""``roost``: the command line entry point."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, Literal

import click
from rich.console import Console
from rich.table import Table

from roost import __version__
from roost.cli.admin import queue, topic
from roost.cli.check import check
from roost.cli.exchanges import bind, exchange, unbind
from roost.cli.identities import acl_group, token_group, user_group
from roost.cli.messaging import consume, publish
from roost.cli.monitoring import dlq, stats
from roost.cli.session import DEFAULT_ADMIN_URL, DEFAULT_URL, Settings, json_option
from roost.cli.storage import repair
from roost.cli.subscriptions import group, subscription
from roost.errors import CorruptMetadata, DirectoryInUse, InvalidConfig


@click.group()
@click.version_option(__version__, prog_name="roost")
@click.option(
    "--url",
    envvar="ROOST_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The broker the client commands talk to; roosts:// for TLS (env ROOST_URL).",
)
@click.option(
    "--ca-file",
    envvar="ROOST_CA_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="roosts://: trust the broker's certificate if this CA signed it, instead of the "
    "system's trust store (env ROOST_CA_FILE).",
)
@click.option(
    "--cert-file",
    envvar="ROOST_CERT_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="roosts://: a client certificate, PEM, for mutual TLS (env ROOST_CERT_FILE).",
)
@click.option(
    "--key-file",
    envvar="ROOST_KEY_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="The client certificate's key, if not in --cert-file (env ROOST_KEY_FILE).",
)
@click.option(
    "--admin-url",
    envvar="ROOST_ADMIN_URL",
    default=DEFAULT_ADMIN_URL,
    show_default=True,
    help="The broker's admin API, for user, token and acl (env ROOST_ADMIN_URL).",
)
@click.option(
    "--token",
    envvar="ROOST_TOKEN",
    default=None,
    help="Authenticate with this API token (env ROOST_TOKEN).",
)
@click.option(
    "--user",
    envvar="ROOST_USER",
    default=None,
    metavar="NAME[:PASSWORD]",
    help="Authenticate as NAME; the password is asked for if not given (env ROOST_USER).",
)
@click.pass_context
def main(
    ctx: click.Context,
    url: str,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    admin_url: str,
    token: str | None,
    user: str | None,
) -> None:
    """Roost: work queues, routing and replayable logs in one broker."""
    if token is not None and user is not None:
        raise click.UsageError("give --token or --user, not both")
    ctx.obj = Settings(
        url=url, admin_url=admin_url, token=token, user=user, ca_file=ca_file,
        cert_file=cert_file, key_file=key_file,
    )  # fmt: skip


_COMMANDS = (topic, queue, subscription, group, exchange, bind, unbind, publish, consume, stats,
             dlq, user_group, token_group, acl_group, repair, check)  # fmt: skip
for _command in _COMMANDS:
    main.add_command(_command)


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A TOML file with a [server] table (and a [tls] table).",
)
@click.option("--data", default=None, help="Data directory (default ./data; env ROOST_DATA).")
@click.option("--listen", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 7420; 0 picks one).")
@click.option("--admin/--no-admin", default=None, help="Serve the HTTP admin API (default: on).")
@click.option("--admin-listen", default=None, help="Admin API address (default 127.0.0.1).")
@click.option(
    "--admin-port", type=int, default=None, help="Admin API port (default 7480; 0 picks one)."
)
@click.option(
    "--allow-anonymous",
    is_flag=True,
    default=None,
    help="With no users defined, serve without authentication on non-loopback addresses too "
    "(logged as a warning; env ROOST_ALLOW_ANONYMOUS).",
)
@click.option(
    "--max-memory",
    default=None,
    help="Memory budget: bytes (512MiB, 2GB), a fraction of RAM (0.4, the default) or 0 for "
    "none; over it, publishers are not read until memory falls back (env ROOST_MAX_MEMORY).",
)
@click.option(
    "--max-connections",
    type=int,
    default=None,
    help="Native connections open at once (default 10000; env ROOST_MAX_CONNECTIONS).",
)
@click.option(
    "--handshake-timeout-ms",
    type=int,
    default=None,
    help="A connection must finish its handshake this soon (default 10000).",
)
@click.option(
    "--frame-timeout-ms",
    type=int,
    default=None,
    help="A frame that started to arrive must be whole this soon (default 30000).",
)
@click.option(
    "--heartbeat-ms",
    type=int,
    default=None,
    help="Clients ping this often; a version-5 client silent twice as long is closed "
    "(default 10000).",
)
@click.option(
    "--tls-cert-file",
    default=None,
    help="Serve TLS only, with this PEM certificate chain (env ROOST_TLS_CERT_FILE).",
)
@click.option(
    "--tls-key-file",
    default=None,
    help="Its private key, if not in the certificate's file (env ROOST_TLS_KEY_FILE).",
)
@click.option(
    "--tls-ca-file",
    default=None,
    help="Check client certificates against this CA bundle (env ROOST_TLS_CA_FILE).",
)
@click.option(
    "--tls-client-auth",
    type=click.Choice(["none", "optional", "required"]),
    default=None,
    help="Ask clients for a certificate (default none; env ROOST_TLS_CLIENT_AUTH).",
)
@click.option(
    "--min-free-bytes",
    type=int,
    default=None,
    help="Refuse publishes (disk_full) while the data directory's filesystem has less free "
    "(default 2x the largest segment + 1 GiB; 0: off; env ROOST_MIN_FREE_BYTES).",
)
@click.option(
    "--max-open-files",
    type=int,
    default=None,
    help="Storage keeps at most this many files open, closing idle ones (default 3/4 of the "
    "open files limit, which is raised to its hard value; env ROOST_MAX_OPEN_FILES).",
)
def serve(
    config_file: str | None,
    data: str | None,
    listen: str | None,
    port: int | None,
    admin: bool | None,
    admin_listen: str | None,
    admin_port: int | None,
    allow_anonymous: bool | None,
    max_memory: str | None,
    max_connections: int | None,
    handshake_timeout_ms: int | None,
    frame_timeout_ms: int | None,
    heartbeat_ms: int | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    tls_ca_file: str | None,
    tls_client_auth: str | None,
    min_free_bytes: int | None,
    max_open_files: int | None,
) -> None:
    """Run the broker: the native protocol and the HTTP admin API, one data directory."""
    import asyncio
    import logging
    import os

    from roost.admin.server import start_admin
    from roost.server import serve as serving
    from roost.server.process_tuning import tune_allocator, tune_collector

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    flags = {
        "data": data, "listen": listen, "port": port, "admin": admin,
        "admin_listen": admin_listen, "admin_port": admin_port,
        "allow_anonymous": allow_anonymous, "max_memory": max_memory,
        "max_connections": max_connections, "handshake_timeout_ms": handshake_timeout_ms,
        "frame_timeout_ms": frame_timeout_ms, "heartbeat_ms": heartbeat_ms,
        "tls_cert_file": tls_cert_file, "tls_key_file": tls_key_file,
        "tls_ca_file": tls_ca_file, "tls_client_auth": tls_client_auth,
        "min_free_bytes": min_free_bytes, "max_open_files": max_open_files,
    }  # fmt: skip
    try:
        config = serving.settings(config_file, os.environ, flags)
    except InvalidConfig as e:  # an unreadable file, an unknown or mistyped setting: one line
        click.echo(f"error: {e}", err=True)
        sys.exit(1)

    def ready(address: str, bound: int) -> None:
        click.echo(f"roost listening on {address}:{bound}", err=True)

    tune_allocator()
    tune_collector()
    try:
        try:
            import uvloop

            uvloop.run(serving.run(config, ready, [start_admin]))
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            asyncio.run(serving.run(config, ready, [start_admin]))
    except (InvalidConfig, CorruptMetadata) as e:  # it cannot serve with these: one line
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except DirectoryInUse as e:
        click.echo(f"error: {e}; stop it first, or serve another --data", err=True)
        sys.exit(1)


@main.group()
def bench() -> None:
    """Benchmarks that print their figures next to baselines from the same run."""


def _dir_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--dir", "directory", type=click.Path(file_okay=False), default=None, help=help
    )


_WRITE_DIR_HELP = (
    "Where to write (default: the system temp directory); it decides the disk measured."
)


@bench.command("storage")
@json_option
@_dir_option(_WRITE_DIR_HELP)
@click.option("--batches", default=600, show_default=True, help="Batches of 100 records per run.")
@click.option(
    "--rounds", default=3, show_default=True, help="Alternating rounds; medians reported."
)
def bench_storage(as_json: bool, directory: str | None, batches: int, rounds: int) -> None:
    """The storage engine against raw file I/O: writes, fsyncs, group commit, reads."""
    from roost.bench.storage import run_storage_bench

    _report(
        as_json,
        lambda progress: run_storage_bench(directory, batches, rounds, progress),
        "roost bench storage (1 KiB values, medians)",
        {
            "never_ratio": ">= 0.5",
            "read_batches_ratio": ">= 0.5",
            "always_64_vs_1": ">= 20",
            "group_commit_ratio": ">= 0.25",
        },
    )


@bench.command("compaction")
@json_option
@_dir_option(_WRITE_DIR_HELP)
@click.option("--records", default=100_000, show_default=True, help="1 KiB records written.")
@click.option("--keys", default=10_000, show_default=True, help="Distinct keys among them.")
@click.option(
    "--rounds", default=3, show_default=True, help="Alternating rounds; medians reported."
)
def bench_compaction(
    as_json: bool, directory: str | None, records: int, keys: int, rounds: int
) -> None:
    """A compaction pass against a sequential read of the same log, in one run."""
    from roost.bench.compaction import run_compaction_bench

    _report(
        as_json,
        lambda progress: run_compaction_bench(directory, records, keys, rounds, progress),
        "roost bench compaction (1 KiB values, 8 MiB segments, medians)",
        {"compaction_ratio": ">= 0.5"},
    )


@bench.command("core")
@json_option
@_dir_option(_WRITE_DIR_HELP)
@click.option(
    "--messages", default=100_000, show_default=True, help="Messages per phase (1 KiB each)."
)
@click.option(
    "--batch",
    default=100,
    show_default=True,
    help="Messages per publish, receive, ack and stream fetch.",
)
@click.option("--keys", default=1_000, show_default=True, help="Distinct keys on the fifo queue.")
@click.option(
    "--delayed",
    default=1_000_000,
    show_default=True,
    help="Delayed records ahead of the delayed phase's queue (0: no such phase).",
)
def bench_core(
    as_json: bool, directory: str | None, messages: int, batch: int, keys: int, delayed: int
) -> None:
    """The broker's queue path (publish, receive, ack) against the log alone, durability always."""
    from roost.bench.core import run_core_bench

    if min(messages, batch, keys) < 1 or messages % batch or delayed < 0:
        raise click.BadParameter(
            "--messages, --batch and --keys must be positive, --messages a multiple of --batch, "
            "--delayed not negative"
        )
    _report(
        as_json,
        lambda progress: run_core_bench(directory, messages, batch, keys, progress, delayed),
        "roost bench core (1 KiB values, durability always, one run)",
        {
            "queue_vs_append_ratio": ">= 0.5",
            "queue_cpu_us_per_msg": "<= 10",
            "delayed_vs_queue_ratio": ">= 0.8",
        },
    )


@bench.command("e2e")
@json_option
@click.option(
    "--url",
    default=None,
    help="Measure the broker at this URL (default: start a roost serve in a temp directory).",
)
@_dir_option("Where the started broker keeps its data (default: the system temp directory).")
@click.option("--messages", default=30_000, show_default=True, help="Messages (1 KiB each).")
@click.option("--batch", default=64, show_default=True, help="Messages per publish.")
@click.option("--inflight", default=256, show_default=True, help="Unconfirmed messages at most.")
@click.option("--prefetch", default=256, show_default=True, help="Messages per receive.")
@click.option(
    "--tls",
    is_flag=True,
    help="Also run it against a broker serving TLS, and print the TLS / plain ratios.",
)
@click.option(
    "--auth",
    is_flag=True,
    help="Also run it with SCRAM-authenticated clients (and, with --tls, over TLS with them), "
    "and print the ratios to the plain run.",
)
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    help="Runs (of each variant, in rotated order); medians reported.",
)
def bench_e2e(
    as_json: bool,
    url: str | None,
    directory: str | None,
    messages: int,
    batch: int,
    inflight: int,
    prefetch: int,
    tls: bool,
    auth: bool,
    rounds: int,
) -> None:
    """A producer process and a consumer process over the network, durability always."""
    from roost.bench.e2e import run_e2e_bench

    if min(messages, batch, inflight, prefetch, rounds) < 1:
        raise click.BadParameter(
            "--messages, --batch, --inflight, --prefetch and --rounds must be positive"
        )
    if (tls or auth) and url is not None:
        raise click.BadParameter("--tls and --auth start brokers of their own: leave out --url")
    _report(
        as_json,
        lambda progress: run_e2e_bench(
            url,
            directory,
            messages,
            batch,
            inflight,
            prefetch,
            progress=progress,
            tls=tls,
            rounds=rounds,
            auth=auth,
        ),
        "roost bench e2e (1 KiB values, durability always, separate processes)"
        + (", then with SCRAM users" if auth else "")
        + (", then over TLS" if tls else ""),
        {},
    )


@bench.command("breadth")
@json_option
@_dir_option("Where the broker keeps its data (default: the system temp directory).")
@click.option(
    "--queues",
    default=2_000,
    show_default=True,
    help="Idle queues to create.",
)
@click.option(
    "--idle-seconds", default=10.0, show_default=True, help="Window of each idle-CPU reading."
)
@click.option(
    "--paced-seconds", default=5.0, show_default=True, help="Length of each paced publisher run."
)
@click.option("--rate", default=200.0, show_default=True, help="The paced publisher's publishes/s.")
@click.option(
    "--durability",
    type=click.Choice(["always", "interval", "never"]),
    default="never",
    show_default=True,
    help="The paced queue's durability (never: its p99 shows loop stalls, not fsyncs).",
)
@click.option(
    "--max-open-files",
    type=int,
    default=None,
    help="The broker's ceiling on open storage files (default: the broker's own).",
)
@click.option(
    "--creates",
    default=0,
    show_default=True,
    help="Measure only the create rate: create this many queues (each with its dead-letter "
    "topic), timed one by one and in batches.",
)
@click.option(
    "--batch", default=1_000, show_default=True, help="Creates per timed batch (with --creates)."
)
@click.option(
    "--clients",
    default=1,
    show_default=True,
    help="Clients creating at once, each on its own connection (with --creates).",
)
@click.option(
    "--active",
    default=0,
    show_default=True,
    help="Measure only throughput over many active queues: W1-style traffic spread over this "
    "many durable queues against the same over 4.",
)
@click.option(
    "--messages", default=64_000, show_default=True, help="Messages of 1 KiB (with --active)."
)
@click.option(
    "--publish-batch", default=16, show_default=True, help="Messages per publish (with --active)."
)
@click.option(
    "--inflight", default=256, show_default=True, help="Unconfirmed messages (with --active)."
)
@click.option(
    "--prefetch", default=64, show_default=True, help="Prefetch per queue (with --active)."
)
@click.option("--rounds", default=1, show_default=True, help="Runs of each case (with --active).")
def bench_breadth(
    as_json: bool,
    directory: str | None,
    queues: int,
    idle_seconds: float,
    paced_seconds: float,
    rate: float,
    durability: Literal["always", "interval", "never"],
    max_open_files: int | None,
    creates: int,
    batch: int,
    clients: int,
    active: int,
    messages: int,
    publish_batch: int,
    inflight: int,
    prefetch: int,
    rounds: int,
) -> None:
    """Idle CPU and a paced publisher's p99 among many idle queues, against one queue; with
    ``--creates``, the create rate at the start and after N queues instead; with ``--active``,
    throughput over N active queues against 4."""
    from roost.bench.breadth import run_breadth_bench

    if active:
        from roost.bench.active_queues import run_active_bench

        if active < 1 or min(messages, publish_batch, inflight, prefetch, rounds) < 1:
            raise click.BadParameter(
                "--active, --messages, --publish-batch, --inflight, --prefetch and --rounds "
                "must be positive"
            )
        _report(
            as_json,
            lambda progress: run_active_bench(
                directory,
                active,
                messages,
                publish_batch,
                inflight,
                prefetch,
                rounds,
                progress=progress,
            ),
            f"roost bench breadth --active ({active:,} active queues against 4)",
            {"ratio": ">= 0.8"},
        )
        return

    if creates:
        from roost.bench.create_rate import run_create_bench

        if creates < 10 or batch < 1 or clients < 1:
            raise click.BadParameter(
                "--creates must be at least 10, --batch and --clients positive"
            )
        _report(
            as_json,
            lambda progress: run_create_bench(
                directory, creates, batch, progress, max_open_files, clients
            ),
            f"roost bench breadth --creates ({creates:,} queues, each with a dead-letter topic)",
            {"creates_per_s_last": ">= 1000", "nth_over_10th": "<= 1.0"},
        )
        return

    if queues < 1 or min(idle_seconds, paced_seconds, rate) <= 0:
        raise click.BadParameter(
            "--queues, --idle-seconds, --paced-seconds and --rate must be positive"
        )
    _report(
        as_json,
        lambda progress: run_breadth_bench(
            directory,
            queues,
            idle_seconds,
            paced_seconds,
            rate,
            durability,
            progress,
            max_open_files,
        ),
        f"roost bench breadth ({queues:,} idle queues against 1)",
        {"idle_cpu_n": "<= 0.02", "paced_p99_ratio": "<= 1.2"},
    )


@bench.command("paced")
@json_option
@_dir_option("Where the broker keeps its data (default: the system temp directory).")
@click.option(
    "--rate",
    "rates",
    type=float,
    multiple=True,
    default=(1000.0, 5000.0),
    show_default=True,
    help="Messages a second of 1 KiB (repeat for several cases).",
)
@click.option("--seconds", default=10.0, show_default=True, help="Length of each case.")
@click.option(
    "--large-rate",
    default=100.0,
    show_default=True,
    help="Messages a second of --large-bytes (0: no large case).",
)
@click.option(
    "--large-bytes", default=256 * 1024, show_default=True, help="Size of a large message."
)
def bench_paced(
    as_json: bool,
    directory: str | None,
    rates: tuple[float, ...],
    seconds: float,
    large_rate: float,
    large_bytes: int,
) -> None:
    """Broker CPU per message when a producer and a consumer go at a set rate."""
    from roost.bench.paced import run_paced_bench

    if not rates or min(rates) <= 0 or seconds <= 0 or large_rate < 0 or large_bytes < 16:
        raise click.BadParameter(
            "--rate and --seconds must be positive, --large-rate at least 0, "
            "--large-bytes at least 16"
        )
    _report(
        as_json,
        lambda progress: run_paced_bench(
            directory, rates, seconds, large_rate, large_bytes, progress
        ),
        f"roost bench paced (durability always, {seconds:g} s per case)",
        {"r1000_broker_cpu_us_per_msg": "<= 100"},
    )


@bench.command("chaos")
@json_option
@_dir_option("Where the broker keeps its data (default: the system temp directory).")
@click.option("--kills", default=500, show_default=True, help="SIGKILLs before the drain.")
@click.option("--lanes", default=16, show_default=True, help="Producer lanes (connections).")
@click.option("--processes", default=4, show_default=True, help="OS processes for the lanes.")
@click.option("--seed", default=1, show_default=True, help="Seeds the kill times and batches.")
@click.option(
    "--interval",
    nargs=2,
    type=float,
    default=(0.5, 3.0),
    show_default=True,
    help="A kill lands this many seconds (uniform between the two) after the broker listens.",
)
@click.option(
    "--max-seconds", default=3600.0, show_default=True, help="Stop killing after this long."
)
@click.option("--drain-timeout", default=1800.0, show_default=True, help="Seconds to drain.")
@click.option("--value-bytes", default=100, show_default=True, help="Bytes per message.")
@click.option("--max-batch", default=8, show_default=True, help="Messages per publish, at most.")
@click.option("--keys", default=8, show_default=True, help="Keys per keyed-queue lane.")
@click.option(
    "--serve-arg", "serve_args", multiple=True, help="Passed to roost serve (repeatable)."
)
def bench_chaos(
    as_json: bool,
    directory: str | None,
    kills: int,
    lanes: int,
    processes: int,
    seed: int,
    interval: tuple[float, float],
    max_seconds: float,
    drain_timeout: float,
    value_bytes: int,
    max_batch: int,
    keys: int,
    serve_args: tuple[str, ...],
) -> None:
    """SIGKILL a roost serve under confirmed load, drain it, count what was lost.

    Exits 1 if a confirmed message was lost, something unexpected was delivered or per-key
    order was broken."""
    from roost.bench.chaos import run_chaos_bench

    if min(lanes, processes, max_batch, keys) < 1 or kills < 0:
        raise click.BadParameter("--lanes, --processes, --max-batch and --keys must be positive")
    if not 0 < interval[0] <= interval[1]:
        raise click.BadParameter("--interval takes two positive seconds, the smaller first")
    figures: dict[str, Any] = {}

    def measure(progress: Callable[[str], None]) -> dict[str, Any]:
        figures.update(run_chaos_bench(
            kills, lanes, processes, seed, interval, max_seconds, drain_timeout, value_bytes,
            max_batch, keys, directory, serve_args, progress,
        ))  # fmt: skip
        return figures

    _report(as_json, measure, "roost bench chaos (durability always)", {
        "lost": "0", "unexpected": "0", "order_violations": "0"
    })  # fmt: skip
    if figures["lost"] or figures["unexpected"] or figures["order_violations"]:
        sys.exit(1)


@bench.command("faults")
@json_option
@_dir_option("Where the brokers keep their data (default: the system temp directory).")
@click.option("--idle-connections", default=2000, show_default=True)
@click.option("--stalled-messages", default=500_000, show_default=True)
@click.option("--stalled-prefetch", default=10_000, show_default=True)
@click.option("--unread-messages", default=500_000, show_default=True)
@click.option(
    "--unread-batch",
    default=1,
    show_default=True,
    help="Messages per publish of the producer that never reads its answers.",
)
@click.option("--slowloris", "slowloris_connections", default=500, show_default=True)
@click.option("--slowloris-declared-bytes", default=16 << 20, show_default=True)
@click.option(
    "--slowloris-body-bytes",
    default=4096,
    show_default=True,
    help="Bytes of the declared frame sent before stalling.",
)
@click.option("--fuzz-connections", default=8, show_default=True)
@click.option("--fuzz-bytes-per-s", default=1_000_000, show_default=True)
@click.option(
    "--case",
    "cases",
    multiple=True,
    type=click.Choice(["idle", "stalled", "unread", "slowloris", "fuzz"]),
    help="Run only these flood cases (repeatable; default: all).",
)
@click.option("--probe-seconds", default=3.0, show_default=True, help="The good client's run.")
@click.option("--case-timeout", default=300.0, show_default=True, help="Seconds per flood step.")
@click.option(
    "--rss-limit-mb", default=4096, show_default=True, help="Stop a flood past this broker RSS."
)
@click.option("--soak", "soak_seconds", default=0.0, help="Then soak this long at half capacity.")
@click.option(
    "--serve-arg", "serve_args", multiple=True, help="Passed to roost serve (repeatable)."
)
def bench_faults(
    as_json: bool,
    directory: str | None,
    cases: tuple[str, ...],
    probe_seconds: float,
    case_timeout: float,
    rss_limit_mb: int,
    soak_seconds: float,
    serve_args: tuple[str, ...],
    **sizes: int,
) -> None:
    """Floods of bad clients: the broker's RSS and fds, and a good client's throughput."""
    from roost.bench.faults import CASES, FloodSizes, run_faults_bench

    if min(sizes.values()) < 1 or probe_seconds <= 0 or soak_seconds < 0:
        raise click.BadParameter("flood sizes and --probe-seconds must be positive")
    _report(
        as_json,
        lambda progress: run_faults_bench(
            FloodSizes(**sizes),
            cases or CASES,
            probe_seconds,
            soak_seconds,
            case_timeout,
            rss_limit_mb,
            directory,
            serve_args,
            progress,
        ),
        "roost bench faults (RSS and fds per flood; a good client's throughput ratio)",
        {f"{case}_throughput_ratio": ">= 0.8" for case in CASES},
    )


def _report(
    as_json: bool,
    measure: Callable[[Callable[[str], None]], dict[str, Any]],
    title: str,
    targets: dict[str, str],
) -> None:
    """Run ``measure`` (it reports progress on stderr), then print its figures: one JSON object,
    or a table with each figure's target where it has one."""
    with Console(stderr=True).status("measuring") as status:
        result = measure(status.update)
    if as_json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for name, value in result.items():
        if isinstance(value, int | float):
            table.add_row(
                name, f"{value:,.3f}" if value < 10 else f"{value:,.0f}", targets.get(name, "")
            )
    Console().print(table)


if __name__ == "__main__":
    main()
