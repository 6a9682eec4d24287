"""``roost bench faults``: what floods of bad clients cost a broker, and its good clients.

Each case runs against a fresh ``roost serve`` (``BrokerProcess``: 127.0.0.1, a temp data
directory, ``serve_args`` passed through, e.g. ``--max-memory``) and goes:

1. the broker idles a moment: its RSS and open fds, ``idle_rss_mb`` and ``idle_fds``;
2. a flood process (``faults_clients``) puts its flood in place: ``idle`` (2,000 connections
   that only answer PINGs), ``stalled`` (a consumer with prefetch 10,000 that never reads,
   while 500,000 1 KiB messages are published to its queue: in place once they all are),
   ``unread`` (a producer that pipelines 500,000 publishes of one message and never reads a
   reply),
   ``slowloris`` (500 connections stalled inside a frame: half in the header of their
   first, half in the body of one that declares 16 MiB) or ``fuzz`` (connections sending
   random bytes, reconnecting);
3. the probe, a well-behaved client in its own process, publishes for ``probe_seconds``:
   ``probe_msgs_per_s``, and ``throughput_ratio`` against the probe alone on an idle broker
   (measured in the same run, before the cases and after them: the mean of the two). Over the
   probe's publishing (``probe_window_s``) the CPU time each process used is measured apart:
   ``broker_cpu_s``, ``flood_cpu_s``, ``probe_cpu_s``, and of the whole machine,
   ``machine_busy_s`` and what is left of it, ``others_cpu_s`` (this bench's own threads, other
   work on the machine): on 2 cores, CPU the flood takes is CPU the probe and broker lack.
   On a machine shared with other work, the probe's rate follows that work more than any
   flood: each case is also paired with a run of the probe alone on a fresh broker just
   before it (``alone_just_before``), and ``throughput_ratio_paired`` is against that;
4. the flood finishes its work (or ``case_timeout_s`` passes), then stops;
   ``rss_after_mb`` is what the broker still holds a moment later.

Throughout, a thread samples the broker's RSS and fds every ``SAMPLE_S``: ``rss_peak_mb``,
``fds_peak``, and ``rss_vs_idle`` (peak / idle). A broker past ``rss_limit_mb`` has its flood
stopped at once (``aborted``): the bench must not take the machine down with an unbounded
broker. The fd limit of this process (and so of the broker and the floods, which inherit it)
is raised to its hard limit first: 2,000 connections need it.

``soak_seconds``: a fresh broker, its capacity measured by the probe alone (publishing and
consuming, unpaced), then the probe paced at half of it, doing the same, for
``soak_seconds``; p99 end-to-end latency per window, RSS and fds sampled;
``*_last_vs_first`` compares the last quarter of the soak with the first (flat is 1.0).
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from roost.bench.broker_process import CLOCK_TICKS, BrokerProcess, cpu_seconds

SAMPLE_S = 0.1
MB = 1 << 20
IDLE_SETTLE_S = 0.5
#: After a flood, how long the broker may take to close its sockets before ``fds_after``.
AFTER_WAIT_S = 10.0
PROBE_BATCH = 50
PROBE_INFLIGHT = 4
CASES = ("idle", "stalled", "unread", "slowloris", "fuzz")


@dataclass(frozen=True)
class FloodSizes:
    idle_connections: int = 2000
    stalled_messages: int = 500_000
    stalled_prefetch: int = 10_000
    unread_messages: int = 500_000
    #: The issue's "500k publishes": one message per publish, so that each answer the producer
    #: leaves unread is one message's. At 100 per publish its answers (~30 bytes per 100 KiB)
    #: fit in the kernel's buffers until the end: a full-speed producer, not a stuck one.
    unread_batch: int = 1
    slowloris_connections: int = 500
    slowloris_declared_bytes: int = 16 * MB
    slowloris_body_bytes: int = 4096
    fuzz_connections: int = 8
    fuzz_bytes_per_s: int = 1_000_000
    batch: int = 100


def _flood_spec(case: str, sizes: FloodSizes) -> dict[str, Any]:
    specs: dict[str, dict[str, Any]] = {
        "idle": {"connections": sizes.idle_connections},
        "stalled": {"topic": "flood.stalled", "messages": sizes.stalled_messages,
                    "prefetch": sizes.stalled_prefetch, "batch": sizes.batch},
        "unread": {"topic": "flood.unread", "messages": sizes.unread_messages,
                   "batch": sizes.unread_batch, "write_timeout_s": 10.0},
        "slowloris": {"connections": sizes.slowloris_connections,
                      "declared_bytes": sizes.slowloris_declared_bytes,
                      "body_bytes": sizes.slowloris_body_bytes},
        "fuzz": {"connections": sizes.fuzz_connections, "bytes_per_s": sizes.fuzz_bytes_per_s},
    }  # fmt: skip
    return specs[case]


def raise_fd_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one; the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class _Child:
    """A client process whose stdout lines (JSON) are read by a thread as they come."""

    def __init__(self, role: str, url: str, spec: dict[str, Any]) -> None:
        module = ["roost.bench.faults_probe"] if role == "probe" else [
            "roost.bench.faults_clients", role
        ]  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", *module, url, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[Any] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, what: str, timeout_s: float) -> Any:
        """The next line, which must be ``what`` (or, for "result", carry one)."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no {what!r} from a bench client in {timeout_s} s") from None
        if what == "result" and isinstance(line, dict) and "result" in line:
            return line["result"]
        if line != what and not (isinstance(line, dict) and what in line):
            raise RuntimeError(f"a bench client said {line!r}, expected {what!r}")
        return line

    def stop(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(10)  # it ends at the EOF of the dead process's stdout
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class _Sampler:
    """The broker's RSS and fds every ``SAMPLE_S``, from a thread; ``on_limit`` once when RSS
    passes ``rss_limit``."""

    def __init__(self, broker: BrokerProcess, rss_limit: int, on_limit: Callable[[], None]):
        self.broker = broker
        self.rss_limit = rss_limit
        self.on_limit = on_limit
        self.samples: list[tuple[float, int, int]] = []
        self.over_limit = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                rss, fds = self.broker.rss_bytes(), self.broker.fds()
            except OSError:
                return  # the broker is gone
            self.samples.append((time.monotonic(), rss, fds))
            if rss > self.rss_limit and not self.over_limit:
                self.over_limit = True
                self.on_limit()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self) -> tuple[int, int]:
        if not self.samples:
            return 0, 0
        return max(s[1] for s in self.samples), max(s[2] for s in self.samples)


