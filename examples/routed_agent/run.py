"""Asks the support agent a few questions and shows which agent answered, and why.

Run: ``python examples/routed_agent/run.py``
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from google.adk.apps import App
from google.adk.runners import InMemoryRunner
from google.genai import types

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from routed_agent.agent import billing_outage, root_agent

QUESTIONS = [
    ("Has invoice 4711 been paid?", False),
    ("How do I reach a human?", False),
    ("Has invoice 4711 been paid?", True),
]


async def main() -> None:
    runner = InMemoryRunner(app=App(name="routed_agent_demo", root_agent=root_agent))
    for question, outage in QUESTIONS:
        billing_outage.down = outage
        session = await runner.session_service.create_session(app_name="routed_agent_demo", user_id="demo")
        message = types.Content(role="user", parts=[types.Part(text=question)])
        async for event in runner.run_async(user_id="demo", session_id=session.id, new_message=message):
            if not event.is_final_response():
                continue
            route = (event.custom_metadata or {})["routed_agent"]
            failed = ", ".join(f"{key} failed: {error}" for key, error in route["errors"].items())
            why = f"rule: {route['rule']}" if "rule" in route else "no rule matched"
            print(f"Q: {question}" + ("  [billing model down]" if outage else ""))
            print(f"A: {event.content.parts[0].text}")
            print(f"   answered by {route['agent']!r} ({why})" + (f" after {failed}" if failed else ""))


if __name__ == "__main__":
    asyncio.run(main())
