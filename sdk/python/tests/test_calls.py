"""Every call of the Python SDK against a real server ($ARQONBUS_URL).

The server runs with ARQONBUS_HISTORY_SIZE=20 (the gap section relies on it).
Run by e2e/sdk_python_test.go (TestSDKPythonCalls).
"""

from __future__ import annotations

import asyncio

from _check import URL, check, expect, main, unique

from arqonbus import ArqonBus, ArqonBusError, Gap, Position, ReconnectPolicy

QUIET = 0.3  # how long "nothing arrives" is watched for


async def raises(aw, code: str, field: str | None = None) -> ArqonBusError:
    """Awaits aw and returns the ArqonBusError it must raise with code (and field)."""
    try:
        r = await aw
    except ArqonBusError as e:
        expect(e.code, code, f"error code ({e})")
        if field is not None:
            expect(e.field, field, f"error field ({e})")
        return e
    raise AssertionError(f"expected ArqonBusError {code}, got result {r!r}")


async def nothing_more(sub, what: str) -> None:
    try:
        env = await sub.next(QUIET)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"{what}: unexpected event {env.get('id')} {env.get('payload')}")


async def connect_and_identity() -> None:
    states: list[str] = []
    bus = ArqonBus(URL, client_id=unique("py_id_"), client_type="service", personality="steady")
    bus.on("state", states.append)
    await bus.connect()
    try:
        check(bus.client_id.startswith("py_id_"), f"client_id kept: {bus.client_id}")
        check(bus.node_id, "node_id from the welcome")
        expect(bus.welcome.get("client_type"), "service", "welcome client_type")
        expect(bus.state, "open", "state after connect")
        expect(states, ["connecting", "open"], "state callbacks")
    finally:
        await bus.close()
    expect(bus.state, "closed", "state after close")
    expect(states[-1], "closed", "last state callback")

    # No id given: the SDK makes one (arq_...) and the server keeps it.
    async with ArqonBus(URL) as anon:
        check(anon.client_id.startswith("arq_"), f"generated id {anon.client_id}")
        expect(anon.welcome.get("client_id"), anon.client_id, "welcome echoes the generated id")
        # The same id again, without the resume token: CONFLICT, not a takeover.
        dup = ArqonBus(URL, client_id=anon.client_id, reconnect=False)
        await raises(dup.connect(), "CONFLICT")


async def join_publish_receive() -> None:
    ch = unique("pyc") + ":chat"
    async with ArqonBus(URL, client_id=unique("py_a_")) as a, ArqonBus(URL, client_id=unique("py_b_")) as b:
        seen_by_bus: list[str] = []
        a.on("event", lambda env: seen_by_bus.append(env["id"]))
        sa = await a.join(ch)
        check(sa.join_result and sa.join_result.get("joined"), f"join result {sa.join_result}")
        check(Position.parse(sa.join_result.get("position")), f"join position {sa.join_result}")
        expect(sa.last_position, sa.join_result["position"], "resume point starts at the join")
        await b.join(ch)

        expect(await b.publish(ch, {"message": "plain"}), None, "publish without ack returns None")
        ack = await b.publish(ch, {"message": "acked"}, metadata={"topic": "t1"}, ack=True)
        check(ack.get("routed") is True, f"ack routed: {ack}")
        expect(ack.get("delivered"), 1, "ack delivered count")
        check(Position.parse(ack.get("position")), f"ack position: {ack}")

        e1 = await sa.next(5)
        e2 = await sa.next(5)
        expect(e1["payload"], {"message": "plain"}, "first event payload")
        expect(e1["from"], b.client_id, "from")
        check(e1["id"].startswith("arq_"), f"envelope id {e1['id']}")
        expect(e2["payload"], {"message": "acked"}, "second event payload")
        expect(e2["metadata"].get("topic"), "t1", "metadata kept")
        expect(e2["metadata"].get("position"), ack["position"], "event position = ack position")
        check(Position.parse(e1["metadata"]["position"]) < Position.parse(e2["metadata"]["position"]),
              "positions increase")
        expect(sa.last_position, ack["position"], "subscription's resume point")
        expect(seen_by_bus, [e1["id"], e2["id"]], "bus.on('event') sees them too")

        # The sender does not get its own event back.
        sb = b.subscription(ch)
        await nothing_more(sb, "sender's own event")

        # async for, ended by leave().
        got: list[str] = []

        async def consume() -> None:
            async for env in sa:
                got.append(env["payload"]["message"])
                if len(got) == 3:
                    await sa.leave()

        task = asyncio.create_task(consume())
        for m in ("x", "y", "z"):
            await b.publish(ch, {"message": m}, ack=True)
        await asyncio.wait_for(task, 5)  # the loop ends: leave() ended the iterator
        expect(got, ["x", "y", "z"], "async for")
        n = len(seen_by_bus)
        await b.publish(ch, {"message": "after leave"}, ack=True)
        await asyncio.sleep(QUIET)
        expect(len(seen_by_bus), n, "events after leave")
        check(a.subscription(ch) is None, "left channel forgotten")

        # Publishing where we are not a member: FORBIDDEN on an acked publish,
        # on("error") with the event id otherwise.
        await raises(a.publish(ch, {"message": "not a member"}, ack=True), "FORBIDDEN")
        errors: list[ArqonBusError] = []
        a.on("error", errors.append)
        await a.publish(ch, {"message": "not a member either"})
        await asyncio.sleep(QUIET)
        check(errors and errors[0].code == "FORBIDDEN", f"error callback: {errors}")