class _Run:
    """Brokers started under one root directory, every one removed at the end."""

    def __init__(self, directory: str | None, serve_args: Sequence[str]) -> None:
        self.root = tempfile.mkdtemp(prefix="roost-faults-", dir=directory)
        self.serve_args = serve_args
        self.started = 0

    def start_broker(self) -> BrokerProcess:
        self.started += 1
        base = os.path.join(self.root, str(self.started))
        os.makedirs(base)
        broker = BrokerProcess(os.path.join(base, "data"), os.path.join(base, "serve.log"),
                               self.serve_args)  # fmt: skip
        broker.start()
        return broker

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _idle_footprint(broker: BrokerProcess) -> tuple[int, int]:
    time.sleep(IDLE_SETTLE_S)
    return broker.rss_bytes(), broker.fds()


def _probe(
    url: str,
    topic: str,
    seconds: float,
    rate: float = 0.0,
    window_s: float = 1.0,
    consume: bool = False,
) -> Any:
    spec = {"topic": topic, "seconds": seconds, "batch": PROBE_BATCH,
            "inflight": PROBE_INFLIGHT, "rate": rate, "window_s": window_s,
            "consume": consume}  # fmt: skip
    child = _Child("probe", url, spec)
    try:
        return child.expect("result", seconds * 1.5 + 120)
    finally:
        child.close()


