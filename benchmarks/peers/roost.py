"""Roost as one more target of the peer-broker harness (``/work/shared/bench``).

Loaded by the harness through ``BENCH_ADAPTER_PATH=<this folder>`` as target ``-t roost``.
It talks to a ``roost serve`` over the native protocol (``roost.connect``, no reconnect), which
this file also starts and stops, run as a script from the folder that holds ``bench/``:

    $BENCH_PY /work/main/benchmarks/peers/roost.py start   # prints export BENCH_PID_ROOST=...
    $BENCH_PY /work/main/benchmarks/peers/roost.py stop

The server's data lives in ``$BENCH_RUNDIR/roost`` (as the peers'), its port is
``BENCH_ROOST_PORT`` (default 37420), and its pid is recorded in ``$BENCH_RUNDIR/roost.pid`` in
the format of ``bench.servers`` (pid + kernel start time), so the harness finds the broker for
CPU accounting through ``BENCH_PID_ROOST`` or, failing that, the pid file.

TLS: with ``BENCH_ROOST_TLS=1`` in the environment of both ``start`` and the harness, the
broker serves TLS only, with a self-signed certificate for 127.0.0.1 that ``start`` makes
with the ``openssl`` command in ``$BENCH_RUNDIR/roost-tls/`` (ECDSA P-256, as the TLS peers
are usually measured), and the adapter connects to ``roosts://`` trusting that certificate.

Users: with ``BENCH_ROOST_AUTH=1`` likewise, ``start`` puts a user ``bench`` in the data
directory before serving (grants on every topic and group by pattern, not ``admin``, so each
command takes the door's per-resource checks), and the adapter logs in as it with SCRAM-SHA-256
(its password is ``BENCH_ROOST_PASSWORD``, default ``bench-password``).

Mapping (durability ``always`` everywhere: a publish is confirmed after its batch is fsync'd):
  queue  = ``create_queue(dest)``: a topic plus one `queue` subscription of the same name;
           consumed messages are deleted. No dead-lettering (``max_deliveries=None``).
  fanout = ``create_topic(dest)`` + N `queue` subscriptions ``s0..s{N-1}`` on it: every
           subscription of a topic sees every message, each one is a work queue of its own
           (the natural Roost mapping; no exchange needed for a fixed fan-out).
  log    = ``create_topic(dest)``; replay = a fresh `stream` subscription with
           ``start="earliest"``, ``join`` and ``member.stream(max_records=batch)`` until the
           end: each fetch is answered with the stored batches (protocol version 2) and the
           next one is in flight while a batch is handled (no commits, like the peers' replay
           readers).
Publish: one ``publish_batch`` request per harness batch (it returns once durable).
Consume: ``subscribe(prefetch=prefetch)``: the server pushes deliveries while fewer than
``prefetch`` are unacked; each pushed batch is handled, then acked with one ``Ack`` that
expects no answer (protocol version 3, as AMQP's ``basic.ack`` and NATS's ``msg.ack()``),
whose credit goes back as it is sent; the last ack is answered.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as a script: `import roost` must find the package, not this
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.path.insert(0, os.getcwd())  # the folder that holds bench/

import contextlib
import json
import signal
import subprocess
import time
from typing import Any

from bench.common import HOST, Handler, proc_starttime, rundir
from bench.common import Adapter as Base

PORT = int(os.environ.get("BENCH_ROOST_PORT", "37420"))
TLS = os.environ.get("BENCH_ROOST_TLS", "") not in ("", "0")
AUTH = os.environ.get("BENCH_ROOST_AUTH", "") not in ("", "0")
USER = "bench"
PASSWORD = os.environ.get("BENCH_ROOST_PASSWORD", "bench-password")
URL = f"{'roosts' if TLS else 'roost'}://{HOST}:{PORT}"
#: Long-poll of one receive / fetch; the harness stops us when it has seen everything.
WAIT_S = 1.0


class Adapter(Base):
    name = "roost"
    server = "roost"

    def __init__(self, **opts: str) -> None:
        super().__init__(**opts)
        self.client: Any = None
        # ``-t roost:durability=interval`` compares with peers that fsync once a second
        # (Redis's appendfsync everysec); the default, ``always``, confirms after fsync.
        self.durability = opts.get("durability", "always")
        # ``-t roost:auth=1,port=37421,server=roost_auth`` measures a second broker (started
        # with BENCH_ROOST_AUTH=1 BENCH_ROOST_PORT=37421 and its own BENCH_RUNDIR, its pid in
        # BENCH_PID_ROOST_AUTH) beside the plain one, in the same invocation.
        self.auth = opts.get("auth", "1" if AUTH else "0") not in ("", "0")
        self.port = int(opts.get("port", PORT))
        self.server = opts.get("server", "roost")
        if self.durability not in ("always", "interval"):
            raise SystemExit(f"roost: durability is always or interval, not {self.durability!r}")

    def describe(self) -> dict[str, Any]:
        import msgspec

        import roost

        d = super().describe()
        d.update(
            client=f"roost {roost.__version__} native protocol (roost.connect), "
            f"msgspec {msgspec.__version__}",
            settings=(
                f"roost serve{' over TLS' if TLS else ''}"
                f"{', SCRAM-authenticated user' if self.auth else ''}"
                f", durability {self.durability} "
                + (
                    "(confirm after fsync, group commit); "
                    if self.durability == "always"
                    else "(fsync every 1 s, as appendfsync everysec); "
                )
                + "queue = create_queue, fanout = topic + N queue subscriptions, "
                "log = topic + stream subscription from earliest, read with member.stream "
                "(stored batches, one fetch in flight); publish_batch per batch; "
                "subscribe(prefetch) push + one unanswered ack per pushed batch"
            ),
        )
        return d

    async def connect(self) -> None:
        import roost

        ca_file = _tls_files()[0] if TLS else None
        credentials = {"username": USER, "password": PASSWORD} if self.auth else {}
        url = f"{'roosts' if TLS else 'roost'}://{HOST}:{self.port}"
        self.client = await roost.connect(url, reconnect=False, ca_file=ca_file, **credentials)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def declare(
        self, dest: str, kind: str, subscribers: int = 1, prefetch: int = 256
    ) -> None:
        c = self.client
        if kind == "queue":
            await c.create_queue(
                dest, durability=self.durability, max_deliveries=None, dead_letter=None
            )
            return
        await c.create_topic(dest, durability=self.durability)
        if kind == "fanout":
            for i in range(subscribers):
                await c.create_subscription(
                    dest, f"s{i}", mode="queue", start="earliest",
                    max_deliveries=None, dead_letter=None,
                )  # fmt: skip

    async def delete(self, dest: str, kind: str, subscribers: int = 1) -> None:
        from roost import RoostError

        try:
            if kind == "queue":
                await self.client.delete_queue(dest)
            else:
                await self.client.delete_topic(dest)
        except RoostError:
            pass  # not found

    async def publish_batch(self, dest: str, kind: str, payloads: list[bytes]) -> None:
        from roost import Outgoing

        await self.client.publish_batch(dest, [Outgoing(value=p) for p in payloads])

    async def consume(
        self, dest: str, kind: str, sub_index: int, handler: Handler, prefetch: int
    ) -> None:
        c = self.client
        sub = f"s{sub_index}" if kind == "fanout" else dest
        async with c.subscribe(dest, sub, prefetch=prefetch) as deliveries:
            while True:
                got = await deliveries.batch()
                done, stop = got, False
                for i, delivery in enumerate(got):
                    if not handler(delivery.value):
                        done, stop = got[: i + 1], True
                        break
                if stop:
                    # The last ack is answered: everything is settled when consume returns.
                    await deliveries.ack(done)
                    return
                # Sent, not answered (as the peers' acks: AMQP basic.ack, NATS msg.ack()):
                # the next pushed batch is handled at once, and the credit is back already.
                await deliveries.ack(done, wait=False)

    async def replay(self, dest: str, handler: Handler, batch: int) -> None:
        c = self.client
        group = f"replay-{os.getpid()}-{time.monotonic_ns()}"
        await c.create_subscription(dest, group, mode="stream", start="earliest")
        member = await c.join(dest, group)
        async with member.stream(max_records=batch, wait=WAIT_S) as batches:
            async for records in batches:
                for record in records:
                    if not handler(record.value):
                        return


# ------------------------------------------------------------------ server start / stop
def _pidfile() -> str:
    return os.path.join(rundir(), "roost.pid")


def read_pid() -> int | None:
    try:
        with open(_pidfile()) as f:
            rec = json.load(f)
        if proc_starttime(rec["pid"]) == rec["start"]:
            return int(rec["pid"])
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return None


def start() -> int:
    """``roost serve`` on PORT with data under $BENCH_RUNDIR/roost; returns its pid."""
    pid = read_pid()
    if pid is not None:
        return pid
    data = os.path.join(rundir(), "roost")
    os.makedirs(data, exist_ok=True)
    log_path = os.path.join(rundir(), "roost.out")
    # The admin API on a port of its own choosing: two brokers (plain and with users) run side
    # by side for one harness invocation.
    argv = [sys.executable, "-m", "roost.cli.main", "serve", "--data", data, "--port", str(PORT),
            "--admin-port", "0"]  # fmt: skip
    if TLS:
        cert_file, key_file = _tls_files()
        _make_certificate(cert_file, key_file)
        argv += ["--tls-cert-file", cert_file, "--tls-key-file", key_file]
    if AUTH:
        _add_user(data)
    with open(log_path, "ab") as log:
        start_at = log.tell()
        p = subprocess.Popen(
            argv, cwd=rundir(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    with open(_pidfile(), "w") as f:
        json.dump({"pid": p.pid, "start": proc_starttime(p.pid), "argv": argv}, f)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            f.seek(start_at)
            if b"roost listening on" in f.read():
                return p.pid
        if p.poll() is not None:
            raise SystemExit(f"roost serve exited with {p.returncode}; see {log_path}")
        time.sleep(0.1)
    raise SystemExit(f"roost serve did not say it was listening in 30 s; see {log_path}")


def _add_user(data: str) -> None:
    """The user ``bench`` in the data directory (once), with grants by pattern."""
    from roost.clock import SystemClock
    from roost.server.access import Grant
    from roost.server.identities import Identities
    from roost.storage.engine import open_metadata

    with open_metadata(data, create=True) as store:
        identities = Identities(store, SystemClock())
        if USER in [user.name for user in identities.list_users()]:
            return
        identities.add_user(USER, PASSWORD)
        for operation in ("publish", "consume", "manage"):
            identities.grant(USER, Grant(operation, "topic", "#"))
        for operation in ("consume", "manage"):
            identities.grant(USER, Grant(operation, "group", "#"))


def _tls_files() -> tuple[str, str]:
    """(certificate, key) of the TLS broker; the certificate is also what clients trust."""
    directory = os.path.join(rundir(), "roost-tls")
    return os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")


def _make_certificate(cert_file: str, key_file: str) -> None:
    """A self-signed certificate for HOST (an IP SAN, which clients check), if not made yet."""
    if os.path.exists(cert_file) and os.path.exists(key_file):
        return
    os.makedirs(os.path.dirname(cert_file), exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
         "-keyout", key_file, "-out", cert_file],
        check=True, capture_output=True,
    )  # fmt: skip


def stop() -> None:
    pid = read_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and read_pid() == pid:
            time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.unlink(_pidfile())


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "start":
        pid = start()
        print(f"export BENCH_PID_ROOST={pid}  # roost serve on {URL}")
    elif command == "stop":
        stop()
    elif command == "status":
        print(f"roost {read_pid()}")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
