"""What a RoutedAgent adds to one turn with a large session state on ADK's SqliteSessionService.

One user turn, no failover: an ``LlmAgent`` (a scripted model that answers
at once, its instruction reading one small state key) run on its own, and
the same agent routed by a ``RoutedAgent`` (a plain router over it and a
fallback that never runs). The session holds about 5.7 MB of state (as JSON): 58
values of about 100 kB each, every one a list of 100 dicts of text and
numbers, as an agent's notes or retrieved documents would be. The session
lives in ``SqliteSessionService`` on a temporary file, so each turn loads it
and stores the turn's events, as in production.

Each run times ``--turns`` turns of each kind, alternating, and takes each
kind's median; the script makes ``--runs`` runs and reports the median of
those medians and the routed overhead. Run ``python benchmarks/routed_agent.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.runners import Runner
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

from routed_llm import RoutedAgent
from routed_llm.testing import ScriptedLlm


def big_state() -> dict[str, Any]:
    """About 5.7 MB of session state, as JSON."""
    note = {"title": "Refund policy", "text": "x" * 900, "score": 0.5, "tags": ["billing", "refunds"]}
    return {"user_name": "Ada", **{f"notes_{index}": [dict(note) for _ in range(100)] for index in range(58)}}


def agent(name: str) -> LlmAgent:
    model = ScriptedLlm(model=f"{name}-model", script=lambda request: "Hello!")
    return LlmAgent(name=name, model=model, instruction="Greet {user_name}.")


async def one_turn(runner: Runner, session_id: str) -> float:
    message = types.UserContent("Hi")
    started = time.perf_counter()
    async for _ in runner.run_async(user_id="user", session_id=session_id, new_message=message):
        pass
    return time.perf_counter() - started


async def one_run(turns: int, folder: Path) -> tuple[float, float]:
    """The median turn, in seconds, unrouted and routed."""
    runners = {
        "unrouted": Runner(
            app=App(name="bench", root_agent=agent("answer")),
            session_service=SqliteSessionService(str(folder / "unrouted.db")),
        ),
        "routed": Runner(
            app=App(
                name="bench",
                root_agent=RoutedAgent(
                    name="support",
                    agents={"answer": agent("answer"), "fallback": agent("fallback")},
                    router=lambda agents, ctx, error: "answer" if error is None else "fallback",
                ),
            ),
            session_service=SqliteSessionService(str(folder / "routed.db")),
        ),
    }
    sessions = {}
    for kind, runner in runners.items():
        service = runner.session_service
        session = await service.create_session(app_name="bench", user_id="user", state=big_state())
        sessions[kind] = session.id
        await one_turn(runner, session.id)  # Warm up: imports, the schema, caches.
    times: dict[str, list[float]] = {kind: [] for kind in runners}
    for _ in range(turns):
        for kind, runner in runners.items():
            times[kind].append(await one_turn(runner, sessions[kind]))
    return statistics.median(times["unrouted"]), statistics.median(times["routed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs; the report takes the median (default 5)")
    parser.add_argument("--turns", type=int, default=15, help="turns of each kind per run (default 15)")
    arguments = parser.parse_args()
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    print(f"state: {len(json.dumps(big_state())) / 1e6:.2f} MB as JSON")
    results = []
    for run in range(arguments.runs):
        with tempfile.TemporaryDirectory() as folder:
            unrouted, routed = asyncio.run(one_run(arguments.turns, Path(folder)))
        results.append((unrouted, routed))
        print(f"run {run + 1}: unrouted {unrouted * 1e3:.1f} ms, routed {routed * 1e3:.1f} ms")
    unrouted = statistics.median(result[0] for result in results)
    routed = statistics.median(result[1] for result in results)
    overhead = statistics.median(result[1] / result[0] - 1 for result in results)
    print("| unrouted (ms) | RoutedAgent (ms) | overhead |")
    print("|---:|---:|---:|")
    print(f"| {unrouted * 1e3:.1f} | {routed * 1e3:.1f} | {overhead:+.1%} |")


if __name__ == "__main__":
    main()
