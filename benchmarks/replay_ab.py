"""Replay A/B in one run: a baseline checkout against this one, rounds interleaved.

    python benchmarks/replay_ab.py BASE_PYTHON NEW_PYTHON [ROUNDS] [N]

Each round, for each mode: a ``roost serve`` (of that interpreter's roost) on a fresh directory,
N 1 KiB records written durably in batches of 64 (4 publishers, not measured), then a fresh
reader process (uvloop) replays them from the earliest offset, 1,000 per fetch, reading each
record's sequence number. Modes: ``base-fetch`` (the baseline's ``member.fetch`` loop),
``new-fetch`` (this checkout's ``fetch``) and ``new-stream`` (``member.stream``). Prints each
run, the medians, and the per-round throughput ratios against the baseline; broker CPU from
/proc/PID/task/*/schedstat over the reader's run, reader CPU from the reader itself.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HDR = struct.Struct("<Qq")


def cpu(pid="self"):
    t = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            t += int(f.read().split()[0])
    return t / 1e9


async def write(url, n):
    import roost
    from roost import Outgoing

    async with roost.connect(url, reconnect=False) as c:
        await c.create_topic("log", durability="always")
        await c.create_subscription("log", "r", mode="stream", start="earliest")
        filler = bytearray(b"x" * 1024)
        it = iter(range(0, n, 64))

        async def pub():
            for first in it:
                out = []
                for seq in range(first, min(first + 64, n)):
                    HDR.pack_into(filler, 0, seq, time.monotonic_ns())
                    out.append(Outgoing(value=bytes(filler)))
                await c.publish_batch("log", out)

        await asyncio.gather(*(pub() for _ in range(4)))


async def read(url, n, mode):
    import roost

    c = await roost.connect(url, reconnect=False)
    member = await c.join("log", "r")
    seen = bytearray(n)
    print("ready", flush=True)
    sys.stdin.readline()
    c0 = cpu()
    t_first = 0
    count = 0

    def handle(batch):
        nonlocal count
        for r in batch:
            seen[HDR.unpack_from(r.value)[0]] = 1
        count += len(batch)

    if mode == "new-stream":
        async with member.stream(max_records=1000, wait=1.0) as batches:
            async for batch in batches:
                t_first = t_first or time.monotonic_ns()
                handle(batch)
                if count >= n:
                    break
            t_last, c1 = time.monotonic_ns(), cpu()
    else:
        while count < n:
            batch = await member.fetch(max_records=1000, wait=1.0)
            t_first = t_first or time.monotonic_ns()
            handle(batch)
        t_last, c1 = time.monotonic_ns(), cpu()
    print(
        json.dumps({"t_first": t_first, "t_last": t_last, "cpu": c1 - c0, "unique": sum(seen)}),
        flush=True,
    )
    await c.aclose()


def one(mode, py, n):
    root = tempfile.mkdtemp(prefix="replay-ab-")
    srv = subprocess.Popen(
        [py, "-m", "roost.cli.main", "serve", "--data", root + "/d", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        m = re.search(rb"roost listening on ([\d.]+):(\d+)", srv.stderr.readline())
        if m:
            break
    url = f"roost://{m.group(1).decode()}:{m.group(2).decode()}"
    subprocess.run([py, __file__, "write", url, str(n), mode], check=True)
    rd = subprocess.Popen(
        [py, __file__, "read", url, str(n), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert rd.stdout.readline().strip() == "ready"
    b0 = cpu(srv.pid)
    rd.stdin.write("go\n")
    rd.stdin.flush()
    out = json.loads(rd.stdout.readline())
    b1 = cpu(srv.pid)
    rd.wait()
    srv.send_signal(signal.SIGTERM)
    srv.communicate(timeout=30)
    shutil.rmtree(root, ignore_errors=True)
    assert out["unique"] == n, out
    return {
        "msgs_per_s": n / ((out["t_last"] - out["t_first"]) / 1e9),
        "broker_us": (b1 - b0) / n * 1e6,
        "reader_us": out["cpu"] / n * 1e6,
    }


if __name__ == "__main__":
    if sys.argv[1] == "write":
        asyncio.run(write(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1] == "read":
        import uvloop

        uvloop.run(read(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        base, new = sys.argv[1], sys.argv[2]
        rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
        n = int(sys.argv[4]) if len(sys.argv) > 4 else 30000
        MODES = {"base-fetch": base, "new-fetch": new, "new-stream": new}
        results = {m: [] for m in MODES}
        for r in range(rounds):
            for mode, py in MODES.items():
                res = one(mode, py, n)
                results[mode].append(res)
                print(r, mode, {k: round(v, 2) for k, v in res.items()}, flush=True)
        print(
            json.dumps(
                {
                    m: {k: round(statistics.median(x[k] for x in v), 2) for k in v[0]}
                    for m, v in results.items()
                }
            )
        )
        baseline = results["base-fetch"]
        for mode in ("new-fetch", "new-stream"):
            ratios = [
                results[mode][i]["msgs_per_s"] / baseline[i]["msgs_per_s"] for i in range(rounds)
            ]
            print(
                mode,
                "per-round throughput ratio vs base:",
                [round(x, 2) for x in ratios],
                "median",
                round(statistics.median(ratios), 2),
            )
