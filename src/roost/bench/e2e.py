"""``roost bench e2e``: a producer process and a consumer process against a ``roost serve``.

What users get end to end over the native protocol, as the peer-broker harness measures other
brokers: a broker process (``roost serve`` on a fresh temp data directory and port 0, or the one
at ``--url``), one producer process and one consumer process, each its own OS process running
uvloop and ``roost.connect``. One durable queue (durability ``always``: a publish is confirmed
after fsync). Values are 1 KiB; the first 16 bytes carry the sequence number and the send time
(``CLOCK_MONOTONIC``, one clock for every process on the machine).

The producer keeps ``inflight`` messages unconfirmed at most, as ``inflight / batch`` tasks that
each ``publish_batch`` ``batch`` messages and wait for the confirm. The consumer subscribes with
``prefetch`` (the broker pushes while fewer are unacked) and acks each pushed batch with one
``ack``, in the background. Both start together once connected.

Fields:
  msgs_per_s              messages / (first publish .. last receive)
  producer_msgs_per_s     messages / (first publish .. last confirm)
  consumer_msgs_per_s     messages / (first .. last receive)
  latency_p50_ms, _p99_ms receive time - send stamp, over every message (under full load:
                          queueing behind ``inflight`` + ``prefetch``, not an idle latency)
  broker_cpu_us_per_msg   CPU time of the broker process (all threads) over the run, per
                          message, from /proc/PID/task/*/schedstat (absent with ``--url``:
                          the pid is unknown)
  producer_cpu_us_per_msg, consumer_cpu_us_per_msg   the same for each client process, from
                          /proc/self around its measured part

Then a replay, as the peer harness's W4: ``messages`` more are written to a fresh topic
(durability ``always``, ``batch`` per publish, not measured), and a new reader process joins a
new `stream` subscription from the earliest offset and reads them all with
``member.stream(max_records=REPLAY_BATCH)`` (the next fetch in flight while it handles a batch;
per record it reads the sequence number, as a handler would):
  replay_msgs_per_s              messages / (first .. last record handed to the reader)
  replay_broker_cpu_us_per_msg   the broker's CPU over the reader's run, per message
  replay_reader_cpu_us_per_msg   the reader process's CPU, per message

Each figure is the median of ``rounds`` runs (``--rounds``), each against a fresh broker.

Then ``connect_ms``: the median time to open a client, have one request answered and close it,
over ``CONNECTS`` connections one after another (TCP, the handshake, the login under ``--auth``,
TLS under ``--tls``): what a connection costs, beside what a message costs.

Variants, each measured beside the plain run of the same round (rounds rotate their order):
- ``--auth``: the broker holds a user whose grants are on names (``topic:#``, ``group:#``),
  not ``admin``, so every command takes the door's per-resource checks; every client logs
  in with SCRAM-SHA-256. Figures under ``auth``.
- ``--tls``: a ``roost serve`` that speaks TLS only (a certificate for 127.0.0.1 from a CA
  made for the run with trustme; every client checks it, as ``roosts://`` does), with the
  SCRAM user too under ``--auth``. Figures under ``tls``.
Beside the plain figures, for each variant V:
  V_msgs_per_s, V_replay_msgs_per_s, V_broker_cpu_us_per_msg    as above, for V
  V_vs_plain_msgs_ratio, V_vs_plain_replay_ratio                 V / plain
  V_connect_ms                                                   ``connect_ms`` for V
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

VALUE_BYTES = 1024
HEADER = struct.Struct("<Qq")  # sequence, send time (monotonic ns)
RECEIVE_WAIT_S = 1.0
#: Records per fetch of the replay reader (the peer harness's ``--replay-batch``).
REPLAY_BATCH = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTENING = "roost listening on "


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time of a process, every live thread, from /proc: the sum of each thread's
    ``schedstat`` (nanoseconds), else ``stat``'s utime + stime (clock ticks, 10 ms coarse)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15


def _percentile(ordered: list[int], p: float) -> float:
    index = min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))
    return ordered[index] / 1e6


#: The user a ``--auth`` run's clients log in as (SCRAM-SHA-256); its password travels to the
#: client processes in this environment variable, never on a command line.
BENCH_USER = "bench"
PASSWORD_VARIABLE = "ROOST_BENCH_PASSWORD"


@dataclass(frozen=True)
class Target:
    """The broker measured: its URL, the CA its certificate is checked against (``roosts://``
    only), and the user to log in as (None: the broker asks for nobody)."""

    url: str
    ca_file: str | None = None
    user: str | None = None

    def connect(self) -> Any:
        import roost

        password = os.environ.get(PASSWORD_VARIABLE) if self.user else None
        return roost.connect(
            self.url, reconnect=False, ca_file=self.ca_file, username=self.user, password=password
        )

    def argv(self) -> list[str]:
        return [self.url, self.ca_file or "-", self.user or "-"]

    @classmethod
    def from_argv(cls, url: str, ca_file: str, user: str) -> Target:
        return cls(url, None if ca_file == "-" else ca_file, None if user == "-" else user)


@dataclass(frozen=True)
class Variant:
    """One way of serving the same workload: its name in the figures (``""``: the plain
    baseline), over TLS or not, with SCRAM-authenticated clients or not."""

    name: str
    tls: bool = False
    auth: bool = False

    @property
    def described(self) -> str:
        parts = (["SCRAM users"] if self.auth else []) + (["TLS"] if self.tls else [])
        return f" ({', '.join(parts)})" if parts else ""


PLAIN = Variant("")


def variants(tls: bool, auth: bool) -> list[Variant]:
    """The plain baseline first, then: ``auth`` (SCRAM users, no TLS); ``tls`` (TLS, with
    SCRAM users too under ``auth``: what a deployment runs)."""
    found = [PLAIN]
    if auth:
        found.append(Variant("auth", auth=True))
    if tls:
        found.append(Variant("tls", tls=True, auth=auth))
    return found


# -- the two client processes -----------------------------------------------------------


async def _produce(
    target: Target, queue: str, messages: int, batch: int, inflight: int
) -> dict[str, Any]:
    client = await target.connect()
    publisher = _stamping_publisher(client, queue, messages, batch)

    return await timed_publishers(client, publisher, max(1, inflight // batch))


async def timed_publishers(
    client: Any, publisher: Callable[[], Awaitable[None]], count: int
) -> dict[str, Any]:
    """Say ready, run ``count`` publishers at once (each publishing until the messages run
    out), close ``client``; when the publishing started and ended, and this process's CPU."""
    await _ready()
    cpu0, t0 = cpu_seconds(), time.monotonic_ns()
    await asyncio.gather(*(publisher() for _ in range(count)))
    t1, cpu1 = time.monotonic_ns(), cpu_seconds()
    await client.aclose()
    return {"t_start": t0, "t_end": t1, "cpu_s": cpu1 - cpu0}


