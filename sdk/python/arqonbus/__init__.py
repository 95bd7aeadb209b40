"""ArqonBus Python SDK: an asyncio client that reconnects and resumes.

    import asyncio
    from arqonbus import ArqonBus

    async def main():
        async with ArqonBus("ws://127.0.0.1:9100/", client_type="ai-agent") as bus:
            sub = await bus.join("science:general")
            await bus.publish("science:general", {"message": "hi"}, ack=True)
            async for env in sub:
                print(env["from"], env["payload"])

    asyncio.run(main())

Depends only on ``websockets`` 10.x (Debian's python3-websockets).
"""

from .bus import ArqonBus, Subscription, split_channel
from .types import ArqonBusError, Gap, HistoryEntry, HistoryPage, Position, ReconnectPolicy

__all__ = [
    "ArqonBus",
    "ArqonBusError",
    "Gap",
    "HistoryEntry",
    "HistoryPage",
    "Position",
    "ReconnectPolicy",
    "Subscription",
    "split_channel",
]

__version__ = "1.0.0"