async def callbacks_and_filters() -> None:
    ch = unique("pyf") + ":coord"
    async with ArqonBus(URL, client_id=unique("py_pub_"), client_type="ai-agent") as pub, \
            ArqonBus(URL, client_id=unique("py_cre_"), client_type="ai-agent", personality="creative") as cre:
        await pub.join(ch)
        sub = await cre.join(ch, filter={"personality": "creative"})
        expect(sub.join_result.get("filter"), {"personality": "creative"}, "filter echoed")
        got: list[str] = []
        sub.on_event(lambda env: got.append(env["payload"]["message"]))
        for msg, pers in (("a1", "analytical"), ("c1", "creative"), ("a2", "analytical"), ("c2", "creative")):
            await pub.publish(ch, {"message": msg, "metadata": {"personality": pers}}, ack=True)
        await pub.publish(ch, {"message": "c3"}, metadata={"personality": "creative"}, ack=True)
        for _ in range(50):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(QUIET)
        expect(got, ["c1", "c2", "c3"], "filtered events (payload.metadata and metadata)")

        # Joining again changes the filter on the same subscription.
        again = await cre.join(ch, filter={"personality": "analytical"})
        check(again is sub, "rejoin returns the same subscription")
        await pub.publish(ch, {"message": "a3", "metadata": {"personality": "analytical"}}, ack=True)
        await asyncio.sleep(QUIET)
        expect(got[-1], "a3", "new filter")

        # An async callback runs as a task.
        seen = asyncio.Event()

        async def on_ev(env):
            await asyncio.sleep(0)
            seen.set()

        cre.on("event", on_ev)
        await pub.publish(ch, {"message": "a4", "metadata": {"personality": "analytical"}}, ack=True)
        await asyncio.wait_for(seen.wait(), 5)


async def join_since_and_gap() -> None:
    ch = unique("pyh") + ":log"
    async with ArqonBus(URL, client_id=unique("py_w_")) as w, ArqonBus(URL, client_id=unique("py_r_")) as r:
        await w.join(ch)
        acks = [await w.publish(ch, {"n": i}, ack=True) for i in range(5)]
        sub = await r.join(ch, since=acks[1]["position"])
        replay = sub.join_result.get("replay") or {}
        expect(replay.get("replayed"), 3, f"replayed count ({sub.join_result})")
        check(replay.get("complete") is True, "complete replay")
        got = [(await sub.next(5))["payload"]["n"] for _ in range(3)]
        expect(got, [2, 3, 4], "replay after since, in order")
        await w.publish(ch, {"n": 5}, ack=True)
        expect((await sub.next(5))["payload"]["n"], 5, "live after replay")
        await nothing_more(sub, "after live")

        # More than the server keeps (ARQONBUS_HISTORY_SIZE=20) was missed: "gap".
        gaps: list[Gap] = []
        late = ArqonBus(URL, client_id=unique("py_late_"))
        late.on("gap", gaps.append)
        await late.connect()
        try:
            for i in range(6, 40):
                await w.publish(ch, {"n": i}, ack=True)
            lsub = await late.join(ch, since=acks[0]["position"])
            check(gaps, f"a gap callback ({lsub.join_result})")
            g = gaps[0]
            expect(g.channel, ch, "gap channel")
            expect(g.since, acks[0]["position"], "gap since")
            first = (await lsub.next(5))["payload"]["n"]
            check(first > 1, f"first replayed after a gap is not the oldest: {first}")
            rest = [first] + [(await lsub.next(5))["payload"]["n"] for _ in range(39 - first)]
            expect(rest, list(range(first, 40)), "what was kept, in order")
        finally:
            await late.close()


