#!/usr/bin/python3
"""How many events per second one Python SDK subscriber receives, and with what latency.

Not a test: a measurement to run by hand against a server started without the
per-client rate limit, e.g.

    ARQONBUS_RATE_LIMIT=0 make run
    /usr/bin/python3 sdk/python/bench/receive.py --rate 0      # flood: throughput
    /usr/bin/python3 sdk/python/bench/receive.py --rate 5000   # latency at a steady rate

The publishers are separate processes (raw websockets, not the SDK, so that
they are not what limits the run) that stamp each event with the wall clock;
the subscriber is one ArqonBus client iterating its subscription. Latency is
publish-to-application (send, server routing, receive, JSON decode, SDK
dispatch and queue), on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import websockets  # noqa: E402

from arqonbus import ArqonBus  # noqa: E402

CHANNEL = ("bench", "py")


async def publisher(url: str, n: int, rate: float, pub_id: str) -> None:
    async with websockets.connect(f"{url}?client_id={pub_id}", compression=None, max_size=None) as ws:
        await ws.recv()  # welcome
        join = {"version": "1.0", "id": f"arq_{pub_id}_join", "type": "command", "room": CHANNEL[0],
                "channel": CHANNEL[1], "from": pub_id, "timestamp": "2025-01-01T00:00:00.000Z",
                "payload": {"command": "join_channel", "parameters": {}}}
        await ws.send(json.dumps(join))
        while json.loads(await ws.recv()).get("type") != "command_response":
            pass
        head = ('{"version":"1.0","type":"event","room":"%s","channel":"%s","from":"%s",'
                '"timestamp":"2025-01-01T00:00:00.000Z",' % (CHANNEL[0], CHANNEL[1], pub_id))
        start = time.monotonic()
        for i in range(n):
            await ws.send(head + '"id":"arq_%s_%d","payload":{"n":%d,"t":%.6f}}' % (pub_id, i, i, time.time()))
            if rate > 0:
                delay = start + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 256 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(1)


async def subscriber(url: str, pubs: int, n: int, rate: float) -> None:
    async with ArqonBus(url, client_id="py_bench_sub") as bus:
        bus.on("state", lambda s: print("subscriber:", s, flush=True))
        bus.on("gap", lambda g: print("subscriber: gap", g, flush=True))
        sub = await bus.join(f"{CHANNEL[0]}:{CHANNEL[1]}", max_queue=100_000)
        procs = [subprocess.Popen([sys.executable, __file__, "--url", url, "--publish", str(i), "-n", str(n),
                                   "--rate", str(rate / pubs if rate else 0)]) for i in range(pubs)]
        total = n * pubs
        lat: list[float] = []
        first = last = 0.0
        try:
            for _ in range(total):
                env = await sub.next(10)
                now = time.time()
                if not lat:
                    first = time.monotonic()
                lat.append((now - env["payload"]["t"]) * 1000)
                last = time.monotonic()
        except asyncio.TimeoutError:
            print(f"stopped after {len(lat)} of {total} events (10 s without one)")
        for p in procs:
            p.wait()
        got = len(lat)
        lat.sort()

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

        secs = max(last - first, 1e-9)
        print(json.dumps({
            "publishers": pubs, "offered_rate": rate or "flood", "received": got,
            "events_per_s": round(got / secs), "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2),
            "max_ms": round(lat[-1], 2) if lat else None,
        }))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("ARQONBUS_URL", "ws://127.0.0.1:9100/"))
    ap.add_argument("-n", type=int, default=50_000, help="events per publisher")
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=0, help="total events/s offered (0: as fast as they can)")
    ap.add_argument("--publish", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.publish is not None:
        asyncio.run(publisher(a.url, a.n, a.rate, f"py_bench_pub{a.publish}"))
    else:
        asyncio.run(subscriber(a.url, a.publishers, a.n, a.rate))


if __name__ == "__main__":
    main()
