"""Routing on who is asking: premium users get the larger model.

``RoutingPlugin`` on the runner lets the router read the user, session and
session state; the rule itself is one line.

Run: ``python examples/per_user/run.py``
"""

from __future__ import annotations

import asyncio
import logging

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.runners import InMemoryRunner
from google.genai import types

from routed_llm import RoutedLlm, RoutingPlugin
from routed_llm.strategies import PreRoutingStrategy, RoutingContext
from routed_llm.testing import ScriptedLlm


def by_tier(ctx: RoutingContext) -> str:
    return "pro" if ctx.invocation and ctx.invocation.state.get("tier") == "premium" else "flash"


root_agent = LlmAgent(
    name="assistant",
    model=RoutedLlm(
        models=[
            ScriptedLlm(model="flash", script=lambda request: "a quick answer"),
            ScriptedLlm(model="pro", script=lambda request: "a thorough answer"),
        ],
        router=PreRoutingStrategy(by_tier),
    ),
)


async def main() -> None:
    # The stand-in models report no token usage, which ADK's telemetry warns about.
    logging.getLogger("google_adk.google.adk.telemetry").setLevel(logging.ERROR)
    runner = InMemoryRunner(app=App(name="tiers", root_agent=root_agent, plugins=[RoutingPlugin()]))
    for user, tier in (("ada", "premium"), ("bob", "basic")):
        session = await runner.session_service.create_session(
            app_name="tiers", user_id=user, state={"tier": tier}
        )
        message = types.Content(role="user", parts=[types.Part(text="Explain routing.")])
        async for event in runner.run_async(user_id=user, session_id=session.id, new_message=message):
            if event.content and event.content.parts and event.custom_metadata:
                key = event.custom_metadata["routed_llm"]["key"]
                print(f"{user} ({tier}): {event.content.parts[0].text} [served by {key!r}]")


if __name__ == "__main__":
    asyncio.run(main())
