"""Asks the hybrid agent a few questions and says which model answered, and why.

Run: ``python examples/hybrid/run.py``. Without ``GOOGLE_API_KEY`` everything
is answered on the device; with a key and a network, public questions go to
Gemini; with a key and no network, Gemini fails and the device takes over.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from google.adk.runners import InMemoryRunner
from google.genai import types

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hybrid.agent import cloud_reachable, on_device, root_agent

QUESTIONS = [
    "What is the capital of France?",
    "My medical notes mention a private diagnosis. Who should I talk to?",
]


def why(route: dict[str, object]) -> str:
    errors = route.get("errors") or {}
    if errors:
        failures = ", ".join(f"{key} failed: {error}" for key, error in errors.items())  # type: ignore[union-attr]
        return f"{failures} -> {route['key']}"
    if "reason" in route:
        return str(route["reason"])
    if route["key"] == "on_device":
        return "no GOOGLE_API_KEY: the cloud is out of reach"
    return "the cloud is reachable"


async def main() -> None:
    logging.getLogger("routed_llm").setLevel(logging.ERROR)  # Failovers are explained below instead.
    print(f"cloud: {'GOOGLE_API_KEY set' if cloud_reachable() else 'no GOOGLE_API_KEY'}")
    print("Loading the on-device model (SmolLM2-135M-Instruct)...", end=" ", flush=True)
    started = time.perf_counter()
    await on_device.load()
    print(f"ready in {time.perf_counter() - started:.1f}s")

    runner = InMemoryRunner(agent=root_agent, app_name="hybrid_demo")
    session = await runner.session_service.create_session(app_name="hybrid_demo", user_id="demo")
    for question in QUESTIONS:
        print(f"\n> {question}")
        async for event in runner.run_async(
            user_id="demo",
            session_id=session.id,
            new_message=types.Content(role="user", parts=[types.Part(text=question)]),
        ):
            if event.content and event.content.parts and event.content.parts[0].text and not event.partial:
                route = event.custom_metadata["routed_llm"]
                print(f"  {event.content.parts[0].text.strip()}")
                print(f"  [{route['key']} ({route['model']}): {why(route)}]")


if __name__ == "__main__":
    asyncio.run(main())
