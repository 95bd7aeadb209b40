"""Small value types of the SDK: errors, history positions, reconnect policy."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional


class ArqonBusError(Exception):
    """An error the server (or the SDK on its behalf) answered a call with.

    ``code`` is one of the protocol's codes (``VALIDATION_ERROR``, ``FORBIDDEN``,
    ``TARGET_NOT_FOUND``, ``RATE_LIMITED``, ``TIMEOUT``, ...) or one the SDK adds:
    ``DISCONNECTED`` (the connection dropped while the call was in flight, or did
    not come back within the call's timeout: the call may or may not have taken
    effect) and ``CLOSED`` (the bus was closed).
    """

    def __init__(
        self,
        code: str,
        message: str,
        field: Optional[str] = None,
        retry_after_ms: Optional[int] = None,
        request_id: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" ({field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_ms = retry_after_ms
        self.request_id = request_id
        self.status = status

    @classmethod
    def from_payload(cls, p: Any, request_id: Optional[str] = None) -> "ArqonBusError":
        """Builds the error from an ``error`` envelope's payload or a response's ``error``.

        Handlers written by others may answer ``error`` as a bare string, so both
        shapes are accepted.
        """
        if isinstance(p, str):
            return cls("HANDLER_ERROR", p, request_id=request_id)
        if not isinstance(p, dict):
            return cls("INTERNAL", f"unreadable error {p!r}", request_id=request_id)
        return cls(
            str(p.get("code") or "INTERNAL"),
            str(p.get("message") or ""),
            field=p.get("field"),
            retry_after_ms=p.get("retry_after_ms"),
            request_id=p.get("request_id") or request_id,
            status=p.get("status"),
        )


@dataclass(frozen=True, order=True)
class Position:
    """A history position ``"<ms>-<seq>"``, ordered numerically (ms, then seq).

    Positions are compared as numbers, not strings: ``"9-0" < "10-0"``.
    """

    ms: int
    seq: int

    @classmethod
    def parse(cls, s: Any) -> Optional["Position"]:
        """Returns the position in ``s``, or None when ``s`` is not one (an RFC 3339 time, say)."""
        if not isinstance(s, str):
            return None
        a, sep, b = s.partition("-")
        if not sep or not a.isdigit() or not b.isdigit():
            return None
        return cls(int(a), int(b))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


@dataclass
class ReconnectPolicy:
    """Exponential backoff with full jitter between reconnect attempts.

    Attempt n waits a uniformly random time in ``[0, min(max_delay, min_delay * 2**n)]``:
    full jitter spreads the clients of a restarted server over the window instead
    of having them all knock at once.
    """

    min_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        cap = min(self.max_delay, self.min_delay * (2 ** min(attempt, 30)))
        return random.uniform(0, cap)


@dataclass
class Gap:
    """Told to ``bus.on("gap", fn)`` when a resume could not replay everything missed.

    The events after ``since`` up to and including ``omitted_until`` (when set) are
    not delivered; ``await bus.history(channel, since=since, until=omitted_until)``
    pages through them while they are still kept. Without ``omitted_until`` the
    history older than what the server keeps is gone.
    """

    channel: str
    since: Optional[str]
    omitted_until: Optional[str]
    replayed: int
    last_position: Optional[str]


@dataclass
class HistoryEntry:
    """One stored event: its position and the envelope as it was published."""

    position: str
    envelope: dict


@dataclass
class HistoryPage:
    """One answer of ``history``: entries oldest first, and where the next page starts.

    Iterating a page yields its entries; ``more`` says the server holds more in the
    asked range: ask again with ``since=next_since`` (or ``until=next_until`` when
    paging backwards from the newest).
    """

    room: str
    channel: str
    entries: list[HistoryEntry] = field(default_factory=list)
    more: bool = False
    next_since: Optional[str] = None
    next_until: Optional[str] = None

    def __iter__(self) -> Iterator[HistoryEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)
