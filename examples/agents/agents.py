#!/usr/bin/python3
"""Quickstart Scenario 3: two AI agents coordinating through ArqonBus.

research_agent_1 (personality "analytical") and research_agent_2 ("creative")
connect as client type "ai-agent", join research:coordination with personality
filters, exchange the quickstart's structured messages (payload.message plus
payload.metadata {personality, priority, expected_duration}) and talk directly
with private messages. The filters:

- the analyst wants ideas, not echoes of its own kind: it joins with
  filter {"personality": "creative"};
- the creative agent only wants to be interrupted for what matters: it joins
  with filter {"personality": "analytical", "priority": "high"}, so the
  analyst's low-priority progress notes never reach it.

A monitor (client type "dashboard") joins the channel without a filter, to show
everything that was said, and integriguard:dashboard-events, where the server
reports each agent's activity (agent_activity). The exchange is bounded: the
script prints the conversation and a summary, and exits 0 when every step
happened (1 otherwise).

    make run                                  # the server, in another terminal
    /usr/bin/python3 examples/agents/agents.py [--url ws://127.0.0.1:9100/]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

try:
    from arqonbus import ArqonBus, Subscription
except ImportError:  # run from a checkout: use the SDK beside the example
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))
    from arqonbus import ArqonBus, Subscription

CHANNEL = "research:coordination"
DASHBOARD = "integriguard:dashboard-events"


def show(line: str) -> None:
    print(line, flush=True)


@dataclass
class Agent:
    """One AI agent: its connection, its filtered view of the channel, its inbox of private messages."""

    name: str
    client_id: str
    personality: str
    filter: dict
    bus: ArqonBus = field(init=False)
    channel: Optional[Subscription] = None
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    heard: list[str] = field(default_factory=list)

    async def start(self, url: str) -> None:
        self.bus = ArqonBus(url, client_id=self.client_id, client_type="ai-agent", personality=self.personality)
        self.bus.on("private", self.inbox.put_nowait)
        await self.bus.connect()
        self.channel = await self.bus.join(CHANNEL, filter=self.filter)
        show(f"{self.client_id} ({self.personality}) joined {CHANNEL} with filter {self.filter}")

    async def say(self, message: str, priority: str, expected_duration: str) -> None:
        """Publishes the quickstart's agent message shape on the coordination channel."""
        payload = {
            "message": message,
            "metadata": {"personality": self.personality, "priority": priority,
                         "expected_duration": expected_duration},
        }
        await self.bus.publish(CHANNEL, payload, ack=True)

    async def hear(self, timeout: float) -> dict:
        """The next channel message this agent's filter lets through."""
        env = await self.channel.next(timeout)
        m = env["payload"].get("metadata", {})
        self.heard.append(env["payload"]["message"])
        show(f"  {self.client_id} <- {env['from']} [{m.get('personality')}/{m.get('priority')}/"
             f"{m.get('expected_duration')}]: {env['payload']['message']}")
        return env

    async def whisper(self, target: "Agent", message: str, **metadata: str) -> None:
        """A private message straight to the other agent (not on any channel)."""
        await self.bus.send_private(target.client_id, {
            "message": message, "metadata": {"personality": self.personality, **metadata}})

    async def private(self, timeout: float) -> dict:
        env = await asyncio.wait_for(self.inbox.get(), timeout)
        show(f"  {self.client_id} <- {env['from']} (private): {env['payload']['message']}")
        return env


async def analyst_role(me: Agent, peer: Agent, t: float) -> None:
    await me.say("Starting analysis phase", "high", "5_minutes")
    await me.hear(t)  # the creative agent's hypotheses
    await me.say("Progress: 40% of the dataset scanned", "low", "1_minute")  # filtered out for the peer
    await me.whisper(peer, "Hypothesis B conflicts with the Q3 data: can you rework it?", priority="high")
    await me.private(t)  # the reworked hypothesis
    await me.say("Analysis complete: B' is supported (p < 0.01)", "high", "done")
    await me.hear(t)  # the wrap-up


async def creative_role(me: Agent, peer: Agent, t: float) -> None:
    await me.hear(t)  # "Starting analysis phase"
    await me.say("Three hypotheses to test: A) price, B) weather, C) novelty", "medium", "10_minutes")
    await me.private(t)  # the analyst's objection
    await me.whisper(peer, "Reworked B as B': a seasonal effect, lagged two weeks", priority="high")
    await me.hear(t)  # "Analysis complete" (the low-priority progress note never arrives)
    await me.say("Drafting the summary for the team", "medium", "2_minutes")


async def run(url: str, timeout: float) -> int:
    analyst = Agent("analyst", "research_agent_1", "analytical", {"personality": "creative"})
    creative = Agent("creative", "research_agent_2", "creative", {"personality": "analytical", "priority": "high"})

    monitor = ArqonBus(url, client_type="dashboard")
    await monitor.connect()
    transcript: list[dict] = []
    activity: dict[str, set[str]] = {analyst.client_id: set(), creative.client_id: set()}
    everything = await monitor.join(CHANNEL)
    everything.on_event(transcript.append)
    dashboard = await monitor.join(DASHBOARD, max_queue=0)

    def on_dashboard(env: dict) -> None:
        p = env.get("payload") or {}
        if p.get("eventType") == "agent_activity" and p.get("agent_id") in activity:
            activity[p["agent_id"]].add(p.get("activity"))

    dashboard.on_event(on_dashboard)

    ok = True
    try:
        await analyst.start(url)
        await creative.start(url)
        show("--- conversation (as each agent receives it) ---")
        await asyncio.wait_for(asyncio.gather(analyst_role(analyst, creative, timeout),
                                              creative_role(creative, analyst, timeout)), timeout)
    except Exception as e:  # a step that did not happen: report it and fail
        show(f"FAILED: {type(e).__name__}: {e}")
        ok = False

    # The server reports agent activity about once a second, coalesced per activity.
    expected = {"joined", "published", "private"}
    for _ in range(40):
        if all(expected <= acts for acts in activity.values()):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)  # the monitor's last events

    show("--- the whole channel (monitor, no filter) ---")
    for env in transcript:
        m = env["payload"].get("metadata", {})
        show(f"  {env['from']} [{m.get('personality')}/{m.get('priority')}]: {env['payload']['message']}")
    show("--- summary ---")
    show(f"channel messages: {len(transcript)}; analyst heard {len(analyst.heard)} "
         f"(filter {analyst.filter}); creative heard {len(creative.heard)} (filter {creative.filter})")
    for agent_id, acts in activity.items():
        show(f"agent_activity on {DASHBOARD} for {agent_id}: {sorted(a for a in acts if a) or 'none yet'}")

    for agent in (analyst, creative):
        if hasattr(agent, "bus"):
            await agent.bus.close()
    await monitor.close()
    if ok and len(transcript) == 5 and len(analyst.heard) == 2 and len(creative.heard) == 2:
        show("exchange complete")
        return 0
    show("exchange incomplete")
    return 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("ARQONBUS_URL", "ws://127.0.0.1:9100/"))
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole exchange")
    args = ap.parse_args()
    sys.exit(asyncio.run(run(args.url, args.timeout)))


if __name__ == "__main__":
    main()