def machine_busy_s() -> float:
    """CPU time every core of the machine has spent busy so far (not idle, not waiting for
    I/O), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(field) for field in f.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / CLOCK_TICKS


def _timed_probe(url: str, topic: str, seconds: float, watched: dict[str, int]) -> Any:
    """The probe's result, and the CPU time each of ``watched`` (name -> pid) used while it
    published: ``{name}_cpu_s``, its own ``probe_cpu_s``, the machine's ``machine_busy_s``
    and what is left of it, ``others_cpu_s`` (this bench, other work on the machine)."""
    spec = {"topic": topic, "seconds": seconds, "batch": PROBE_BATCH,
            "inflight": PROBE_INFLIGHT, "announce": True}  # fmt: skip
    child = _Child("probe", url, spec)
    try:
        child.expect("publishing", 120)
        busy = machine_busy_s()
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        probe = child.expect("result", seconds * 1.5 + 120)
        used = {f"{name}_cpu_s": cpu_seconds(pid) - before[name] for name, pid in watched.items()}
        busy = machine_busy_s() - busy
    finally:
        child.close()
    ours = sum(used.values()) + probe["cpu_s"]
    return {
        "msgs_per_s": probe["msgs_per_s"], "probe_window_s": probe["took_s"],
        **{name: round(cpu, 2) for name, cpu in used.items()},
        "probe_cpu_s": round(probe["cpu_s"], 2), "machine_busy_s": round(busy, 2),
        "others_cpu_s": round(max(0.0, busy - ours), 2),
    }  # fmt: skip


def _alone(run: _Run, probe_seconds: float) -> dict[str, Any]:
    broker = run.start_broker()
    try:
        rss, fds = _idle_footprint(broker)
        probe = _timed_probe(broker.url, "probe.alone", probe_seconds, {"broker": broker.pid})
    finally:
        broker.stop()
    return {"idle_rss_mb": round(rss / MB, 1), "idle_fds": fds, **probe}


def _case(
    run: _Run, case: str, sizes: FloodSizes, probe_seconds: float, timeout_s: float,
    rss_limit: int,
) -> dict[str, Any]:  # fmt: skip
    broker = run.start_broker()
    flood: _Child | None = None
    sampler: _Sampler | None = None
    try:
        idle_rss, idle_fds = _idle_footprint(broker)
        flood = _Child(case, broker.url, _flood_spec(case, sizes))
        sampler = _Sampler(broker, rss_limit, flood.stop)
        flood.expect("ready", timeout_s)
        watched = {"broker": broker.pid, "flood": flood.process.pid}
        probe = _timed_probe(broker.url, "probe.during", probe_seconds, watched)
        if case in ("stalled", "unread"):
            flood.expect("done", timeout_s)
        flood.stop()
        result = flood.expect("result", timeout_s)
        sampler.close()
        # The broker closes the flood's sockets as it gets to them: give it a moment.
        deadline = time.monotonic() + AFTER_WAIT_S
        time.sleep(IDLE_SETTLE_S)
        while broker.fds() > idle_fds + 8 and time.monotonic() < deadline:
            time.sleep(SAMPLE_S)
        rss_after, fds_after = broker.rss_bytes(), broker.fds()
        peak_rss, peak_fds = sampler.peak()
    finally:
        if sampler is not None:
            sampler.close()
        if flood is not None:
            flood.close()
        broker.stop()
    return {
        "idle_rss_mb": round(idle_rss / MB, 1), "idle_fds": idle_fds,
        "rss_peak_mb": round(peak_rss / MB, 1), "rss_vs_idle": round(peak_rss / idle_rss, 2),
        "fds_peak": peak_fds, "rss_after_mb": round(rss_after / MB, 1), "fds_after": fds_after,
        "probe_msgs_per_s": probe.pop("msgs_per_s"), **probe, "aborted": sampler.over_limit,
        "flood": result,
    }  # fmt: skip


def _soak(run: _Run, seconds: float, probe_seconds: float, rss_limit: int) -> dict[str, Any]:
    broker = run.start_broker()
    try:
        capacity = _probe(broker.url, "soak.capacity", probe_seconds, consume=True)["msgs_per_s"]
        rate = capacity / 2
        window_s = max(1.0, seconds / 40)
        sampler = _Sampler(broker, rss_limit, lambda: None)
        started = time.monotonic()
        probe = _probe(broker.url, "soak", seconds, rate, window_s)
        took = time.monotonic() - started
        sampler.close()
    finally:
        broker.stop()
    # The soak lasts longer than asked when the machine cannot keep the rate (the producer
    # then catches up and the consumer drains what is left): quarters of what it took.
    quarter = took / 4
    early = [s for s in sampler.samples if s[0] - started < quarter]
    late = [s for s in sampler.samples if s[0] - started >= took - quarter]
    p99 = [p for p in probe["p99_ms"] if p is not None]
    per_quarter = max(1, len(p99) // 4)

    def ratio(first: list[float], last: list[float]) -> float | None:
        if not first or not last or statistics.mean(first) == 0:
            return None
        return round(statistics.mean(last) / statistics.mean(first), 3)

    return {
        "seconds": seconds, "took_s": round(took, 1), "capacity_msgs_per_s": capacity,
        "rate_msgs_per_s": round(rate, 1),
        "window_s": window_s, "p99_ms": probe["p99_ms"],
        "p99_last_vs_first": ratio(p99[:per_quarter], p99[-per_quarter:]),
        "rss_first_mb": round(statistics.mean(s[1] for s in early) / MB, 1) if early else None,
        "rss_last_mb": round(statistics.mean(s[1] for s in late) / MB, 1) if late else None,
        "rss_last_vs_first": ratio([s[1] for s in early], [s[1] for s in late]),
        "fds_last_vs_first": ratio([s[2] for s in early], [s[2] for s in late]),
        "rss_exceeded_limit": sampler.over_limit,
        "published": probe["published"], "received": probe["received"],
        "undelivered": probe["undelivered"],
        "producer_behind_max_s": probe["producer_behind_max_s"],
    }  # fmt: skip


def _cpu_split(found: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in found.items()
            if key.endswith("_cpu_s") or key in ("probe_window_s", "machine_busy_s")}  # fmt: skip


def run_faults_bench(
    sizes: FloodSizes = FloodSizes(),
    cases: Sequence[str] = CASES,
    probe_seconds: float = 3.0,
    soak_seconds: float = 0.0,
    case_timeout_s: float = 300.0,
    rss_limit_mb: int = 4096,
    directory: str | None = None,
    serve_args: Sequence[str] = (),
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The figures of the module doc; ``cases`` a subset of ``CASES``, in that order."""
    fd_limit = raise_fd_limit()
    run = _Run(directory, serve_args)
    rss_limit = rss_limit_mb * MB
    try:
        progress("the probe alone")
        before = _alone(run, probe_seconds)
        found: dict[str, Any] = {}
        for case in cases:
            progress(f"the probe alone, before {case}")
            just_before = _alone(run, probe_seconds)
            progress(f"flood: {case}")
            found[case] = _case(run, case, sizes, probe_seconds, case_timeout_s, rss_limit)
            found[case]["alone_just_before"] = {"msgs_per_s": just_before["msgs_per_s"],
                                                **_cpu_split(just_before)}  # fmt: skip
        progress("the probe alone, again")
        after = _alone(run, probe_seconds)
        alone = (before["msgs_per_s"] + after["msgs_per_s"]) / 2
        figures: dict[str, Any] = {
            "idle_rss_mb": before["idle_rss_mb"], "idle_fds": before["idle_fds"],
            "alone_msgs_per_s": round(alone, 1),
            "alone_before_after": [before["msgs_per_s"], after["msgs_per_s"]],
            "alone_cpu_before_after": [_cpu_split(before), _cpu_split(after)],
        }  # fmt: skip
        for case, result in found.items():
            result["throughput_ratio"] = round(result["probe_msgs_per_s"] / alone, 3)
            figures[f"{case}_rss_peak_mb"] = result["rss_peak_mb"]
            figures[f"{case}_rss_vs_idle"] = result["rss_vs_idle"]
            figures[f"{case}_fds_peak"] = result["fds_peak"]
            figures[f"{case}_throughput_ratio"] = result["throughput_ratio"]
            paired = result["probe_msgs_per_s"] / result["alone_just_before"]["msgs_per_s"]
            result["throughput_ratio_paired"] = figures[f"{case}_throughput_ratio_paired"] = round(
                paired, 3
            )
        figures["cases"] = found
        if soak_seconds > 0:
            progress(f"soak: {soak_seconds} s at half capacity")
            figures["soak"] = _soak(run, soak_seconds, probe_seconds, rss_limit)
        figures["settings"] = {
            **asdict(sizes), "cases": list(cases), "probe_seconds": probe_seconds,
            "probe_batch": PROBE_BATCH, "probe_inflight": PROBE_INFLIGHT,
            "value_bytes": 1024, "rss_limit_mb": rss_limit_mb, "fd_limit": fd_limit,
            "serve_args": list(serve_args),
        }  # fmt: skip
        return figures
    finally:
        run.close()
