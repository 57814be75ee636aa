"""Asks the failover agent a few questions and shows which model answered.

Run: ``python examples/failover/run.py``
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from google.adk.runners import InMemoryRunner
from google.genai import types

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from failover.agent import root_agent

QUESTIONS = ["What is the capital of France?", "Name a prime number above 10."]


class _DropGenaiCloseNoise(logging.Filter):
    """Hides one known google-genai bug: a client whose construction failed
    (no API key) still schedules a close on garbage collection, which fails
    and is reported as 'Task exception was never retrieved'."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "BaseApiClient.aclose" not in record.getMessage()


def describe(route: dict[str, object]) -> str:
    failed = route.get("errors") or {}
    why = "; ".join(f"{key} failed: {error}" for key, error in failed.items())  # type: ignore[union-attr]
    return f"served by {route['key']!r} ({route['model']})" + (f" after {why}" if why else "")


async def main() -> None:
    logging.getLogger("asyncio").addFilter(_DropGenaiCloseNoise())
    logging.getLogger("routed_llm").setLevel(logging.ERROR)  # Failovers are shown below instead.
    runner = InMemoryRunner(agent=root_agent, app_name="failover_demo")
    session = await runner.session_service.create_session(app_name="failover_demo", user_id="demo")
    for question in QUESTIONS:
        print(f"> {question}")
        async for event in runner.run_async(
            user_id="demo",
            session_id=session.id,
            new_message=types.Content(role="user", parts=[types.Part(text=question)]),
        ):
            if event.content and event.content.parts and event.content.parts[0].text and not event.partial:
                print(f"  {event.content.parts[0].text}")
                print(f"  [{describe(event.custom_metadata['routed_llm'])}]")


if __name__ == "__main__":
    asyncio.run(main())
