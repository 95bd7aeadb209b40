"""Tiny harness for the SDK's end-to-end scripts (run by e2e/sdk_python_test.go).

Each script is a list of async checks against the server at $ARQONBUS_URL. A
script prints one line per failure and exits 1, or prints "ok" and exits 0;
the Go test shows the output when it fails. Plain asserts are not used, so
that the scripts mean the same under ``python3 -O``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import traceback
from typing import Any, Awaitable, Callable

URL = os.environ.get("ARQONBUS_URL", "ws://127.0.0.1:9100/")
failures: list[str] = []


class Failed(Exception):
    """A check that failed: ends its section."""


def check(cond: Any, msg: str) -> None:
    if not cond:
        raise Failed(msg)


def expect(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise Failed(f"{what}: got {got!r}, want {want!r}")


def unique(prefix: str) -> str:
    """A fresh name, so reruns against one server do not see each other."""
    return f"{prefix}{secrets.token_hex(3)}"


def emit(obj: dict) -> None:
    """One JSON line on stdout for the Go side (line protocol)."""
    print(json.dumps(obj), flush=True)


async def run_sections(sections: list[Callable[[], Awaitable[None]]], timeout: float = 60) -> int:
    """Runs each section with its own timeout; returns the exit code."""
    for sec in sections:
        name = sec.__name__
        try:
            await asyncio.wait_for(sec(), timeout)
        except Failed as e:
            failures.append(f"{name}: {e}")
        except asyncio.TimeoutError:
            failures.append(f"{name}: timed out after {timeout} s")
        except Exception:
            failures.append(f"{name}: " + "".join(traceback.format_exc().splitlines(True)[-6:]))
    for f in failures:
        print("FAIL", f, flush=True)
    if failures:
        return 1
    print("ok", flush=True)
    return 0


def main(sections: list[Callable[[], Awaitable[None]]], timeout: float = 60) -> None:
    async def run_and_exit() -> None:
        code = await run_sections(sections, timeout)
        sys.stdout.flush()
        sys.stderr.flush()
        # Exit here: asyncio.run would otherwise wait for the executor thread a
        # test may leave blocked reading stdin, and a failed script would hang
        # until the Go side's timeout instead of failing at once.
        os._exit(code)

    asyncio.run(run_and_exit())