async def _consume(target: Target, queue: str, messages: int, prefetch: int) -> dict[str, Any]:
    client = await target.connect()
    seen = bytearray(messages)
    latencies: list[int] = []
    await _ready()
    cpu0, t_first = cpu_seconds(), 0
    unique = 0
    acking: set[asyncio.Task[Any]] = set()
    async with client.subscribe(queue, prefetch=prefetch) as deliveries:
        while unique < messages:
            got = await deliveries.batch()
            now = time.monotonic_ns()
            t_first = t_first or now
            for delivery in got:
                seq, sent = HEADER.unpack_from(delivery.value)
                latencies.append(now - sent)
                if not seen[seq]:
                    seen[seq] = 1
                    unique += 1
            # Acked in the background: the next pushed batch is handled meanwhile.
            ack = asyncio.create_task(deliveries.ack(got))
            acking.add(ack)
            ack.add_done_callback(acking.discard)
        await asyncio.gather(*acking)
    t_last, cpu1 = time.monotonic_ns(), cpu_seconds()
    await client.aclose()
    latencies.sort()
    return {
        "t_first": t_first, "t_last": t_last, "cpu_s": cpu1 - cpu0, "received": len(latencies),
        "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
    }  # fmt: skip


async def _replay(target: Target, topic: str, messages: int) -> dict[str, Any]:
    client = await target.connect()
    group = f"replay-{os.getpid()}"
    await client.create_subscription(topic, group, mode="stream", start="earliest")
    member = await client.join(topic, group)
    seen = bytearray(messages)
    count = 0
    await _ready()
    cpu0, t_first = cpu_seconds(), 0
    async with member.stream(max_records=REPLAY_BATCH, wait=RECEIVE_WAIT_S) as batches:
        async for batch in batches:
            t_first = t_first or time.monotonic_ns()
            for record in batch:
                seen[HEADER.unpack_from(record.value)[0]] = 1
            count += len(batch)
            if count >= messages:
                break
        t_last, cpu1 = time.monotonic_ns(), cpu_seconds()
    await client.aclose()
    return {"t_first": t_first, "t_last": t_last, "cpu_s": cpu1 - cpu0, "received": count,
            "unique": sum(seen)}  # fmt: skip


