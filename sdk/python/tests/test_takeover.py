"""Reconnecting with the resume token takes over an id whose old connection is still open.

A half-open connection is made by hand: the SDK stops reading its socket
(the server still sees it open and never hears it go) and reconnects, as it
does after a ping timeout on a dead network. The new connection carries the
welcome's resume token, so the server closes the old one (1008) and the id
is ours at once. Without the token, or with a wrong one, the id is refused
with CONFLICT. Run by e2e/sdk_python_test.go (TestSDKPythonTakeover).
"""

from __future__ import annotations

import asyncio

from _check import URL, check, expect, main, unique

from arqonbus import ArqonBus, ArqonBusError, ReconnectPolicy


async def conflict(bus: ArqonBus, what: str) -> None:
    try:
        await bus.connect()
    except ArqonBusError as e:
        expect(e.code, "CONFLICT", what)
        return
    await bus.close()
    raise AssertionError(f"{what}: connected")


async def takeover() -> None:
    ch = unique("pyt") + ":chat"
    cid = unique("py_tk_")
    a = ArqonBus(URL, client_id=cid, reconnect=ReconnectPolicy(0.05, 0.2))
    b = ArqonBus(URL, client_id=unique("py_tb_"))
    await a.connect()
    await b.connect()
    try:
        check(a.resume_token, f"the welcome carries no resume_token: {a.welcome}")
        sub = await a.join(ch)
        await b.join(ch)
        ack = await b.publish(ch, {"n": 1}, ack=True)
        expect((await sub.next(5))["payload"]["n"], 1, "before")

        # Without the token (or with a wrong one) the live id is refused.
        await conflict(ArqonBus(URL, client_id=cid, reconnect=False), "same id without a token")
        wrong = ArqonBus(URL, client_id=cid, reconnect=False)
        wrong._resume_token = "arq_not_the_token"
        await conflict(wrong, "same id with a wrong token")

        # Half-open: stop reading the old socket and drop it on our side only.
        old = a._ws
        old.transport.pause_reading()
        a._reader.cancel()
        for _ in range(100):
            if a.connections == 2 and a.state == "open":
                break
            await asyncio.sleep(0.05)
        expect(a.connections, 2, "reconnected at once")
        expect(a.state, "open", "state")
        expect(a.welcome.get("client_id"), cid, "same id")
        check(a.resume_token, "a new resume token")

        # The server closed the old connection (policy violation, 1008).
        old.transport.resume_reading()
        await asyncio.wait_for(old.wait_closed(), 5)
        expect(old.close_code, 1008, f"old connection's close code ({old.close_reason!r})")

        # The subscription resumed on the new connection: the next event once.
        ack2 = await b.publish(ch, {"n": 2}, ack=True)
        env = await sub.next(5)
        expect(env["payload"]["n"], 2, "after the takeover")
        check(ack2["position"] > ack["position"] or len(ack2["position"]) > len(ack["position"]), "positions")
        try:
            extra = await sub.next(0.3)
            raise AssertionError(f"duplicate after takeover: {extra}")
        except asyncio.TimeoutError:
            pass

        # Another process presenting our token takes the id from us: the bus stops
        # (state closed, CONFLICT to on("error")) instead of taking it back.
        errors: list[ArqonBusError] = []
        a.on("error", errors.append)
        thief = ArqonBus(URL, client_id=cid, reconnect=False)
        thief._resume_token = a.resume_token
        await thief.connect()
        try:
            for _ in range(100):
                if a.state == "closed":
                    break
                await asyncio.sleep(0.05)
            expect(a.state, "closed", "replaced bus")
            check(errors and errors[-1].code == "CONFLICT", f"errors {errors}")
            await asyncio.sleep(0.5)
            expect(thief.state, "open", "the new holder keeps the id")
            expect(a.connections, 2, "no reconnect after being replaced")
        finally:
            await thief.close()
    finally:
        await a.close()
        await b.close()


if __name__ == "__main__":
    main([takeover])
