"""What a RoutedAgent adds to one turn with a large session state on ADK's SqliteSessionService.

One user turn, no failover: an ``LlmAgent`` (a scripted model that answers
at once, its instruction reading one small state key) run on its own, and
the same agent routed by a ``RoutedAgent`` (a plain router over it and a
fallback that never runs). The session holds about 5.7 MB of state (as JSON): 58
values of about 100 kB each, every one a list of 100 dicts of text and
numbers, as an agent's notes or retrieved documents would be. The session
lives in ``SqliteSessionService`` on a temporary file, so each turn loads it
and stores the turn's events, as in production.

Each run times ``--turns`` turns of each kind, alternating (each kind first
every other turn, after a garbage collection), on two clocks:
wall-clock, and the process's CPU time (every thread's, which other
processes' load on a shared machine disturbs far less), and takes each
kind's median; the script makes ``--runs`` runs and reports the median of
those medians and the median of the runs' routed overheads. Run ``python benchmarks/routed_agent.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


async def one_turn(runner: Runner, session_id: str) -> tuple[float, float]:
    """One turn's wall-clock and CPU seconds (the process's, every thread: aiosqlite runs in one)."""
    message = types.UserContent("Hi")
    started, cpu = time.perf_counter(), time.process_time()
    async for _ in runner.run_async(user_id="user", session_id=session_id, new_message=message):
        pass
    return time.perf_counter() - started, time.process_time() - cpu


async def one_run(turns: int, folder: Path) -> dict[tuple[str, str], float]:
    """The median turn in seconds, by kind (unrouted, routed) and clock (wall, cpu)."""
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
    times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in runners}
    kinds = list(runners)
    for _ in range(turns):
        kinds.reverse()  # Each kind goes first every other turn.
        for kind in kinds:
            gc.collect()
            times[kind].append(await one_turn(runners[kind], sessions[kind]))
    return {
        (kind, clock): statistics.median(turn[index] for turn in turns_of_kind)
        for kind, turns_of_kind in times.items()
        for index, clock in enumerate(("wall", "cpu"))
    }


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
            result = asyncio.run(one_run(arguments.turns, Path(folder)))
        results.append(result)
        print(
            f"run {run + 1}: wall unrouted {result['unrouted', 'wall'] * 1e3:.1f} ms, "
            f"routed {result['routed', 'wall'] * 1e3:.1f} ms; CPU unrouted "
            f"{result['unrouted', 'cpu'] * 1e3:.1f} ms, routed {result['routed', 'cpu'] * 1e3:.1f} ms"
        )
    print("| clock | unrouted (ms) | RoutedAgent (ms) | overhead |")
    print("|---|---:|---:|---:|")
    for clock in ("wall", "cpu"):
        unrouted = statistics.median(result["unrouted", clock] for result in results)
        routed = statistics.median(result["routed", clock] for result in results)
        overhead = statistics.median(
            result["routed", clock] / result["unrouted", clock] - 1 for result in results
        )
        print(f"| {clock} | {unrouted * 1e3:.1f} | {routed * 1e3:.1f} | {overhead:+.1%} |")


if __name__ == "__main__":
    main()
