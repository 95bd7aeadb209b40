"""Resume across server crashes and restarts, driven by e2e/sdk_python_test.go.

A publisher publishes numbered events with ack at a steady rate; a subscriber
(another connection) reads them. For each cycle in $CYCLES ("kill" or "stop")
the script prints {"event":"ready"}, the Go test SIGKILLs (or SIGTERMs) the
server, writes "down" on stdin, restarts it on the same port and writes "up".
Meanwhile, each cycle checks that:

- a command in flight at the drop fails at once with DISCONNECTED;
- a command made while the server is down waits and succeeds after it is back;
- the subscriber's handler is registered again after the reconnect.

At the end the subscriber must have received strictly increasing numbers
(no duplicate, in order) that include every acked one (no gap).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from _check import URL, check, emit, expect, main, unique

from arqonbus import ArqonBus, ArqonBusError, ReconnectPolicy

RATE = float(os.environ.get("RATE", "150"))
CYCLES = os.environ.get("CYCLES", "kill").split(",")
AFTER = int(os.environ.get("AFTER", "150"))  # acked events to see between cycles


async def stdin_line() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise EOFError("stdin closed")
    return line.strip()


async def resume() -> None:
    ch = unique("pyr") + ":stream"
    svc = unique("pyr") + ":svc"
    policy = ReconnectPolicy(min_delay=0.05, max_delay=0.5)
    sub_bus = ArqonBus(URL, client_id=unique("py_rsub_"), reconnect=policy, command_timeout=15)
    pub_bus = ArqonBus(URL, client_id=unique("py_rpub_"), reconnect=policy, command_timeout=15)
    states: list[str] = []
    notices: list[str] = []
    sub_bus.on("state", states.append)
    sub_bus.on("system", lambda env: notices.append(env["payload"].get("event")))
    await sub_bus.connect()
    await pub_bus.connect()

    async def slow(params, env):
        await asyncio.sleep(60)

    await sub_bus.handle(svc, "slow", slow)
    await sub_bus.handle(svc, "echo", lambda params, env: {"echo": params.get("n")})
    await pub_bus.join(ch)
    sub = await sub_bus.join(ch)
    # A channel with no event before the drops: its resume point is the join's position.
    quiet_ch = unique("pyq") + ":quiet"
    quiet = await sub_bus.join(quiet_ch)
    await pub_bus.join(quiet_ch)
    check(quiet.last_position is not None, f"quiet join without a position: {quiet.join_result}")

    received: list[int] = []
    disorder: list[str] = []

    async def consume() -> None:
        async for env in sub:
            n = env["payload"]["seq"]
            if received and n <= received[-1]:
                disorder.append(f"{n} after {received[-1]}")
            received.append(n)

    acked: list[int] = []
    lost: list[int] = []  # publishes that failed DISCONNECTED: may or may not be delivered
    other_errors: list[str] = []
    stop = asyncio.Event()

    async def publish() -> None:
        seq, t = 0, time.monotonic()
        while not stop.is_set():
            seq += 1
            try:
                await pub_bus.publish(ch, {"seq": seq, "message": f"event {seq}"}, ack=True)
                acked.append(seq)
            except ArqonBusError as e:
                if e.code == "DISCONNECTED":
                    lost.append(seq)  # never retried: a retry could duplicate it
                else:
                    other_errors.append(f"seq {seq}: {e}")
            t += 1 / RATE
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            if time.monotonic() - t > 1:
                t = time.monotonic()  # back from an outage: no burst to catch up

    consumer = asyncio.create_task(consume())
    publisher = asyncio.create_task(publish())

    async def wait_acked(n: int) -> None:
        while len(acked) < n:
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(wait_acked(AFTER), 20)
        for i, how in enumerate(CYCLES):
            in_flight = asyncio.create_task(pub_bus.command("slow", room=svc, timeout=30))
            await asyncio.sleep(0.2)
            check(not in_flight.done(), f"cycle {i}: slow command ended early: {in_flight}")
            emit({"event": "ready", "cycle": i, "how": how, "acked": len(acked), "received": len(received)})
            expect(await stdin_line(), "down", "stdin")
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(in_flight, 5)
                raise AssertionError(f"cycle {i}: in-flight command succeeded across a {how}")
            except ArqonBusError as e:
                expect(e.code, "DISCONNECTED", f"cycle {i}: in-flight command")
            failed_after = time.monotonic() - t0
            check(failed_after < 3, f"cycle {i}: in-flight command failed only after {failed_after:.1f} s")
            waiting = asyncio.create_task(pub_bus.command("ping", timeout=20))
            expect(await stdin_line(), "up", "stdin")
            pong = await waiting
            check(pong.get("pong"), f"cycle {i}: ping made while down: {pong}")
            # Published as soon as the publisher is back, maybe before the subscriber rejoined.
            await pub_bus.publish(quiet_ch, {"cycle": i}, ack=True)
            base = len(acked)
            await asyncio.wait_for(wait_acked(base + AFTER), 30)
            # The handler's bus may come back later than the publisher's (each waits its own jittered
            # delay): its handler is registered again once its state is open.
            while sub_bus.state != "open":
                await asyncio.sleep(0.02)
            r = await pub_bus.command("echo", {"n": i}, room=svc)
            expect(r, {"echo": i}, f"cycle {i}: handler after reconnect")
        stop.set()
        await publisher
        last = acked[-1]
        deadline = time.monotonic() + 15
        while (not received or received[-1] < last) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would come now
        emit({"event": "done", "acked": len(acked), "lost": len(lost), "received": len(received),
              "connections": sub_bus.connections, "states": states, "notices": notices})
        got_quiet = []
        while True:
            try:
                got_quiet.append((await quiet.next(0.2))["payload"]["cycle"])
            except asyncio.TimeoutError:
                break
        expect(got_quiet, list(range(len(CYCLES))), "quiet channel: each event once, none missed")
        check(not other_errors, f"publish errors: {other_errors[:5]}")
        check(not disorder, f"out of order or duplicate at the subscriber: {disorder[:10]}")
        missing = sorted(set(acked) - set(received))
        check(not missing, f"{len(missing)} acked events never received: {missing[:20]}")
        extra = sorted(set(received) - set(acked) - set(lost))
        check(not extra, f"received events never published: {extra[:10]}")
        # At least one reconnect per cycle; a restarted cluster node may close a
        # resumed connection once more (the id still claimed by the killed node).
        check(sub_bus.connections >= len(CYCLES) + 1, f"subscriber connections {sub_bus.connections}")
        check(states.count("reconnecting") >= len(CYCLES), f"states {states}")
        expect(states[-1], "open", "final state")
        if "stop" in CYCLES:
            check("shutdown" in notices, f"no shutdown notice on stop: {notices}")
    finally:
        stop.set()
        publisher.cancel()
        consumer.cancel()
        await pub_bus.close()
        await sub_bus.close()


if __name__ == "__main__":
    if os.environ.get("ARQONBUS_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    main([resume], timeout=120)
