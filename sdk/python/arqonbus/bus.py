"""The ArqonBus client: one WebSocket, reconnected and resumed for the application.

Everything runs on the caller's asyncio event loop; no thread is started.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Optional, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from .types import ArqonBusError, Gap, HistoryEntry, HistoryPage, Position, ReconnectPolicy

log = logging.getLogger("arqonbus")

Envelope = dict[str, Any]
Handler = Callable[[dict, Envelope], Union[Any, Awaitable[Any]]]
Callback = Callable[..., Any]

#: The events ``bus.on`` accepts.
EVENTS = ("event", "private", "state", "gap", "error", "system")

_END = object()  # ends a subscription's iterator


def _now() -> str:
    """RFC 3339 UTC with milliseconds, as the protocol's examples write it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def split_channel(name: str, channel: Optional[str] = None) -> tuple[str, str]:
    """``"room:channel"`` (or room plus channel) as the pair the envelope needs."""
    if channel is not None:
        return name, channel
    room, sep, ch = name.partition(":")
    if not sep or not room or not ch:
        raise ValueError(f"channel must be 'room:channel', got {name!r}")
    return room, ch


class Subscription:
    """Membership of one channel: its events, in order, each once.

    Consume it with ``async for env in sub`` (or ``await sub.next()``), or with
    callbacks (``sub.on_event(fn)``). Events wait in a queue of ``max_queue``
    envelopes for the iterator. When the queue is full the SDK stops reading the
    connection until the application takes one (it never drops an event): the
    server then buffers, and if the application stays behind long enough the
    server disconnects it as a slow consumer; the SDK reconnects and resumes
    from the last event it queued, so nothing is lost or repeated. Registering
    a callback with ``on_event`` turns the queue off for this subscription
    (callbacks get every event, including what was queued); so does
    ``max_queue=0`` at join.
    """

    def __init__(self, bus: "ArqonBus", name: str, filter: Optional[dict], max_queue: int) -> None:
        self._bus = bus
        self.name = name
        self.room, self.channel = split_channel(name)
        self.filter = filter
        #: command name -> handler function registered with ``bus.handle``.
        self.handles: dict[str, Handler] = {}
        #: the newest position delivered (or the join's position): the resume point.
        self.last_position: Optional[str] = None
        self._last: Optional[Position] = None
        self._queue: Optional[asyncio.Queue] = asyncio.Queue(max_queue) if max_queue > 0 else None
        self._callbacks: list[Callback] = []
        self.user_joined = False  # joined by the application (not only for handlers)
        self.active = True
        #: members of the channel at the last (re)join.
        self.members: Optional[int] = None
        #: the last join's result as the server sent it.
        self.join_result: Optional[dict] = None

    # -- consuming ------------------------------------------------------------

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Envelope:
        if self._queue is None:
            raise StopAsyncIteration
        env = await self._queue.get()
        if env is _END:
            self._queue.put_nowait(_END)  # later iterators end too
            raise StopAsyncIteration
        return env

    async def next(self, timeout: Optional[float] = None) -> Envelope:
        """The next event; raises ``asyncio.TimeoutError`` after ``timeout`` seconds, or
        ``StopAsyncIteration`` once the subscription ended."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def on_event(self, fn: Callback) -> Callable[[], None]:
        """Calls ``fn(envelope)`` for each event of this channel; returns the function that
        unregisters it. The queue is turned off: what it held goes to ``fn`` first."""
        self._callbacks.append(fn)
        q, self._queue = self._queue, None
        while q is not None and not q.empty():
            env = q.get_nowait()
            if env is not _END:
                self._bus._call(fn, env)
        return lambda: self._callbacks.remove(fn) if fn in self._callbacks else None

    async def leave(self, timeout: Optional[float] = None) -> None:
        """Leaves the channel (its handlers too) and ends the iterator."""
        self._bus._subs.pop(self.name, None)
        self._end()
        if self._bus._closed:
            return
        try:
            await self._bus.command("leave_channel", None, room=self.room, channel=self.channel, timeout=timeout)
        except ArqonBusError as e:
            if e.code != "NOT_FOUND":  # not a member (a drop did it for us)
                raise

    # -- internals --------------------------------------------------------------

    def _end(self) -> None:
        self.active = False
        if self._queue is not None:
            try:
                self._queue.put_nowait(_END)
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self._queue.put_nowait(_END)

    def _advance(self, pos: Optional[str]) -> None:
        """Moves the resume point forward to pos (never back)."""
        p = Position.parse(pos)
        if p is not None and (self._last is None or p > self._last):
            self._last, self.last_position = p, pos

    def _join_params(self) -> dict:
        params: dict[str, Any] = {}
        if self.filter:
            params["filter"] = self.filter
        if self.handles:
            params["handles"] = sorted(self.handles)
        if self.last_position is not None:
            params["since"] = self.last_position
        return params

    def __repr__(self) -> str:
        return f"<Subscription {self.name} last={self.last_position}>"


class ArqonBus:
    """A client of one ArqonBus server that survives dropped connections.

    ``reconnect`` is True (the default policy), False (a drop closes the bus) or a
    :class:`ReconnectPolicy`. After a drop the bus reconnects with backoff and
    full jitter, under the same client id and with the resume token of the last
    welcome (so it takes its id over even while the server still holds the old,
    half-open connection), and rejoins every channel with ``since`` = the last
    position it delivered, with the same filter and handlers. Events at or
    before that position are dropped, so each event reaches the application once
    and in order. Calls in flight at a drop fail at once with ``DISCONNECTED``
    (they may or may not have taken effect); calls made while reconnecting wait
    for the connection, within their timeout.

    Use it as ``async with ArqonBus(url) as bus:`` or call ``connect`` and ``close``.
    """

    def __init__(
        self,
        url: str,
        client_id: Optional[str] = None,
        client_type: str = "human",
        token: Optional[str] = None,
        personality: Optional[str] = None,
        reconnect: Union[bool, ReconnectPolicy] = True,
        command_timeout: float = 5.0,
        *,
        screen_name: Optional[str] = None,
        avatar: Optional[str] = None,
        max_size: int = 16 << 20,
    ) -> None:
        self.url = url
        # Always an explicit id: the resume token is bound to it, and a server-made
        # id would change on every reconnect.
        self.client_id: str = client_id or "arq_" + secrets.token_hex(8)
        self.client_type = client_type
        self.token = token
        self.personality = personality
        self.screen_name = screen_name
        self.avatar = avatar
        if reconnect is True:
            reconnect = ReconnectPolicy()
        self.reconnect: Optional[ReconnectPolicy] = reconnect or None
        self.command_timeout = command_timeout
        self.max_size = max_size
        #: the node the current connection is on (from its welcome).
        self.node_id: Optional[str] = None
        #: the welcome payload of the current connection.
        self.welcome: Optional[dict] = None
        #: "idle", "connecting", "open", "reconnecting" or "closed".
        self.state = "idle"
        #: connections opened so far (1 + reconnects).
        self.connections = 0
        self._resume_token: Optional[str] = None
        self._ws: Any = None
        self._reader: Optional[asyncio.Task] = None
        self._supervisor: Optional[asyncio.Task] = None
        self._ready = asyncio.Event()
        self._closed = False
        self._pending: dict[str, asyncio.Future] = {}
        self._subs: dict[str, Subscription] = {}
        self._listeners: dict[str, list[Callback]] = {k: [] for k in EVENTS}
        self._id_prefix = "arq_" + secrets.token_hex(4) + "_"
        self._seq = 0
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> "ArqonBus":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self, timeout: Optional[float] = None) -> "ArqonBus":
        """Opens the first connection and waits for its welcome.

        Raises :class:`ArqonBusError` (``UNAUTHORIZED``, ``CONFLICT``, ...) or an
        ``OSError`` when it cannot: the first connection is not retried, so that a
        wrong URL or token is reported instead of retried forever.
        """
        if self.state != "idle":
            raise RuntimeError(f"connect() on a bus that is {self.state}")
        self._set_state("connecting")
        try:
            await asyncio.wait_for(self._establish(), timeout or max(10.0, self.command_timeout))
        except BaseException:
            self._closed = True
            self._set_state("closed")
            raise
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def close(self) -> None:
        """Closes the connection for good: pending calls fail with ``CLOSED``,
        subscriptions' iterators end."""
        if self._closed and self.state == "closed":
            return
        self._closed = True
        self._ready.clear()
        self._fail_pending("CLOSED", "the bus was closed")
        if self._supervisor is not None:
            self._supervisor.cancel()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except BaseException:
                pass
        self._fail_pending("CLOSED", "the bus was closed")
        for sub in list(self._subs.values()):
            sub._end()
        self._set_state("closed")

    @property
    def resume_token(self) -> Optional[str]:
        """The resume token of the last welcome: what the next connection presents to
        take this client id over from a connection the server still holds."""
        return self._resume_token

    async def wait_open(self, timeout: Optional[float] = None) -> None:
        """Waits until the bus is connected (and every channel rejoined)."""
        await self._wait_ready(timeout if timeout is not None else self.command_timeout)

    def on(self, event: str, fn: Callback) -> Callable[[], None]:
        """Registers ``fn`` for one of:

        - ``"event"``: ``fn(envelope)`` for every channel's events (after the
          exactly-once check of subscribed channels);
        - ``"private"``: ``fn(envelope)`` for private messages to this client;
        - ``"state"``: ``fn(state)`` on "connecting", "open", "reconnecting", "closed";
        - ``"gap"``: ``fn(Gap)`` when a resume could not replay all that was missed;
        - ``"error"``: ``fn(ArqonBusError)`` for errors no call is waiting for;
        - ``"system"``: ``fn(envelope)`` for server notices.

        ``fn`` may be a coroutine function (it is then run as a task). Returns the
        function that unregisters it.
        """
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; one of {EVENTS}")
        self._listeners[event].append(fn)
        return lambda: self._listeners[event].remove(fn) if fn in self._listeners[event] else None

    # -- calls ----------------------------------------------------------------------

    async def join(
        self,
        channel: str,
        filter: Optional[dict] = None,
        since: Optional[str] = None,
        *,
        max_queue: int = 10_000,
        timeout: Optional[float] = None,
    ) -> Subscription:
        """Joins ``"room:channel"`` and returns its subscription.

        ``filter`` (metadata key/values) limits delivery to the events whose
        metadata or payload.metadata hold all of them. ``since`` (a position, or
        an RFC 3339 time) first replays what was published after it. Joining a
        channel already joined updates its filter and returns the same object.
        """
        sub = self._subs.get(channel)
        if sub is None:
            sub = Subscription(self, channel, filter, max_queue)
        else:
            sub.filter = filter
            if not sub.user_joined and sub._queue is None and not sub._callbacks and max_queue > 0:
                sub._queue = asyncio.Queue(max_queue)  # it only served handlers so far
        if since is not None:
            sub.last_position = since
            sub._last = Position.parse(since)
        was_user = sub.user_joined
        sub.user_joined = True
        try:
            await self._join(sub, timeout, wait_ready=True)
        except BaseException:
            sub.user_joined = was_user
            if not sub.handles and not was_user:
                self._subs.pop(channel, None)
            raise
        return sub

    def subscription(self, channel: str) -> Optional[Subscription]:
        """The subscription of ``"room:channel"``, if joined."""
        return self._subs.get(channel)

    async def publish(
        self,
        channel: str,
        payload: dict,
        metadata: Optional[dict] = None,
        ack: bool = False,
        *,
        timeout: Optional[float] = None,
    ) -> Optional[dict]:
        """Publishes an event to a channel this client joined.

        With ``ack=True`` it returns the server's ack, ``{"routed", "delivered",
        "position", "persisted"?}``, once the event is routed (and stored, with
        ``ARQONBUS_PERSIST=sync``); errors raise. Without, it returns None once
        the frame is written and errors go to ``on("error")``.
        """
        room, ch = split_channel(channel)
        meta = dict(metadata or {})
        if ack:
            meta["ack"] = True
        env = self._envelope("event", room, ch, payload, meta or None)
        if ack:
            return await self._request(env, timeout)
        await self._send_when_ready(env, timeout)
        return None

    async def send_private(
        self,
        target: str,
        payload: dict,
        metadata: Optional[dict] = None,
        *,
        ack: bool = True,
        channel: str = "direct:pm",
        timeout: Optional[float] = None,
    ) -> Optional[dict]:
        """Sends a private message to client ``target``.

        With ``ack=True`` (the default, as in the JS and Go SDKs) it returns the
        server's ack once the message was handed to the target (on whichever
        node), and a target that is not connected raises ``ArqonBusError``
        ``TARGET_NOT_FOUND``. With ``ack=False`` it returns None once the frame is
        written, and errors come to ``on("error")`` with the message's id as
        ``request_id``.
        """
        room, ch = split_channel(channel)
        meta = dict(metadata or {})
        if ack:
            meta["ack"] = True
        env = self._envelope("private", room, ch, {**payload, "target": target}, meta or None)
        if ack:
            return await self._request(env, timeout)
        await self._send_when_ready(env, timeout)
        return None

    async def command(
        self,
        name: str,
        params: Optional[dict] = None,
        room: Optional[str] = None,
        channel: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Runs a command (built-in, or served by a handler of the channel) and returns
        its result; an error answer raises :class:`ArqonBusError`.

        ``room`` may be ``"room:channel"``; without one, built-ins run against
        ``science:general`` (they need some channel on the envelope).
        """
        if room is None:
            room, channel = "science", "general"
        elif channel is None:
            room, channel = split_channel(room)
        env = self._envelope("command", room, channel, {"command": name, "parameters": params or {}})
        return await self._request(env, timeout)

    def handle(self, channel: str, name: str, fn: Handler) -> "asyncio.Future[Subscription]":
        """Serves command ``name`` sent to ``"room:channel"`` with ``fn(params, envelope)``.

        ``fn`` may be a function or a coroutine function; what it returns is the
        command's result, and an exception answers with status error (an
        :class:`ArqonBusError` keeps its code, others become ``HANDLER_ERROR``).
        The channel is joined (or rejoined) with the command among its
        ``handles``, and again after every reconnect. Returns a future done once
        the server registered the handler (await it to be sure).
        """
        sub = self._subs.get(channel)
        if sub is None:
            sub = Subscription(self, channel, None, 0)
        sub.handles[name] = fn

        async def register() -> Subscription:
            try:
                await self._join(sub, None, wait_ready=True)
            except BaseException:
                sub.handles.pop(name, None)
                if not sub.handles and not sub.user_joined:
                    self._subs.pop(channel, None)
                raise
            return sub

        return self._spawn(register())

    async def history(
        self,
        channel: str,
        limit: Optional[int] = None,
        since: Optional[str] = None,
        until: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> HistoryPage:
        """Reads stored events of a channel, oldest first (at most ``limit``, <= 1000)."""
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if since is not None:
            params["since"] = since
        if until is not None:
            params["until"] = until
        room, ch = split_channel(channel)
        r = await self.command("history", params, room=room, channel=ch, timeout=timeout)
        return HistoryPage(
            room=r.get("room", room),
            channel=r.get("channel", ch),
            entries=[HistoryEntry(e.get("position"), e.get("envelope")) for e in r.get("entries") or []],
            more=bool(r.get("more")),
            next_since=r.get("next_since"),
            next_until=r.get("next_until"),
        )

    # -- connection ----------------------------------------------------------------

    def _connect_url(self) -> str:
        parts = urlsplit(self.url)
        q = dict(parse_qsl(parts.query))
        q["client_id"] = self.client_id
        q["client_type"] = self.client_type
        for k, v in (
            ("personality", self.personality),
            ("token", self.token),
            ("screen_name", self.screen_name),
            ("avatar", self.avatar),
            ("resume_token", self._resume_token),
        ):
            if v is not None:
                q[k] = v
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(q), parts.fragment))

    async def _establish(self) -> None:
        """Opens a connection, reads its welcome, rejoins every channel; then the bus is open."""
        try:
            ws = await websockets.connect(
                self._connect_url(), max_size=self.max_size, compression=None, open_timeout=10, close_timeout=2
            )
        except InvalidStatusCode as e:
            code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 503: "UNAVAILABLE"}.get(e.status_code, "UNAVAILABLE")
            raise ArqonBusError(code, f"upgrade refused with HTTP {e.status_code}", status=e.status_code) from e
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if first.get("type") == "error":
                raise ArqonBusError.from_payload(first.get("payload") or {})
            p = first.get("payload") or {}
            if first.get("type") != "system" or p.get("event") != "welcome":
                raise ArqonBusError("INTERNAL", f"expected a welcome, got {first.get('type')}")
        except BaseException:
            await ws.close()
            raise
        self.welcome = p
        self.client_id = p.get("client_id") or self.client_id
        self.node_id = p.get("node_id")
        if p.get("resume_token"):
            self._resume_token = p["resume_token"]
        self._ws = ws
        self.connections += 1
        self._reader = asyncio.create_task(self._read(ws))
        # Rejoin concurrently; replays arrive through the reader, before each answer.
        subs = list(self._subs.values())
        results = await asyncio.gather(*(self._join(s, None, wait_ready=False) for s in subs), return_exceptions=True)
        for sub, r in zip(subs, results):
            if isinstance(r, ArqonBusError) and r.code in ("DISCONNECTED", "CLOSED"):
                raise r  # dropped again while rejoining: the supervisor retries
            if isinstance(r, BaseException):
                self._emit("error", r if isinstance(r, ArqonBusError) else ArqonBusError("INTERNAL", repr(r)))
        if self._ws is not ws or ws.closed:
            raise ArqonBusError("DISCONNECTED", "connection lost while rejoining")
        self._set_state("open")
        self._ready.set()

    async def _supervise(self) -> None:
        """Waits for the connection to end and opens the next one, with backoff."""
        while not self._closed:
            reader = self._reader
            if reader is not None:
                try:
                    await reader
                except BaseException:
                    pass
            if self._closed:
                return
            if self.reconnect is None:
                self._closed = True
                self._fail_pending("CLOSED", "connection lost and reconnect is off")
                for sub in list(self._subs.values()):
                    sub._end()
                self._set_state("closed")
                return
            self._set_state("reconnecting")
            attempt = 0
            while not self._closed:
                await asyncio.sleep(self.reconnect.delay(attempt))
                attempt += 1
                try:
                    await asyncio.wait_for(self._establish(), 15)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # refused, timed out, dropped while rejoining: try again
                    log.debug("arqonbus: reconnect attempt %d failed: %r", attempt, e)
                    if isinstance(e, ArqonBusError) and e.code == "UNAUTHORIZED":
                        self._emit("error", e)
                    ws, self._ws = self._ws, None
                    if ws is not None:
                        await ws.close()
                    if self._reader is not None and not self._reader.done():
                        try:
                            await self._reader
                        except BaseException:
                            pass

    async def _read(self, ws: Any) -> None:
        """Reads one connection until it ends; then fails what was in flight on it."""
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                try:
                    env = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(env, dict):
                    continue
                res = self._dispatch(env)
                if res is not None:
                    await res  # a full subscription queue: back-pressure to the server
        except ConnectionClosed as e:
            log.debug("arqonbus: connection closed: %s", e)
            if e.rcvd is not None and e.rcvd.code == 1008 and _taken_over(e.rcvd.reason):
                # Another connection took our id over with our resume token: fighting
                # back would only bounce the id between the two.
                self._closed = True
                self._emit("error", ArqonBusError("CONFLICT", f"connection taken over: {e.rcvd.reason}"))
        finally:
            if self._ws is ws:
                self._ready.clear()
            if not self._closed:
                self._fail_pending("DISCONNECTED", "the connection dropped before the answer")
            else:
                self._fail_pending("CLOSED", "the bus was closed")
                for sub in list(self._subs.values()):
                    sub._end()
                self._set_state("closed")

    # -- incoming -----------------------------------------------------------------

    def _dispatch(self, env: Envelope) -> Optional[Awaitable[None]]:
        t = env.get("type")
        if t in ("event", "telemetry"):
            return self._deliver(env)
        p = env.get("payload")
        if not isinstance(p, dict):
            p = {}
        if t == "command_response":
            fut = self._pending.pop(p.get("request_id"), None)
            if fut is not None and not fut.done():
                if p.get("status", "success") == "success":
                    fut.set_result(p.get("result"))
                else:
                    fut.set_exception(ArqonBusError.from_payload(p.get("error"), p.get("request_id")))
        elif t == "error":
            err = ArqonBusError.from_payload(p)
            fut = self._pending.pop(err.request_id, None) if err.request_id else None
            if fut is not None and not fut.done():
                fut.set_exception(err)
            else:
                self._emit("error", err)
        elif t == "private":
            self._emit("private", env)
        elif t == "command":
            self._serve(env, p)
        elif t == "system":
            self._emit("system", env)
            if p.get("event") == "shutdown" and not self._closed:
                # The server is going away: leave now and reconnect (elsewhere, behind
                # a load balancer) rather than wait for its close.
                self._ready.clear()
                ws = self._ws
                if ws is not None:
                    self._spawn(ws.close(1001, "server shutting down"))
        return None

    def _deliver(self, env: Envelope) -> Optional[Awaitable[None]]:
        room, ch = env.get("room"), env.get("channel")
        sub = self._subs.get(f"{room}:{ch}")
        if sub is not None:
            meta = env.get("metadata")
            pos = meta.get("position") if isinstance(meta, dict) else None
            p = Position.parse(pos)
            if p is not None:
                if sub._last is not None and p <= sub._last:
                    return None  # seen before the reconnect (or replayed twice)
        for fn in self._listeners["event"]:
            self._call(fn, env)
        if sub is None or not sub.active:
            return None
        for fn in sub._callbacks:
            self._call(fn, env)
        q = sub._queue
        if q is not None:
            if q.full():
                return self._put_blocking(sub, q, env, pos)
            q.put_nowait(env)
        sub._advance(pos)
        return None

    async def _put_blocking(self, sub: Subscription, q: asyncio.Queue, env: Envelope, pos: Optional[str]) -> None:
        await q.put(env)
        sub._advance(pos)  # only once queued: a drop while waiting resumes before it

    def _serve(self, env: Envelope, p: dict) -> None:
        name = p.get("command")
        sub = self._subs.get(f"{env.get('room')}:{env.get('channel')}")
        fn = sub.handles.get(name) if sub is not None else None
        if fn is None:
            return  # not ours (the server only sends what we handle)

        async def run() -> None:
            try:
                r = fn(p.get("parameters") or {}, env)
                if inspect.isawaitable(r):
                    r = await r
                body = {"request_id": env.get("id"), "status": "success", "result": r if r is not None else {}}
            except Exception as e:  # the requester gets the failure, not silence
                code = e.code if isinstance(e, ArqonBusError) else "HANDLER_ERROR"
                msg = e.message if isinstance(e, ArqonBusError) else (str(e) or type(e).__name__)
                body = {"request_id": env.get("id"), "status": "error", "error": {"code": code, "message": msg}}
            out = self._envelope("command_response", env.get("room"), env.get("channel"), body)
            try:
                await self._send(out)
            except ArqonBusError:
                pass  # dropped: the requester gets TIMEOUT (or its own DISCONNECTED)

        self._spawn(run())

    # -- outgoing -----------------------------------------------------------------

    def _envelope(self, typ: str, room: Any, channel: Any, payload: dict, metadata: Optional[dict] = None) -> Envelope:
        self._seq += 1
        env: Envelope = {
            "version": "1.0",
            "id": f"{self._id_prefix}{self._seq}",
            "type": typ,
            "room": room,
            "channel": channel,
            "from": self.client_id,
            "timestamp": _now(),
            "payload": payload,
        }
        if metadata:
            env["metadata"] = metadata
        return env

    async def _send(self, env: Envelope) -> None:
        ws = self._ws
        if ws is None or self._closed:
            raise ArqonBusError("CLOSED" if self._closed else "DISCONNECTED", "not connected")
        try:
            await ws.send(json.dumps(env, separators=(",", ":"), ensure_ascii=False))
        except ConnectionClosed as e:
            raise ArqonBusError("DISCONNECTED", f"connection closed: {e}") from None

    async def _wait_ready(self, timeout: float) -> None:
        if self._closed:
            raise ArqonBusError("CLOSED", "the bus is closed")
        if self._ready.is_set():
            return
        # Also before connect(): a call may be made first and wait for it, as in the JS SDK.
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise ArqonBusError("DISCONNECTED", f"not connected within {timeout:g} s") from None
        if self._closed:
            raise ArqonBusError("CLOSED", "the bus is closed")

    async def _send_when_ready(self, env: Envelope, timeout: Optional[float]) -> None:
        await self._wait_ready(self.command_timeout if timeout is None else timeout)
        await self._send(env)

    async def _request(self, env: Envelope, timeout: Optional[float], wait_ready: bool = True) -> Any:
        """Sends env and waits for the answer whose request_id is its id."""
        timeout = self.command_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if wait_ready:
            await self._wait_ready(timeout)
        fut = asyncio.get_running_loop().create_future()
        self._pending[env["id"]] = fut
        try:
            await self._send(env)
            try:
                return await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ArqonBusError(
                    "TIMEOUT", f"no answer to {env['type']} {env['id']} within {timeout:g} s", request_id=env["id"]
                ) from None
        finally:
            self._pending.pop(env["id"], None)

    async def _join(self, sub: Subscription, timeout: Optional[float], wait_ready: bool) -> None:
        """Sends join_channel for sub (with its resume point, filter and handles)."""
        self._subs[sub.name] = sub
        sub.active = True
        env = self._envelope(
            "command", sub.room, sub.channel, {"command": "join_channel", "parameters": sub._join_params()}
        )
        since = sub.last_position
        r = await self._request(env, timeout, wait_ready=wait_ready)
        if not isinstance(r, dict):
            return
        sub.join_result = r
        sub.members = r.get("members")
        # Every event after the join is after the channel's position at the join.
        sub._advance(r.get("position"))
        replay = r.get("replay")
        if isinstance(replay, dict):
            sub._advance(replay.get("last_position"))
            if replay.get("complete") is False:
                self._emit(
                    "gap",
                    Gap(sub.name, since, replay.get("omitted_until"), int(replay.get("replayed") or 0),
                        replay.get("last_position")),
                )

    def _fail_pending(self, code: str, message: str) -> None:
        pending, self._pending = self._pending, {}
        for rid, fut in pending.items():
            if not fut.done():
                fut.set_exception(ArqonBusError(code, message, request_id=rid))

    # -- callbacks --------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._emit("state", state)

    def _emit(self, event: str, arg: Any) -> None:
        if event == "error" and not self._listeners["error"]:
            log.warning("arqonbus: %s", arg)
        for fn in list(self._listeners[event]):
            self._call(fn, arg)

    def _call(self, fn: Callback, arg: Any) -> None:
        try:
            r = fn(arg)
            if inspect.isawaitable(r):
                self._spawn(r)
        except Exception:  # one bad callback must not stop the reader
            log.exception("arqonbus: callback %r failed", fn)

    def _spawn(self, aw: Awaitable[Any]) -> asyncio.Future:
        t = asyncio.ensure_future(aw)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t


def _taken_over(reason: str) -> bool:
    """Whether a 1008 close says a newer connection presented our resume token.

    Only that ends the bus. Other 1008 closes (protocol violations, a cluster
    node that found our id claimed elsewhere, e.g. by a node that has just been
    killed) are reconnected like any drop: the resume token wins the id back.
    """
    r = (reason or "").lower()
    return any(w in r for w in ("replaced",))