async def private_messages() -> None:
    async with ArqonBus(URL, client_id=unique("py_p1_")) as p1, ArqonBus(URL, client_id=unique("py_p2_")) as p2:
        inbox: asyncio.Queue = asyncio.Queue()
        p2.on("private", inbox.put_nowait)
        ack = await p1.send_private(p2.client_id, {"message": "psst"}, metadata={"urgent": True})
        check(ack and ack.get("routed") and ack.get("delivered") == 1, f"private ack {ack}")
        env = await asyncio.wait_for(inbox.get(), 5)
        expect(env["type"], "private", "type")
        expect(env["from"], p1.client_id, "from")
        expect(env["payload"], {"message": "psst", "target": p2.client_id}, "payload")
        expect(env["metadata"].get("urgent"), True, "metadata")

        await raises(p1.send_private("py_nobody_here", {"message": "?"}), "TARGET_NOT_FOUND", None)

        # Without an ack, the error comes to on("error"), naming the message.
        errors: asyncio.Queue = asyncio.Queue()
        p1.on("error", errors.put_nowait)
        check(await p1.send_private("py_nobody_here", {"message": "?"}, ack=False) is None, "no ack: None")
        e = await asyncio.wait_for(errors.get(), 5)
        expect(e.code, "TARGET_NOT_FOUND", "absent target")
        check(e.request_id and e.request_id.startswith("arq_"), f"error names the private message: {e.request_id}")


async def commands() -> None:
    early = ArqonBus(URL, client_id=unique("py_early_"))
    pong = asyncio.create_task(early.command("ping", timeout=5))  # before connect(): waits for it
    await asyncio.sleep(0.1)
    await early.connect()
    check((await pong).get("pong"), "a call made before connect()")
    await early.close()
    async with ArqonBus(URL, client_id=unique("py_cmd_")) as bus:
        st = await bus.command("status")
        check(isinstance(st, dict) and st, f"status result {st}")
        pong = await bus.command("ping", room="science:general")
        check(pong.get("pong") is True, f"ping {pong}")
        e = await raises(bus.command("no_such_command"), "COMMAND_NOT_FOUND", "payload.command")
        check(e.request_id and e.request_id.startswith("arq_"), f"request_id {e.request_id}")
        expect(e.status, 404, "status")
        await raises(bus.history("science:general", limit=0), "VALIDATION_ERROR", "payload.parameters.limit")
        await raises(bus.command("create_channel", {}, room="pyx:y"), "FORBIDDEN")
        info = await bus.command("channel_info", room="science", channel="general")
        check(isinstance(info, dict), f"channel_info {info}")


