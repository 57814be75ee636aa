"""Asks the hybrid agent a few questions and says which model answered, and why.

Run: ``python examples/hybrid/run.py``. Every question is answered on the
device first, and its confidence is printed next to the key. Without
``GOOGLE_API_KEY`` the device's answer stands, sure or not; with a key and a
network, a public question the device was unsure of goes to Gemini; with a
key and no network, Gemini fails and the device's unsure answer is shown.
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
    if "reason" in route:
        return str(route["reason"])
    errors: dict[str, str] = route.get("errors") or {}  # type: ignore[assignment]
    # The key that served may be in errors too: its unsure answer was output after all.
    steps = [
        f"{key} was unsure" if error == "ResponseRejected" else f"{key} failed: {error}"
        for key, error in errors.items()
        if key != route["key"]
    ]
    if steps:
        return f"{', '.join(steps)} -> {route['key']}"
    if route["key"] == "on_device" and not cloud_reachable():
        return "no GOOGLE_API_KEY: the cloud is out of reach"
    if route["key"] == "on_device":
        return "the device was sure enough"
    return "the cloud is reachable"


def confidence(route: dict[str, object]) -> str:
    """The device's confidence, and whether its answer was output though unsure."""
    value = route.get("confidence")
    shown = "" if value is None else f" confidence {value:.2f}"
    if "rejected" in route:
        shown += f" (unsure: {route['rejected']}; shown as no other model answered)"
    return shown


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
                print(f"  [{route['key']} ({route['model']}): {why(route)}]{confidence(route)}")


if __name__ == "__main__":
    asyncio.run(main())