async def _write_log(target: Target, topic: str, messages: int, batch: int) -> None:
    """The replay's log: ``messages`` records of VALUE_BYTES, stamped as the producer does."""
    async with target.connect() as client:
        await client.create_topic(topic, durability="always")
        publisher = _stamping_publisher(client, topic, messages, batch)
        await asyncio.gather(*(publisher() for _ in range(4)))


def _stamping_publisher(
    client: Any, topic: str, messages: int, batch: int
) -> Callable[[], Awaitable[None]]:
    """A publisher task's body: ``publish_batch`` of ``batch`` values of VALUE_BYTES, each
    stamped with its sequence number and send time, until ``messages`` are sent. Tasks of the
    same publisher share its sequence, so several of them keep several batches in flight."""
    from roost.core.publishing import Outgoing

    filler = bytearray((b"0123456789abcdef" * (VALUE_BYTES // 16 + 1))[:VALUE_BYTES])
    batches = iter(range(0, messages, batch))

    async def publisher() -> None:
        for first in batches:
            out = []
            for seq in range(first, min(first + batch, messages)):
                HEADER.pack_into(filler, 0, seq, time.monotonic_ns())
                out.append(Outgoing(value=bytes(filler)))
            await client.publish_batch(topic, out)

    return publisher


async def _ready() -> None:
    """Tell the parent we are connected; start when it says go (a line on stdin)."""
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _client_main(argv: list[str]) -> None:
    role, url, ca_file, user, queue, messages, batch, window = argv
    target = Target.from_argv(url, ca_file, user)
    if role == "producer":
        work = _produce(target, queue, int(messages), int(batch), int(window))
    elif role == "replay":
        work = _replay(target, queue, int(messages))
    else:
        work = _consume(target, queue, int(messages), int(window))
    result = _run(work)
    print(json.dumps(result), flush=True)


def _run(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# -- the broker and the run --------------------------------------------------------------


class _Server:
    """A ``roost serve`` on port 0 with a fresh data directory under ``directory``; with
    ``tls``, serving TLS only with a certificate from a CA made for it (``target.ca_file``);
    with ``auth``, holding the user ``BENCH_USER`` (made before it starts), so that every
    connection logs in."""

    def __init__(self, directory: str | None, tls: bool = False, auth: bool = False) -> None:
        self.root = tempfile.mkdtemp(prefix="roost-e2e-", dir=directory)
        self.log_path = os.path.join(self.root, "serve.log")
        if auth:
            _add_bench_user(os.path.join(self.root, "data"))
        flags, ca_file = [], None
        if tls:
            cert_file, key_file, ca_file = _certificates(os.path.join(self.root, "tls"))
            flags = ["--tls-cert-file", cert_file, "--tls-key-file", key_file]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "roost.cli.main", "serve",
                 "--data", os.path.join(self.root, "data"), "--port", "0", "--admin-port", "0",
                 *flags],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        address = self._wait_listening()
        self.target = Target(
            f"{'roosts' if tls else 'roost'}://{address}", ca_file, BENCH_USER if auth else None
        )

    def _wait_listening(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                for line in f:
                    if line.startswith(LISTENING):
                        return line[len(LISTENING) :].strip()
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"roost serve did not start: see {self.log_path}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _add_bench_user(data: str) -> None:
    """``BENCH_USER`` in the data directory at ``data``, with a random password put in this
    process's environment, which the client processes inherit."""
    from roost.clock import SystemClock
    from roost.server.access import Grant
    from roost.server.identities import Identities
    from roost.storage.engine import open_metadata

    password = os.environ.setdefault(PASSWORD_VARIABLE, secrets.token_urlsafe(16))
    with open_metadata(data, create=True) as store:
        identities = Identities(store, SystemClock())
        identities.add_user(BENCH_USER, password)
        # Grants on names, not ``admin``: every command takes the door's per-resource checks,
        # the path a deployment's services take.
        for grant in [Grant(op, "topic", "#") for op in ("publish", "consume", "manage")] + [
            Grant(op, "group", "#") for op in ("consume", "manage")
        ]:
            identities.grant(BENCH_USER, grant)


def _certificates(directory: str) -> tuple[str, str, str]:
    """(certificate, key, CA) PEM files under ``directory``: a CA made now and a certificate
    it signed for 127.0.0.1, as a deployment with a private CA has."""
    try:
        import trustme
    except ImportError as e:
        raise RuntimeError("--tls makes its certificates with trustme: pip install trustme") from e
    os.makedirs(directory)
    ca = trustme.CA(organization_name="roost bench e2e")
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = [os.path.join(directory, name) for name in ("server.pem", "server.key", "ca.pem")]
    contents = [
        b"".join(pem.bytes() for pem in server.cert_chain_pems),
        server.private_key_pem.bytes(),
        ca.cert_pem.bytes(),
    ]
    for path, content in zip(paths, contents, strict=True):
        with open(path, "wb") as f:
            f.write(content)
    return paths[0], paths[1], paths[2]


def wait_ready(clients: list[Any]) -> None:
    """Wait for each bench client process to say it is connected."""
    for client in clients:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("a bench client failed to connect")


def go_and_collect(clients: list[Any], timeout_s: float) -> list[dict[str, Any]]:
    """Tell every client to start, then read each one's result (its last stdout line)."""
    for client in clients:
        client.stdin.write("go\n")
        client.stdin.flush()
    results = []
    for client in clients:
        out, _ = client.communicate(timeout=timeout_s)
        if client.returncode != 0:
            raise RuntimeError(f"a bench client exited with {client.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _spawn(role: str, target: Target, queue: str, messages: int, batch: int, window: int) -> Any:
    argv = [sys.executable, "-m", "roost.bench.e2e", role, *target.argv(), queue,
            str(messages), str(batch), str(window)]  # fmt: skip
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


async def _admin(target: Target, queue: str, create: bool) -> None:
    async with target.connect() as broker:
        if create:
            await broker.create_queue(
                queue, durability="always", max_deliveries=None, dead_letter=None
            )
        else:
            await broker.delete_queue(queue)


def _replay_phase(
    target: Target, broker_pid: int | None, messages: int, batch: int, timeout: float
) -> tuple[dict[str, Any], float | None]:
    """Write the log, then time a fresh reader process replaying it; (its figures, broker CPU)."""
    topic = f"bench-replay-{os.getpid()}-{time.monotonic_ns()}"
    _run(_write_log(target, topic, messages, batch))
    reader = _spawn("replay", target, topic, messages, batch, 0)
    try:
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError("the replay reader failed to connect")
        broker_cpu0 = cpu_seconds(broker_pid) if broker_pid is not None else 0.0
        reader.stdin.write("go\n")
        reader.stdin.flush()
        out, _ = reader.communicate(timeout=timeout)
        broker_cpu = cpu_seconds(broker_pid) - broker_cpu0 if broker_pid is not None else None
        if reader.returncode != 0:
            raise RuntimeError(f"the replay reader exited with {reader.returncode}")
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    _run(_delete_topic(target, topic))
    return json.loads(out.strip().splitlines()[-1]), broker_cpu


#: Connections opened one after another to time what a connection costs (``connect_ms``).
CONNECTS = 50


async def _connect_cost(target: Target) -> float:
    """The median time to open a client and have it served (TCP, TLS, HELLO, the login, one
    answered request), in ms: what authentication and TLS cost per connection."""
    took = []
    for _ in range(CONNECTS):
        start = time.perf_counter()
        async with target.connect() as client:
            await client.list_topics()
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took)


async def _delete_topic(target: Target, topic: str) -> None:
    async with target.connect() as broker:
        await broker.delete_topic(topic)


def run_e2e_bench(
    url: str | None,
    directory: str | None,
    messages: int,
    batch: int,
    inflight: int,
    prefetch: int,
    timeout: float = 300.0,
    progress: Callable[[str], None] = lambda _: None,
    tls: bool = False,
    rounds: int = 1,
    auth: bool = False,
) -> dict[str, Any]:
    """The figures of the module doc, the median of ``rounds`` runs (each against a fresh
    broker). With ``auth`` and ``tls``, each round also runs the variants (``variants``) and
    the figures gain ``<variant>_msgs_per_s``, ``<variant>_vs_plain_msgs_ratio``,
    ``<variant>_vs_plain_replay_ratio``, ``<variant>_broker_cpu_us_per_msg`` and the variant's
    whole figures under its name. Each round runs them in a rotated order: a run disturbed by
    the disk or a neighbour must not always fall on the same side of a ratio."""
    served = variants(tls, auth)
    if len(served) > 1 and url is not None:
        raise ValueError("--tls and --auth start brokers of their own: they cannot measure a --url")
    runs: dict[Variant, list[dict[str, Any]]] = {variant: [] for variant in served}
    for round_ in range(rounds):
        shift = round_ % len(served)
        for variant in served[shift:] + served[:shift]:
            runs[variant].append(
                _measure(
                    url if variant is PLAIN else None, directory, messages, batch, inflight,
                    prefetch, timeout, progress, variant,
                )
            )  # fmt: skip
    figures = _medians(runs[PLAIN])
    settings = figures.pop("settings")
    for variant in served[1:]:
        theirs = _medians(runs[variant])

        def ratio(name: str, theirs: dict[str, Any] = theirs) -> float:
            return round(float(theirs[name]) / float(figures[name]), 3)

        figures.update({
            f"{variant.name}_msgs_per_s": theirs["msgs_per_s"],
            f"{variant.name}_vs_plain_msgs_ratio": ratio("msgs_per_s"),
            f"{variant.name}_broker_cpu_us_per_msg": theirs.get("broker_cpu_us_per_msg"),
            f"{variant.name}_replay_msgs_per_s": theirs["replay_msgs_per_s"],
            f"{variant.name}_vs_plain_replay_ratio": ratio("replay_msgs_per_s"),
            f"{variant.name}_connect_ms": theirs["connect_ms"],
            variant.name: {name: value for name, value in theirs.items() if name != "settings"},
        })  # fmt: skip
    figures["settings"] = {**settings, "variants": {v.name or "plain": v.described.strip(" ()")
                                                    or "plain" for v in served}}  # fmt: skip
    return figures


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over ``runs``; the settings of the first, and how many ran."""
    figures: dict[str, Any] = {
        name: statistics.median(run[name] for run in runs) for name in runs[0] if name != "settings"
    }
    figures["settings"] = {**runs[0]["settings"], "rounds": len(runs)}
    return figures


def _measure(
    url: str | None,
    directory: str | None,
    messages: int,
    batch: int,
    inflight: int,
    prefetch: int,
    timeout: float,
    progress: Callable[[str], None],
    variant: Variant = PLAIN,
) -> dict[str, Any]:
    """One run: the queue workload, then the replay, against ``url`` or a broker started
    for it as ``variant`` says."""
    over = variant.described
    progress(f"starting roost serve{over}" if url is None else f"using {url}")
    server = _Server(directory, variant.tls, variant.auth) if url is None else None
    broker_pid = server.process.pid if server is not None else None
    target = server.target if server is not None else Target(url or "")
    queue = f"bench-e2e-{os.getpid()}-{time.monotonic_ns()}"
    clients: list[Any] = []
    try:
        _run(_admin(target, queue, create=True))
        producer = _spawn("producer", target, queue, messages, batch, inflight)
        consumer = _spawn("consumer", target, queue, messages, batch, prefetch)
        clients = [producer, consumer]
        wait_ready(clients)
        progress(f"{messages:,} messages{over}")
        broker_cpu0 = cpu_seconds(broker_pid) if broker_pid is not None else 0.0
        results = go_and_collect(clients, timeout)
        broker_cpu = cpu_seconds(broker_pid) - broker_cpu0 if broker_pid is not None else None
        _run(_admin(target, queue, create=False))
        progress(f"replay of {messages:,} messages{over}")
        replay, replay_broker_cpu = _replay_phase(target, broker_pid, messages, batch, timeout)
        connect_ms = _run(_connect_cost(target))
        clients = []
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        if server is not None:
            server.close()
    sent, got = results

    def rate(start: int, end: int) -> float:
        return round(messages / max(end - start, 1) * 1e9, 1)

    figures: dict[str, Any] = {
        "msgs_per_s": rate(sent["t_start"], got["t_last"]),
        "producer_msgs_per_s": rate(sent["t_start"], sent["t_end"]),
        "consumer_msgs_per_s": rate(got["t_first"], got["t_last"]),
        "latency_p50_ms": round(got["p50_ms"], 3),
        "latency_p99_ms": round(got["p99_ms"], 3),
        "producer_cpu_us_per_msg": round(sent["cpu_s"] / messages * 1e6, 2),
        "consumer_cpu_us_per_msg": round(got["cpu_s"] / messages * 1e6, 2),
    }
    if broker_cpu is not None:
        figures["broker_cpu_us_per_msg"] = round(broker_cpu / messages * 1e6, 2)
    figures["connect_ms"] = round(connect_ms, 3)
    figures["replay_msgs_per_s"] = rate(replay["t_first"], replay["t_last"])
    figures["replay_reader_cpu_us_per_msg"] = round(replay["cpu_s"] / messages * 1e6, 2)
    if replay_broker_cpu is not None:
        figures["replay_broker_cpu_us_per_msg"] = round(replay_broker_cpu / messages * 1e6, 2)
    figures["settings"] = {
        "messages": messages, "value_bytes": VALUE_BYTES, "batch": batch, "inflight": inflight,
        "prefetch": prefetch, "durability": "always", "url": url or "roost serve (temp dir)",
        "received": got["received"], "replay_received": replay["unique"],
        "replay_batch": REPLAY_BATCH,
    }  # fmt: skip
    return figures


if __name__ == "__main__":
    _client_main(sys.argv[1:])