async def handlers() -> None:
    ch = unique("pys") + ":services"
    async with ArqonBus(URL, client_id=unique("py_svc_"), client_type="service") as svc, \
            ArqonBus(URL, client_id=unique("py_api_"), client_type="service") as api:

        async def get_status(params, env):
            return {"check": params.get("check"), "from": env["from"], "active_connections": 15}

        def boom(params, env):
            raise ValueError("disk on fire")

        async def refuse(params, env):
            raise ArqonBusError("NOT_FOUND", "no such pool")

        async def slow(params, env):
            await asyncio.sleep(2)
            return {}

        sub = await svc.handle(ch, "get_status", get_status)
        check(sub.handles.keys() == {"get_status"}, "handles")
        await asyncio.gather(svc.handle(ch, "boom", boom), svc.handle(ch, "refuse", refuse), svc.handle(ch, "slow", slow))
        expect(sorted(sub.join_result.get("handles") or []), ["boom", "get_status", "refuse", "slow"],
               "the last join names every handler")

        r = await api.command("get_status", {"check": "connection_pool"}, room=ch)
        expect(r, {"check": "connection_pool", "from": api.client_id, "active_connections": 15}, "handler result")
        e = await raises(api.command("boom", room=ch), "HANDLER_ERROR")
        check("disk on fire" in e.message, f"message {e.message}")
        await raises(api.command("refuse", room=ch), "NOT_FOUND")
        await raises(api.command("slow", room=ch, timeout=0.3), "TIMEOUT")

        # Handler and subscription share the channel: joining keeps the handlers.
        events = await svc.join(ch)
        await api.join(ch)
        expect(sorted(events.join_result.get("handles") or []), ["boom", "get_status", "refuse", "slow"],
               "join keeps handles")
        await api.publish(ch, {"message": "hello svc"}, ack=True)
        expect((await events.next(5))["payload"]["message"], "hello svc", "event to a handler's channel")
        r = await api.command("get_status", {"check": "again"}, room=ch)
        expect(r["check"], "again", "handler after join")


async def history() -> None:
    ch = unique("pyl") + ":audit"
    async with ArqonBus(URL, client_id=unique("py_h_")) as bus:
        await bus.join(ch)
        acks = [await bus.publish(ch, {"n": i}, ack=True) for i in range(6)]
        pos = [a["position"] for a in acks]
        page = await bus.history(ch, limit=3)
        expect([e.envelope["payload"]["n"] for e in page], [3, 4, 5], "newest three, oldest first")
        expect([e.position for e in page], pos[3:], "positions")
        check(page.more and page.next_until, f"more before: {page}")
        expect(len(page), 3, "len")
        page = await bus.history(ch, since=pos[1], limit=2)
        expect([e.envelope["payload"]["n"] for e in page], [2, 3], "since, limited")
        check(page.more and page.next_since, f"more after: {page}")
        page = await bus.history(ch, since=page.next_since)
        expect([e.envelope["payload"]["n"] for e in page], [4, 5], "next page")
        page = await bus.history(ch, since=pos[0], until=pos[2])
        ns = [e.envelope["payload"]["n"] for e in page]
        check(ns and ns[0] == 1 and ns[-1] <= 2, f"since..until: {ns}")


async def bounded_queue() -> None:
    ch = unique("pyq") + ":flood"
    async with ArqonBus(URL, client_id=unique("py_qw_")) as w, ArqonBus(URL, client_id=unique("py_qr_")) as r:
        await w.join(ch)
        sub = await r.join(ch, max_queue=5)
        for i in range(60):
            await w.publish(ch, {"n": i}, ack=(i % 10 == 9))
        # Nobody read while 60 arrived into a queue of 5: the reader waited, lost nothing.
        got = [(await sub.next(5))["payload"]["n"] for _ in range(60)]
        expect(got, list(range(60)), "all events through a full queue, in order")
        pong = await r.command("ping")
        check(pong.get("pong"), "commands flow again")


async def close_and_no_reconnect() -> None:
    ch = unique("pyz") + ":svc"
    async with ArqonBus(URL, client_id=unique("py_zs_")) as svc:
        await svc.handle(ch, "slow", lambda p, e: asyncio.sleep(3))
        bus = ArqonBus(URL, client_id=unique("py_zc_"), reconnect=ReconnectPolicy(0.05, 0.2))
        await bus.connect()
        sub = await bus.join(ch)
        pending = asyncio.create_task(bus.command("slow", room=ch, timeout=10))
        ended = asyncio.create_task(sub.next(10))
        await asyncio.sleep(0.2)
        await bus.close()
        await raises(pending, "CLOSED")
        try:
            await ended
            raise AssertionError("iterator did not end on close")
        except StopAsyncIteration:
            pass
        await raises(bus.command("ping"), "CLOSED")
        await raises(bus.publish(ch, {}), "CLOSED")


if __name__ == "__main__":
    main([
        connect_and_identity,
        join_publish_receive,
        callbacks_and_filters,
        join_since_and_gap,
        private_messages,
        commands,
        handlers,
        history,
        bounded_queue,
        close_and_no_reconnect,
    ])
